"""The nbgrader exercises, end to end, with the real nbgrader commands.

Assignments are discovered from solutions/*/ (one notebook each). For every assignment: the solution runs
under nbval, exercises/ is what `nbgrader generate_assignment` makes of it, the released notebook holds no
solution code and no hidden test, the header states the total the points add up to, an untouched release
autogrades to 0 and the solution to every autograded point. For two assignments a whole class in a temporary
course directory (real sqlite gradebook): students added, submissions collected into
submitted/<student>/<assignment>/, `nbgrader autograde`, `validate`, `generate_feedback`, `export`, the
exchange (release, fetch, submit, collect). Expected scores come from the points metadata of
the source notebook and from which learner functions each test cell uses: a correct submission gets every
autograded point, a blank one 0, one with a single wrong gate loses the test cells that (directly or through
other functions) use it, a half-finished one loses the cells of the functions it left out, a tamperer's edited
test cells are restored and its deleted one is put back. Written answers score 0 until graded by hand.
Autograde timing lives in bench/autograde_time.py.
"""

import csv
import getpass
import html
import json
import re
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest
from conftest import RELEASE, REPO, SOURCE, nbgrader, needs_sandbox, run
from exercise_model import (
    ASSIGNMENTS,
    DELIMITERS,
    LOADED,
    Assignment,
    perturbing_wrapper,
    regions,
    strip_delimiters,
)
from nbgrader.api import Gradebook

pytestmark = pytest.mark.nbgrader
CLASS = ("03_lstm_gates", "04_gru_gates")  # the assignments graded for a whole simulated class
STUDENTS = ("correct", "blank", "one_wrong", "partial", "tamper")



# --- each assignment on its own -----------------------------------------------------------------------------


def test_assignments_are_discovered():
    assert {"01_recurrent_cell", "03_lstm_gates", "04_gru_gates"} <= set(ASSIGNMENTS)
    assert set(CLASS) <= set(ASSIGNMENTS)
    for a in LOADED.values():
        assert a.tests and a.manual, f"{a.name}: no autograded tests or no written answer"
        assert a.functions, f"{a.name}: no function to write"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_header_states_the_total_of_the_points(name):
    """The header cell's "**N points**: A autograded" equals the sum of the cells' points metadata."""
    a = LOADED[name]
    header = a.nb.cells[0]
    assert header.cell_type == "markdown" and header.source.startswith("# "), f"{name}: no title cell first"
    match = re.search(r"\*\*(\d+(?:\.\d+)?) points\*\*: (\d+(?:\.\d+)?) autograded", header.source)
    assert match, f"{name}: the header does not say '**N points**: A autograded'"
    auto, manual = sum(a.tests.values()), sum(a.manual.values())
    assert (float(match[1]), float(match[2])) == (auto + manual, auto), (match[0], auto, manual)
    imports = a.nb.cells[1]
    locked = imports.metadata["nbgrader"].get("locked") and not imports.metadata["nbgrader"].get("solution")
    assert imports.cell_type == "code" and locked and "import" in imports.source, f"{name}: no locked imports"


@pytest.fixture(scope="module")
def nbval(tmp_path_factory) -> dict[str, list]:
    """`pytest --nbval-lax` on every solution notebook, in one run: notebook -> [(cell, failure or None)]."""
    report = tmp_path_factory.mktemp("nbval") / "report.xml"
    paths = [LOADED[name].path.relative_to(REPO) for name in ASSIGNMENTS]
    run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
        f"--junitxml={report}", *paths, cwd=REPO, check=False)  # fmt: skip
    results: dict[str, list] = {}
    for case in ET.parse(report).iter("testcase"):
        failure = case.find("failure") if case.find("failure") is not None else case.find("error")
        results.setdefault(case.get("classname"), []).append(
            (case.get("name"), None if failure is None else failure.get("message", "") + (failure.text or ""))
        )
    return results


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_solution_runs_under_nbval(nbval, name):
    """nbval --nbval-lax: every code cell of the solution notebook runs without error."""
    a = LOADED[name]
    cells = nbval.get(".".join([*a.path.relative_to(REPO).parent.parts, a.path.name]), [])
    assert len(cells) == sum(c.cell_type == "code" for c in a.nb.cells), (
        f"{name}: nbval ran {len(cells)} cells"
    )
    failed = [(cell, message[-1500:]) for cell, message in cells if message is not None]
    assert not failed, failed


