"""What grader.grading reads from an assignment's source notebook, and its metadata check, without a kernel.

- ``Plan``: which locked cells run in the trusted kernel only (helpers), and which of those are demos (cells
  whose names nothing else reads, run once per grading process), for the course's exercises and for
  hand-made notebooks whose answer is known by construction.
- ``CheckCellMetadataCompiled`` against nbgrader's own ``CheckCellMetadata``: the same verdict and error
  type on sound and corrupted metadata.
- ``grader.sandbox.font_cache``: matplotlib's font list that every sandbox gets a copy of names fonts of the
  system and of matplotlib only.
- ``grader.sandbox.sweep``: it removes what killed gradings left, never the folder of a grading that is being
  set up in parallel.
"""

import copy
import fcntl
import json
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import nbformat
import pytest
from conftest import SOURCE
from nbformat.v4 import new_code_cell, new_notebook
from nbgrader.preprocessors import CheckCellMetadata

from grader import sandbox
from grader.grading import CheckCellMetadataCompiled, Plan


def cell(source: str, grade_id: str | None = None, *, solution=False, grade=False, locked=True, points=1):
    meta = {"grade": grade, "solution": solution, "locked": locked and not solution, "schema_version": 3}
    if grade_id is not None:
        meta["grade_id"] = grade_id
    if grade:
        meta["points"] = points
    return new_code_cell(source, metadata={"nbgrader": meta} if grade_id else {})


def plan_of(*cells) -> Plan:
    return Plan(new_notebook(cells=list(cells)))


# Read off the notebooks by hand: the locked cells that use no learner name and that no sandbox cell needs.
EXPECTED = {
    "01_recurrent_cell": ({"times_three_demo"}, {"times_three_demo"}),
    "02_vanishing_gradients": ({"reference_helpers", "repeated_demo"}, {"repeated_demo"}),
    "03_lstm_gates": (set(), set()),
    "04_gru_gates": ({"ewma_demo"}, {"ewma_demo"}),
    "05_lstm_backward": (set(), set()),
    "06_train_and_compare": (set(), set()),
}


@pytest.mark.parametrize("assignment", sorted(EXPECTED))
def test_the_exercises_helpers_and_demos(assignment):
    (path,) = (SOURCE / assignment).glob("*.ipynb")
    plan = Plan(nbformat.read(path, as_version=4))
    helpers, demos = EXPECTED[assignment]
    assert set(plan.helpers) == helpers
    assert set(plan.demos) == demos


def test_a_helper_read_by_a_test_is_no_demo_and_a_cell_the_sandbox_needs_is_no_helper():
    plan = plan_of(
        cell("import numpy as np", "imports"),
        cell("def reference(x):\n    return 2 * x", "helpers"),  # read by the test: a helper, not a demo
        cell("SCALE = 3", "given"),  # read by the answer: runs in the sandbox too
        cell("def double(x):\n    return SCALE * np.asarray(x)", "answer", solution=True),
        cell("assert double(1) == reference(1)", "test", grade=True),
        cell("table = {k: k * k for k in range(3)}\nprint(table)", "demo"),  # nothing reads table
        cell("print(double(2))", "uses_answer"),  # reads a learner name: a sandbox cell
    )
    assert set(plan.helpers) == {"helpers", "demo"}
    assert set(plan.demos) == {"demo"}
    assert plan.learner_names == {"double"}


def test_a_cell_that_calls_a_test_s_function_is_no_demo():
    """A test's function calls the learner's: a cell using it would show each learner's own result."""
    plan = plan_of(
        cell("def double(x):\n    return 2 * x", "answer", solution=True),
        cell("def check(x):\n    assert double(x) == 2 * x\n    return double(x)", "test", grade=True),
        cell("shown = check(3)\nprint(shown)", "calls_the_test"),
    )
    assert set(plan.helpers) == {"calls_the_test"}
    assert plan.demos == {}


def test_a_demo_s_key_changes_with_any_code_run_before_it():
    cells = [cell("import numpy as np", "imports"), cell("shown = np.arange(3)\nprint(shown)", "demo")]
    one, two = plan_of(*cells), plan_of(cell("import numpy as np  # another", "imports"), cells[1])
    assert set(one.demos) == set(two.demos) == {"demo"}
    assert one.demos["demo"] != two.demos["demo"]
    assert one.demos == plan_of(*copy.deepcopy(cells)).demos


def sound() -> nbformat.NotebookNode:
    return new_notebook(cells=[cell("x = 1", "given"), cell("def f(): pass", "answer", solution=True),
                               cell("assert f() is None", "test", grade=True)])  # fmt: skip


