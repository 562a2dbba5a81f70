"""The bad-submission matrix: hostile and broken submissions graded by the real `nbgrader autograde`.

One temporary course with the repository's nbgrader_config.py (plus a 10 s per-cell timeout, so that the
infinite loop costs little) and one assignment, 01_recurrent_cell (8 autograded points in five test cells,
2 points graded by hand). Every student (tests/bad_submissions.py) hands in an edited copy of the released
notebook; the whole
class is graded by ONE `nbgrader autograde` run, and the scores are read per test cell from the sqlite
gradebook and per student from `nbgrader export`. Expected scores come from the points metadata of the
source notebook and from which learner functions each test cell uses (Assignment.expected_cells of
tests/exercise_model.py): a test cell scores its points unless it uses a function the student got wrong.

Late submissions: the course applies no automatic penalty (nbgrader's default LateSubmissionPlugin, penalty
method "none"): lateness is recorded in the gradebook (seconds late, shown in the formgrader and the export's
timestamp) and the instructor decides. The test checks that the lateness is recorded and the score unchanged.
"""

import csv
import hashlib
import json
import re
import shutil
import sqlite3
from pathlib import Path

import nbformat
import pytest
from bad_submissions import (
    BLANK,
    BROKEN_FILES,
    DUE,
    EVERYONE,
    FAKE,
    FORGED,
    KILLER,
    LATE,
    NBGRADER,
    ON_TIME,
    SLEEP,
    STUDENTS,
    TIMEOUT,
    TOTAL,
    A,
    answered,
    append_to,
    cells_by_id,
    expected,
    os_exit_in,
    released,
    submit,
)
from conftest import REPO as ROOT
from conftest import SOURCE, needs_sandbox, run
from nbgrader.api import Gradebook, MissingEntry

pytestmark = [pytest.mark.nbgrader, needs_sandbox]
@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("matrix")
    shutil.copy(ROOT / "nbgrader_config.py", root)
    with open(root / "nbgrader_config.py", "a") as config:
        config.write(f"\nc.ExecutePreprocessor.timeout = {TIMEOUT}  # the test course only\n")
    shutil.copytree(SOURCE / A.name, root / "solutions" / A.name)
    run(NBGRADER, "db", "assignment", "add", A.name, f"--duedate={DUE}", cwd=root)
    run(NBGRADER, "generate_assignment", A.name, cwd=root)
    return root


def scores(course: Path, students) -> dict[str, dict[str, tuple] | None]:
    """student -> {cell: (score, max_score, needs_manual_grade)} from the gradebook (None: never graded)."""
    out = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for student in students:
            try:
                nb = gb.find_submission_notebook(A.path.stem, A.name, student)
            except MissingEntry:
                out[student] = None
                continue
            out[student] = {g.name: (g.score, g.max_score, g.needs_manual_grade) for g in nb.grades}
    return out


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def row_counts(course: Path) -> dict[str, int]:
    with sqlite3.connect(course / "gradebook.db") as db:
        return {t: db.execute(f"select count(*) from {t}").fetchone()[0]
                for t in ("submitted_assignment", "submitted_notebook", "grade", "comment")}  # fmt: skip




@pytest.fixture(scope="module")
def graded(course) -> dict:
    """The roster imported, every submission handed in, ONE `nbgrader autograde`, gradebook read, export."""
    roster = course / "students.csv"
    roster.write_text("id,first_name,last_name,email\n" + "".join(f"{s},{s},Student,\n" for s in EVERYONE))
    run(NBGRADER, "db", "student", "import", roster, cwd=course)
    for student, (make, _) in STUDENTS.items():
        stamp = LATE if student == "late" else ON_TIME
        submit(course, student, make(answered(released(course))), timestamp=stamp)
    submit(course, BLANK, released(course))
    submit(course, KILLER, append_to(answered(released(course)), "sigmoid", os_exit_in("sigmoid")))
    submit(course, "renamed", answered(released(course)), name="my_answers.ipynb")
    submit(course, "empty_folder")
    (submit(course, "invalid_json") / A.notebook_name).write_text('{"cells": [ this is not JSON')
    before = digest(course / "submitted")
    log = run(NBGRADER, "autograde", A.name, cwd=course, check=False)
    run(NBGRADER, "export", cwd=course)
    with open(course / "grades.csv", newline="") as f:
        rows = {r["student_id"]: r for r in csv.DictReader(f)}
    return {"log": log, "scores": scores(course, EVERYONE), "rows": rows, "submitted": before}