def normalised(path: Path) -> dict:
    """What a learner gets from a notebook: cell types, sources, outputs and nbgrader metadata, kernelspec."""
    nb = nbformat.read(path, as_version=4)
    return {
        "kernelspec": nb.metadata.get("kernelspec"),
        "cells": [
            {
                "type": c.cell_type,
                "source": c.source,
                "nbgrader": c.metadata.get("nbgrader"),
                "outputs": c.get("outputs"),
                "execution_count": c.get("execution_count"),
            }
            for c in nb.cells
        ],
    }


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A fresh course directory with the repository's config and solutions/, every assignment generated."""
    root = tmp_path_factory.mktemp("course")
    shutil.copy(REPO / "nbgrader_config.py", root)
    shutil.copytree(SOURCE, root / "solutions", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    nbgrader(
        "generate_assignment", "*", cwd=root
    )  # every folder of solutions/, as the instructors chapter says
    return root


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_exercise_is_generated_from_the_solution(course, name):
    """exercises/ holds exactly what nbgrader generates now: same files, same notebooks."""
    fresh, committed = course / "exercises" / name, RELEASE / name
    assert committed.is_dir(), f"exercises/{name} is missing: run `make exercises`"
    files = sorted(p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(committed) for p in committed.rglob("*") if p.is_file())
    for rel in files:
        if rel.suffix == ".ipynb":
            assert normalised(committed / rel) == normalised(fresh / rel), (
                f"exercises/{name}/{rel} is stale: run `make exercises` and commit it"
            )
        else:
            assert (committed / rel).read_bytes() == (fresh / rel).read_bytes()
    released = nbformat.read(committed / LOADED[name].notebook_name, as_version=4)
    assert all(not c.get("outputs") for c in released.cells), f"exercises/{name}: outputs were released"


def strings(node) -> list[str]:
    """Every string in a JSON document (cell sources, metadata, outputs)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in strings(value)]
    return []


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_release_has_no_solution_or_hidden_test(name):
    """No line of a solution or of a hidden test, and no nbgrader delimiter, is in the released JSON."""
    a = LOADED[name]
    released_text = "\n".join(strings(json.loads((RELEASE / name / a.notebook_name).read_text())))
    released_lines = {line.strip() for line in released_text.splitlines()}
    assert not DELIMITERS.search(released_text)
    hidden = [r for cell in a.nb.cells for r in regions(cell.source, "HIDDEN TESTS")]
    assert hidden, f"{name}: no hidden tests in the source"
    secret_lines = {
        line.strip()
        for cell in a.nb.cells
        for kind in ("SOLUTION", "HIDDEN TESTS")
        for region in regions(cell.source, kind)
        for line in region.splitlines()
    }
    # lines that also appear outside the secret regions (a blank line, `return h`) give nothing away
    public = {
        line.strip()
        for cell in a.nb.cells
        for line in re.sub(
            r"BEGIN (SOLUTION|HIDDEN TESTS).*?END \1", "", cell.source, flags=re.S
        ).splitlines()
    }
    secret = {line for line in secret_lines - public if len(line) > 3 and not line.startswith("#")}
    assert secret, f"{name}: no solution text found in the source"
    leaked = sorted(secret & released_lines)
    assert not leaked, f"{name}: released notebook contains solution or hidden-test text: {leaked[:5]}"
    for block in hidden:  # and no hidden block as a whole, whatever its lines share with public code
        assert strip_delimiters(block).strip() not in released_text


# --- a class: students, autograde, export -------------------------------------------------------------------


def one_wrong_function(a: Assignment) -> str:
    """The first function (a gate) whose mistake fails some test cells but not all of them."""
    total = sum(a.tests.values())
    return next(f for f in a.functions if 0 < sum(a.expected_cells({f}).values()) < total)


def submission(course: Path, a: Assignment, student: str) -> tuple[nbformat.NotebookNode, set[str]]:
    """The released notebook filled in like ``student`` would, and the learner names it leaves broken."""
    nb = nbformat.read(course / "exercises" / a.name / a.notebook_name, as_version=4)
    cells = {cell.metadata["nbgrader"]["grade_id"]: cell for cell in nb.cells if "nbgrader" in cell.metadata}
    answered = {
        "correct": list(a.answers),
        "blank": [],
        "partial": list(a.answers)[: len(a.answers) // 2],
    }.get(student, list(a.answers))
    for gid in answered:
        cells[gid].source = a.answers[gid]
    broken = a.broken_by(set(a.binds) - set(answered))
    if student in ("one_wrong", "tamper"):
        function = one_wrong_function(a)
        (gid,) = [g for g, names in a.binds.items() if function in names]
        cells[gid].source += perturbing_wrapper(function)
        broken = {function}
    if student == "tamper":  # edits the failing test cells to `pass` and deletes a passing one
        for gid, points in a.expected_cells(broken).items():
            if points == 0:
                cells[gid].source = "pass"
        deleted = [gid for gid, points in a.expected_cells(broken).items() if points > 0][-1]
        nb.cells.remove(cells[deleted])
    return nb, broken


def submissions() -> list[tuple[str, str]]:
    """(student, assignment): all hand in the CLASS assignments; of the others, a correct and a blank one."""
    return [(s, a) for s in STUDENTS for a in ASSIGNMENTS if a in CLASS or s in ("correct", "blank")]


@pytest.fixture(scope="module")
def graded(course) -> dict:
    """Students added, submissions collected, one `nbgrader autograde` for everything, grades exported."""
    first, *others = STUDENTS  # both ways the instructors chapter gives: one by one, and from a CSV file
    nbgrader(
        "db", "student", "add", first, "--first-name", first.title(), "--last-name", "Student", cwd=course
    )
    roster = course / "students.csv"
    roster.write_text(
        "id,first_name,last_name,email\n" + "".join(f"{s},{s.title()},Student,\n" for s in others)
    )
    nbgrader("db", "student", "import", roster, cwd=course)
    expected = {}
    for student, name in submissions():
        a = LOADED[name]
        nb, broken = submission(course, a, student)
        target = course / "submitted" / student / name
        target.mkdir(parents=True)
        nbformat.write(nb, target / a.notebook_name)
        expected[student, name] = a.expected_cells(broken)
    log = nbgrader("autograde", "*", cwd=course)
    nbgrader("export", cwd=course)
    with open(course / "grades.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = {(r["student_id"], r["assignment"]): r for r in reader}
        columns = reader.fieldnames
    cells = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for student, name in submissions():
            notebook = gb.find_submission_notebook(LOADED[name].path.stem, name, student)
            cells[student, name] = {
                g.name: (g.score, g.auto_score, g.needs_manual_grade) for g in notebook.grades
            }
    return {"expected": expected, "rows": rows, "columns": columns, "cells": cells, "log": log}


@needs_sandbox
def test_autograde_reports_no_grader_error(graded):
    problems = [line for line in graded["log"].splitlines() if re.search(r"\| (ERROR|CRITICAL)\]", line)]
    assert not problems, problems


@needs_sandbox
@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_solution_gets_full_marks_and_untouched_exercise_zero(graded, name):
    a = LOADED[name]
    auto, manual = sum(a.tests.values()), sum(a.manual.values())
    for student, points in [("correct", auto), ("blank", 0.0)]:
        row = graded["rows"][student, name]
        assert float(row["max_score"]) == auto + manual, row
        assert float(row["score"]) == points, (student, row, graded["cells"][student, name])
    # every test cell is graded and all-or-nothing; written answers wait for a person unless left blank
    for gid, points in a.tests.items():
        assert graded["cells"]["correct", name][gid][:2] == (points, points)
        assert graded["cells"]["blank", name][gid][:2] == (0.0, 0.0)
    for gid in a.manual:
        assert graded["cells"]["correct", name][gid][2] is True, "an answered written question needs a grader"
        assert graded["cells"]["blank", name][gid] == (0.0, 0.0, False), (
            "an untouched answer scores 0 at once"
        )


@needs_sandbox
@pytest.mark.parametrize("name", CLASS)
def test_class_scores_equal_the_points_of_the_cells_that_pass(graded, name):
    """Per test cell in the gradebook and per student in grades.csv, for every simulated student.

    The tamperer's edited test cells are restored from the gradebook (so they fail as they should) and the
    test cell it deleted is put back (grader.grading.RestoreDeletedCells): it gains nothing.
    """
    a = LOADED[name]
    auto = sum(a.tests.values())
    for student in STUDENTS:
        expected = graded["expected"][student, name]
        got = {gid: graded["cells"][student, name][gid][0] for gid in a.tests}
        assert got == expected, (student, name)
        assert float(graded["rows"][student, name]["score"]) == sum(expected.values()), (student, name)
    totals = {s: sum(graded["expected"][s, name].values()) for s in STUDENTS}
    assert totals["correct"] == auto and totals["blank"] == 0  # the students span the range
    assert 0 < totals["tamper"] == totals["one_wrong"] < auto and 0 < totals["partial"] < auto
    assert one_wrong_function(a).endswith("_gate"), "the one-mistake student should get one gate wrong"


@needs_sandbox
def test_export_lists_every_student_and_assignment(graded):
    """grades.csv: a row per student and assignment (0 where nothing came in), with the documented columns."""
    assert set(graded["rows"]) == {(s, a) for s in STUDENTS for a in ASSIGNMENTS}
    for (student, name), row in graded["rows"].items():
        if (student, name) not in submissions():
            assert float(row["score"]) == 0 and not row["timestamp"], row
    documented = re.search(
        r"columns `(assignment, .*?)`", (REPO / "book" / "instructors.md").read_text(), re.S
    )
    assert documented and graded["columns"] == re.split(r",\s+", documented[1])


def feedback_text(course: Path, student: str, a: Assignment) -> str:
    """The text of a learner's feedback page, without HTML tags."""
    page = (course / "feedback" / student / a.name / f"{a.path.stem}.html").read_text()
    return html.unescape(re.sub(r"<[^>]+>", "", page))


@needs_sandbox
def test_feedback_shows_the_hidden_tests(course, graded, tmp_path):
    """What a learner sees after `nbgrader generate_feedback` (the instructors chapter documents both cases).

    By default: every hidden test, with its delimiters, and the message of each failing check. With
    ClearHiddenTests added to the feedback's preprocessors: no hidden test in the cells, but the traceback
    of a failing cell still quotes the lines around the failure, hidden ones included.
    """
    student, a = "one_wrong", LOADED[CLASS[0]]
    expected = graded["expected"][student, a.name]
    failing = [gid for gid, points in expected.items() if points == 0]
    passing = [gid for gid, points in expected.items() if points > 0]
    hidden = {
        cell.metadata["nbgrader"]["grade_id"]: strip_delimiters(
            regions(cell.source, "HIDDEN TESTS")[0]
        ).strip()
        for cell in a.nb.cells
        if regions(cell.source, "HIDDEN TESTS")
    }
    hidden_first_lines = {gid: block.splitlines()[0].strip() for gid, block in hidden.items()}

    nbgrader("generate_feedback", a.name, "--student", student, cwd=course)
    text = feedback_text(course, student, a)
    total = sum(a.tests.values()) + sum(a.manual.values())
    assert f"Score: {sum(expected.values()):.1f} / {total:.1f}" in text
    assert "BEGIN HIDDEN TESTS" in text
    assert all(hidden_first_lines[gid] in text for gid in passing + failing)
    wrong = one_wrong_function(a)
    assert re.search(rf"AssertionError: {wrong}: [^\n]*check", text), (
        "the diagnostic message is in the feedback"
    )

    private = tmp_path / "course"
    shutil.copytree(course, private, ignore=shutil.ignore_patterns("feedback"))
    with open(private / "nbgrader_config.py", "a") as config:
        config.write(CLEAR_HIDDEN_FEEDBACK)
    nbgrader("generate_feedback", a.name, "--student", student, cwd=private)
    text = feedback_text(private, student, a)
    assert f"Score: {sum(expected.values()):.1f} / {total:.1f}" in text
    assert not any(hidden_first_lines[gid] in text for gid in passing)
    assert any(hidden_first_lines[gid] in text for gid in failing), "tracebacks no longer quote hidden lines"


CLEAR_HIDDEN_FEEDBACK = """
from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import ClearHiddenTests, GetGrades
c.GenerateFeedback.preprocessors = [GetGrades, ClearHiddenTests, CSSHTMLHeaderPreprocessor]
"""


def test_validate_fails_an_untouched_exercise_and_passes_a_solution(course, tmp_path):
    """`nbgrader validate` (the Validate button): the failing cells of an untouched exercise are listed."""
    for name in CLASS:
        a = LOADED[name]
        shutil.copy(RELEASE / name / a.notebook_name, tmp_path / f"exercise_{a.notebook_name}")
        shutil.copy(a.path, tmp_path / f"solution_{a.notebook_name}")
    out = nbgrader("validate", *sorted(p.name for p in tmp_path.glob("*.ipynb")), cwd=tmp_path)
    reports = dict(re.findall(r"Validating '.*?(\w+)\.ipynb'\n(.*?)(?=\[ValidateApp|\Z)", out, flags=re.S))
    for name in CLASS:
        a = LOADED[name]
        assert "Success! Your notebook passes all the tests." in reports[f"solution_{a.path.stem}"], reports
        failed = reports[f"exercise_{a.path.stem}"]
        needs_answers = [gid for gid in a.tests if a.depends_on(gid)]
        assert f"VALIDATION FAILED ON {len(needs_answers) + len(a.manual)} CELL(S)!" in failed, failed[:500]
        assert failed.count("NotImplementedError") >= len(needs_answers)


def test_exchange_release_fetch_submit_collect(course, tmp_path):
    """The JupyterHub route, on one machine with one user: nbgrader's exchange in a temporary directory."""
    hub = tmp_path / "course"
    shutil.copytree(course, hub, ignore=shutil.ignore_patterns("submitted", "autograded", "feedback"))
    exchange, home = tmp_path / "exchange", tmp_path / "home"
    exchange.mkdir(mode=0o777)
    home.mkdir()
    root = f"--Exchange.root={exchange}"
    a = LOADED[CLASS[0]]
    nbgrader("release_assignment", a.name, root, cwd=hub)
    nbgrader("fetch_assignment", a.name, "--course", "rnn-course", root, cwd=home)
    fetched = home / a.name / a.notebook_name
    assert fetched.read_bytes() == (course / "exercises" / a.name / a.notebook_name).read_bytes()
    nbgrader("submit", a.name, "--course", "rnn-course", root, cwd=home)
    nbgrader("collect", a.name, root, cwd=hub)
    collected = hub / "submitted" / getpass.getuser() / a.name / a.notebook_name
    assert collected.read_bytes() == fetched.read_bytes()