def corrupted(change) -> nbformat.NotebookNode:
    nb = sound()
    change(nb.cells)
    return nb


CASES = {
    "sound": sound(),
    "duplicate grade_id": corrupted(lambda cells: cells[1].metadata.nbgrader.update(grade_id="given")),
    "points missing": corrupted(lambda cells: cells[2].metadata.nbgrader.pop("points")),
    "points not a number": corrupted(lambda cells: cells[2].metadata.nbgrader.update(points="many")),
    "grade not a bool": corrupted(lambda cells: cells[2].metadata.nbgrader.update(grade="yes")),
    "grade_id empty": corrupted(lambda cells: cells[0].metadata.nbgrader.update(grade_id="")),
    "schema too old": corrupted(lambda cells: cells[0].metadata.nbgrader.update(schema_version=1)),
    "schema too new": corrupted(lambda cells: cells[0].metadata.nbgrader.update(schema_version=9)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_compiled_metadata_check_agrees_with_nbgrader_s(case):
    def verdict(preprocessor) -> str:
        try:
            preprocessor.preprocess(copy.deepcopy(CASES[case]), {})
        except Exception as error:  # noqa: BLE001 - the verdict is the type of error, whatever it is
            return type(error).__name__
        return "ok"

    expected = verdict(CheckCellMetadata())
    assert (expected == "ok") == (case == "sound")
    assert verdict(CheckCellMetadataCompiled()) == expected


def test_the_sandbox_s_font_list_names_only_system_and_matplotlib_fonts(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(sandbox, "BASE", tmp_path)
    monkeypatch.setattr(sandbox, "FONT_CACHE", tmp_path / "mpl")
    import matplotlib

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / ".fonts").mkdir(parents=True)  # matplotlib lists the fonts of ~/.fonts: one is here
    dejavu = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    shutil.copy(dejavu, tmp_path / "home" / ".fonts" / "Planted.ttf")
    built = sandbox.font_cache()
    assert built == tmp_path / "mpl"
    (listing,) = built.glob("fontlist-*.json")
    fonts = json.loads(listing.read_text())["ttflist"]
    assert fonts, "no font listed"
    assert not [f for f in fonts if "Planted" in f["fname"]]
    # matplotlib names its own fonts relative to its data folder
    assert all(not f["fname"].startswith("/") or f["fname"].startswith(("/usr/", sys.prefix)) for f in fonts)
    assert sandbox.font_cache() == built  # built once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "mpl"]  # no half-built list left


def test_without_a_font_list_the_sandbox_goes_on_as_before(tmp_path, monkeypatch):
    """A list that cannot be built is no error: font_cache() says None and leaves nothing behind."""
    monkeypatch.setattr(sandbox, "BASE", tmp_path)
    monkeypatch.setattr(sandbox, "FONT_CACHE", tmp_path / "mpl")
    monkeypatch.setattr(sandbox.sys, "executable", str(tmp_path / "no-python"))
    assert sandbox.font_cache() is None
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(sandbox, "BASE", tmp_path / "missing")  # not even a place to build it
    monkeypatch.setattr(sandbox, "FONT_CACHE", tmp_path / "missing" / "mpl")
    assert sandbox.font_cache() is None


def test_a_sweep_waits_for_a_folder_being_made_and_removes_only_leftovers(tmp_path, monkeypatch):
    """A grading's private folder is made, then locked (private_folder); the sweep of a grading running in
    parallel must not take it for a leftover in between. That step is held open here by hand."""
    monkeypatch.setattr(sandbox, "BASE", tmp_path)
    killed = [tmp_path / "k-killed", tmp_path / "k-killed.view"]  # a grading killed before its teardown
    for folder in killed:
        folder.mkdir()
    swept: list[str] = []
    with sandbox._sweeping(fcntl.LOCK_SH):
        made = Path(tempfile.mkdtemp(prefix="k-", dir=tmp_path))  # made, not locked yet
        sweeper = threading.Thread(target=lambda: swept.extend(sandbox.sweep()))
        sweeper.start()
        sweeper.join(timeout=1.0)
        assert sweeper.is_alive() and made.exists(), "the sweep did not wait"
        fd = sandbox.lock(made)
    sweeper.join(timeout=60)
    assert swept == ["k-killed"] and made.exists() and not any(f.exists() for f in killed)
    os.close(fd)  # its grading is over: now it is a leftover
    assert sandbox.sweep() == [made.name] and not made.exists()
    folder, fd = sandbox.private_folder()
    try:
        assert folder.stat().st_mode & 0o777 == 0o700 and sandbox.sweep() == [] and folder.exists()
    finally:
        os.close(fd)