def autograded(course: Path, student: str) -> dict[str, nbformat.NotebookNode]:
    nb = nbformat.read(course / "autograded" / student / A.name / A.notebook_name, as_version=4)
    return cells_by_id(nb)


def test_each_student_scores_the_points_of_the_test_cells_that_pass(graded):
    """Cases 1-13, 16, 18 and correct/blank: per test cell in the gradebook, per student in the CSV.

    1 edited locked test cells run as shipped; 3 test cells turned into markdown are restored as code and
    run; 6 `while True: pass` before rnn_forward's definition: that cell is interrupted after the timeout,
    the tests of rnn_forward fail, the rest is graded; 7 a 3 s cell within the 10 s timeout: full marks;
    8 tracebacks hidden (showtraceback, custom exception handler, sys.excepthook): failing tests still 0;
    9 np.allclose, np.testing.assert_allclose, torch.allclose … patched to always agree: a wrong answer still
    fails (rnnlib.checks captured the real helpers); 9b rnnlib.checks.assert_close, rnnlib.numpy's and torch's
    sigmoid replaced, or the name `checks` rebound, in an answer cell: the grader puts the imports back
    before each test cell, a wrong function still scores 0; 10 an ndarray subclass or an object whose ==
    always answers True: 0; 11 outputs claiming "All tests passed" are wiped and the cells run; 12 a warning
    and text on stderr in a test cell: the same score as without; 13 sys.exit() or os._exit(0) inside
    rnn_forward: its tests 0, the rest graded (13b: see test_a_dead_kernel_costs_only_its_cell);
    18 rnn_cell_forward calling rnnlib's reference: no credit for the cells that check it (the hidden tests
    forbid the reference).
    """
    broken_by = {student: broken for student, (_, broken) in STUDENTS.items()}
    for student, broken in [*broken_by.items(), (BLANK, A.broken_by(set(A.binds)))]:
        want = expected(broken)
        got = {gid: graded["scores"][student][gid][0] for gid in A.tests}
        assert got == want, (student, got, want)
        row = graded["rows"][student]
        assert (float(row["score"]), float(row["max_score"])) == (sum(want.values()), TOTAL), (student, row)
    assert sum(expected(STUDENTS["hide_errors"][1]).values()) == 3.0  # the failing cells are really there
    assert "The grader's snapshot failed" not in graded["log"]


def test_locked_cells_run_as_shipped_and_fake_outputs_are_wiped(graded, course):
    """Cases 1, 3, 11: what was executed is the released test cell, and no shipped output survives. Case 11
    also prints a claim of success over a line of its own (the grader applies carriage returns when it
    merges a cell's prints): the claim stays in that answer cell and earns nothing."""
    source = cells_by_id(A.nb)
    for student, gid in [("edit_locked", "test_rnn_forward"), ("edit_locked", "test_rnn_cell_forward"),
                         ("to_markdown", "test_tanh"), ("to_markdown", "test_rnn_forward")]:  # fmt: skip
        cell = autograded(course, student)[gid]
        assert (cell.cell_type, cell.source) == ("code", source[gid].source), (student, gid)
        assert cell.outputs, (student, gid, "not executed")
    cells = autograded(course, "fake_output")
    assert FAKE not in json.dumps([c.get("outputs") for c in cells.values()])
    errors = [o.ename for o in cells["test_rnn_forward"].outputs if o.output_type == "error"]
    assert errors == ["AssertionError"]
    # the forged line, printed over "FAILED" in the answer cell, reads as intended there and nowhere else;
    # the test cell's points stay 0 (the expected scores above)
    printed = {gid: "".join(o.get("text", "") for o in c.get("outputs", [])) for gid, c in cells.items()}
    assert printed["rnn_forward"] == FORGED + "\n"
    assert [gid for gid, text in printed.items() if FORGED in text] == ["rnn_forward"]
    assert graded["scores"]["fake_output"]["test_rnn_forward"][0] == 0


def test_deleted_cells_are_restored_and_graded(graded, course):
    """Case 2: a deleted test cell is put back from the gradebook and runs (full marks for a right answer,
    no manual grading); a deleted written answer comes back blank with nbgrader's note that it was missing,
    0 points, in the grader's queue like every written answer."""
    got = graded["scores"]["delete_test"]
    assert got["test_rnn_cell_forward"] == (3.0, 3.0, False)
    restored = autograded(course, "delete_test")["test_rnn_cell_forward"]
    assert "was missing from the submission" in restored.source and restored.outputs
    assert graded["scores"]["delete_answer"]["why_tanh"][:2] == (0.0, 2.0)
    answer = autograded(course, "delete_answer")["why_tanh"]
    assert "was missing from the submission" in answer.source and "YOUR ANSWER HERE" in answer.source
    assert "Missing grade cell why_tanh" in graded["log"]


def test_raised_points_and_duplicated_test_cells_give_no_extra_credit(graded):
    """Cases 4 and 5: the gradebook's points are used, a duplicated test cell counts once, batch goes on."""
    for student in ("raise_points", "duplicate_test"):
        got = graded["scores"][student]
        assert {g: got[g][:2] for g in A.tests} == {g: (p, p) for g, p in A.tests.items()}, student
        row = graded["rows"][student]
        assert (float(row["score"]), float(row["max_score"])) == (sum(A.tests.values()), TOTAL), student
    assert "Attribute 'points' for cell test_rnn_cell_forward has changed" in graded["log"]
    assert "Cell with id 'test_rnn_cell_forward' exists multiple times" in graded["log"]


def test_infinite_loop_is_interrupted_after_the_timeout(graded, course):
    """Case 6: the looping cell ends with CellTimeoutError; the tests that need its function fail (expected
    scores checked above), and the cells after it still ran."""
    cells = autograded(course, "infinite_loop")
    assert "CellTimeoutError" in [o.get("ename") for o in cells["rnn_forward"].outputs]
    assert "NameError" in [o.get("ename") for o in cells["test_rnn_forward"].outputs]
    assert graded["scores"]["slow"]["test_rnn_forward"][0] == A.tests["test_rnn_forward"]  # case 7


def test_a_cell_printing_as_it_goes_has_one_output(graded, course):
    """Case 7's cell prints once a second with flush: three messages from the kernel, one stdout output in
    the autograded notebook, so that reruns and parallel gradings give the same feedback."""
    outputs = autograded(course, "slow")["rnn_forward"].outputs
    want = "".join(f"second {i}\n" for i in range(SLEEP))
    assert [(o.output_type, o.get("name"), o.get("text")) for o in outputs] == [("stream", "stdout", want)]


def test_stderr_warning_does_not_cost_points(graded, course):
    """Case 12: the learner's function warns on stderr while the test calls it; the cell keeps its points.
    The warning stays in the sandbox (the test cell ran in the trusted kernel): no stderr in its outputs."""
    outputs = autograded(course, "warning")["test_rnn_forward"].outputs
    assert not [o for o in outputs if o.output_type == "error"], outputs
    assert graded["scores"]["warning"]["test_rnn_forward"][0] == A.tests["test_rnn_forward"]


def test_a_dead_kernel_costs_only_its_cell(graded, course):
    """Case 13b: os._exit(0) inside rnn_forward kills the kernel in test_rnn_forward. That cell gets a
    DeadKernelError output (0 points, checked with the scores above), a log line says so, a fresh kernel
    replays the cells before it silently, and the notebook goes on: the demo cell after it runs (it needs
    the replayed imports)."""
    died = r"The sandbox's kernel died in cell \d+: its tests score 0; a fresh sandbox \(1 of at most 3\)"
    assert re.search(died, graded["log"])
    cells = autograded(course, "os_exit")
    assert "DeadKernelError" in [o.get("ename") for o in cells["test_rnn_forward"].outputs]
    (demo,) = [c for c in cells.values() if c.source.startswith("plain = squashed")]
    assert demo.outputs and not [o for o in demo.outputs if o.output_type == "error"], demo.outputs
    assert graded["scores"]["os_exit"]["test_tanh"][0] == A.tests["test_tanh"]


def test_a_kernel_that_keeps_dying_is_given_up_after_three_restarts(graded):
    """Case 13b, bounded: every test cell kills the sandbox; after 3 fresh sandboxes the grader gives up on
    the rest of that notebook (its cells score 0, a log line says so), the notebook is still graded (a score,
    never a lost submission) and the batch goes on."""
    log = graded["log"]
    assert "a fresh sandbox (3 of at most 3)" in log and "The sandbox died 4 times" in log
    assert f"There was an error processing assignment '{A.name}' for student '{KILLER}'" not in log
    row = graded["rows"][KILLER]
    assert (float(row["score"]), float(row["max_score"])) == (0.0, TOTAL), row
    assert all(score == 0.0 for score, *_ in graded["scores"][KILLER].values())


def test_a_broken_file_fails_that_student_only(graded):
    """Case 17, and a crash while grading one student (section 3): a renamed notebook, an empty folder and a
    file that is not notebook JSON: 0 in the export, a log line naming the student or the path. Everyone
    else is graded (checked in the other tests: same batch)."""
    log = graded["log"]
    for student in ("renamed", "invalid_json"):
        assert f"There was an error processing assignment '{A.name}' for student '{student}'" in log
    assert re.search(rf"Skipping unknown notebook: .*/renamed/{A.name}/my_answers\.ipynb", log)
    assert re.search(r"No notebooks were matched by '.*empty_folder", log)
    for student in BROKEN_FILES:
        row = graded["rows"][student]
        assert (float(row["score"]), float(row["max_score"])) == (0.0, TOTAL), row
        cells = graded["scores"][student]
        assert cells is None or all(score == 0 for score, _, _ in cells.values()), (student, cells)


def test_late_submission_is_recorded_without_penalty(graded, course):
    """Case 16: 26.5 hours after the due date. The course's policy is nbgrader's default (no automatic
    penalty): the lateness is in the gradebook and the log, the score is the score."""
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        late = gb.find_submission(A.name, "late")
        on_time = gb.find_submission(A.name, "correct")
        assert late.total_seconds_late == 26.5 * 3600 and on_time.total_seconds_late == 0
    assert re.search(r"for late> is 95400(\.0)? seconds late", graded["log"])
    row = graded["rows"]["late"]
    assert float(row["late_submission_penalty"]) == 0 and float(row["score"]) == sum(A.tests.values())


def test_export_totals_are_the_sums_of_the_cell_scores(graded):
    """Section 3: every student on the roster is in grades.csv, each total the sum of the gradebook cells."""
    assert set(graded["rows"]) == set(EVERYONE)
    for student, cells in graded["scores"].items():
        total = sum(score for score, _, _ in cells.values()) if cells else 0.0
        assert float(graded["rows"][student]["score"]) == total, student


def test_regrading_is_idempotent(graded, course):
    """Section 3: `nbgrader autograde` again, without and with --force: same scores, no new rows, the
    submissions untouched."""
    counts = row_counts(course)
    run(NBGRADER, "autograde", A.name, cwd=course, check=False)
    run(NBGRADER, "autograde", A.name, "--force", "--student=*_test", cwd=course)
    assert scores(course, EVERYONE) == graded["scores"]
    assert row_counts(course) == counts
    assert digest(course / "submitted") == graded["submitted"]
