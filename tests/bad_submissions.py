"""The bad-submission matrix's students: each a function that edits the released notebook of exercise 1 the
way a broken or hostile submission would, with the learner functions it breaks (tests/test_grading_matrix.py
grades them serially, tests/test_parallel_grading.py in parallel), and how to hand one in.
"""

import json
import sys
from pathlib import Path

import nbformat
from exercise_model import LOADED, perturbing_wrapper

A = LOADED["01_recurrent_cell"]
NBGRADER = Path(sys.executable).parent / "nbgrader"
TIMEOUT = 10  # seconds per cell in the test course (the course itself uses 60)
DUE = "2026-01-15 12:00:00 UTC"
ON_TIME, LATE = "2026-01-15 11:00:00 UTC", "2026-01-16 14:30:00 UTC"  # the late one 26.5 hours late
TOTAL = sum(A.tests.values()) + sum(A.manual.values())  # 8 autograded + 2 by hand

# --- the students: each one edits the released notebook ---------------------------------------------------


def cells_by_id(nb: nbformat.NotebookNode) -> dict[str, nbformat.NotebookNode]:
    return {c.metadata["nbgrader"]["grade_id"]: c for c in nb.cells if "nbgrader" in c.metadata}


def answered(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Every answer cell filled in with the solution."""
    cells = cells_by_id(nb)
    for gid, source in A.answers.items():
        cells[gid].source = source
    return nb


def wrong(nb: nbformat.NotebookNode, function: str) -> nbformat.NotebookNode:
    """``function`` returns wrong numbers (the rest of the notebook is right)."""
    (gid,) = [g for g, names in A.binds.items() if function in names]
    cells_by_id(nb)[gid].source += perturbing_wrapper(function)
    return nb


def append_to(nb: nbformat.NotebookNode, gid: str, code: str) -> nbformat.NotebookNode:
    cells_by_id(nb)[gid].source += "\n" + code
    return nb


def edit_locked(nb):  # case 1: the failing test cell emptied, a passing one stripped of its asserts
    cells = cells_by_id(wrong(nb, "rnn_forward"))
    cells["test_rnn_forward"].source = "pass"
    cells["test_rnn_cell_forward"].source = 'print("rnn_cell_forward: OK")'
    return nb


def delete_test(nb):  # case 2
    nb.cells.remove(cells_by_id(nb)["test_rnn_cell_forward"])
    return nb


def delete_answer(nb):  # case 2, the written answer (after a locked cell that is not graded)
    nb.cells.remove(cells_by_id(nb)["why_tanh"])
    return nb


def to_markdown(nb):  # case 3: a passing and a failing test cell turned into markdown
    cells = cells_by_id(wrong(nb, "rnn_forward"))
    for gid in ("test_tanh", "test_rnn_forward"):
        cells[gid].cell_type = "markdown"
        del cells[gid]["outputs"], cells[gid]["execution_count"]
    return nb


def raise_points(nb):  # case 4
    cells_by_id(nb)["test_rnn_cell_forward"].metadata["nbgrader"]["points"] = 100
    return nb


def duplicate_test(nb):  # case 5: the same grade_id twice
    cell = cells_by_id(nb)["test_rnn_cell_forward"]
    copy = nbformat.from_dict(json.loads(json.dumps(cell)))
    copy.id = f"{cell.id}-copy"  # a distinct Jupyter cell id: only nbgrader's grade_id is duplicated
    nb.cells.insert(nb.cells.index(cell) + 1, copy)
    return nb


def infinite_loop(nb):  # case 6: the loop runs before rnn_forward is defined
    cell = cells_by_id(nb)["rnn_forward"]
    cell.source = "while True:\n    pass\n\n" + cell.source
    return nb


SLEEP = 3


def slow(nb):  # case 7: a cell that takes a few seconds, well within the timeout, printing as it goes
    progress = f'for second in range({SLEEP}):\n    print("second", second, flush=True)\n    time.sleep(1)'
    return append_to(nb, "rnn_forward", "import time\n" + progress)


HIDE_ERRORS = """
import sys
ip = get_ipython()
ip.showtraceback = lambda *args, **kwargs: None
ip.set_custom_exc((BaseException,), lambda *args, **kwargs: None)
sys.excepthook = lambda *args: None
"""


def hide_errors(nb):  # case 8
    return append_to(wrong(nb, "rnn_cell_forward"), "sigmoid", HIDE_ERRORS)


PATCH_COMPARISONS = """
import numpy as np, torch
np.allclose = lambda *args, **kwargs: True
np.array_equal = lambda *args, **kwargs: True
np.isclose = lambda a, b, *args, **kwargs: np.ones(np.broadcast(a, b).shape, bool)
np.testing.assert_allclose = lambda *args, **kwargs: None
np.testing.assert_array_almost_equal = lambda *args, **kwargs: None
torch.allclose = lambda *args, **kwargs: True
torch.testing.assert_close = lambda *args, **kwargs: None
"""


def patch_comparisons(nb):  # case 9
    return append_to(wrong(nb, "rnn_cell_forward"), "sigmoid", PATCH_COMPARISONS)


LYING_ARRAY = """
class _Agreeable(np.ndarray):
    def __eq__(self, other): return np.ones(self.shape, bool)
    def __ne__(self, other): return np.zeros(self.shape, bool)

_right = rnn_cell_forward

def rnn_cell_forward(*args):
    return (_right(*args) + 1.0).view(_Agreeable)
"""

ALWAYS_EQUAL = """
class _Yes:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __getattr__(self, name): return _Yes()
    def __call__(self, *args, **kwargs): return _Yes()
    def __len__(self): return 2
    def __iter__(self): return iter([_Yes(), _Yes()])
    def __array__(self, *args, **kwargs): return np.zeros(1)

def rnn_forward(*args):
    return _Yes(), _Yes()
"""


PATCH_CHECKS = "checks.assert_close = lambda *args, **kwargs: None"

PATCH_REFERENCES = """
rnp.sigmoid = sigmoid
torch.sigmoid = lambda t: torch.from_numpy(sigmoid(t.numpy()))
"""

REBIND_CHECKS = """
import contextlib

class _NoChecks:
    def __getattr__(self, name): return lambda *args, **kwargs: contextlib.nullcontext()

checks = _NoChecks()
"""


def patch_checks(nb):  # case 9b: rnnlib.checks' comparison replaced (the wrong function is tanh)
    return append_to(wrong(nb, "tanh"), "sigmoid", PATCH_CHECKS)


def patch_references(nb):  # case 9b: rnnlib.numpy's and torch's sigmoid made to agree with a wrong one
    return append_to(wrong(nb, "sigmoid"), "sigmoid", PATCH_REFERENCES)


def rebind_checks(nb):  # case 9b: the notebook's name `checks` bound to an object that checks nothing
    return append_to(wrong(nb, "tanh"), "tanh", REBIND_CHECKS)


def lying_array(nb):  # case 10a: a wrong answer in an ndarray subclass whose == always agrees
    return append_to(nb, "rnn_cell_forward", LYING_ARRAY)


def always_equal(nb):  # case 10b: an object that is equal to everything
    return append_to(nb, "rnn_forward", ALWAYS_EQUAL)


FAKE = "All tests passed! rnn_forward: OK"


# Written against grader.grading.SplitExecute.coalesce_streams: the grader merges a cell's prints and applies
# their carriage returns, so a line printed and then overwritten shows only what overwrote it.
FORGED = "test_rnn_forward: 2 / 2 points, hidden tests passed"
OVERWRITE = f"""
print("rnn_forward: FAILED", end="\\r", flush=True)
print("{FORGED}", flush=True)
"""


def fake_output(nb):  # case 11: outputs claiming success, shipped in the notebook, and printed over a line
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.execution_count = i + 1
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=FAKE + "\n")]
    return append_to(wrong(nb, "rnn_forward"), "rnn_forward", OVERWRITE)


WARNS = """
import warnings

_quiet = rnn_forward

def rnn_forward(*args):
    warnings.warn("a harmless library warning", UserWarning)
    print("note: something on stderr", file=sys.stderr)
    return _quiet(*args)
"""


def warning(nb):  # case 12
    return append_to(nb, "rnn_forward", "import sys" + WARNS)


def sys_exit(nb):  # case 13a
    return append_to(nb, "rnn_forward", "def rnn_forward(*args):\n    import sys\n    sys.exit()")


def os_exit_in(function: str) -> str:
    return f"def {function}(*args):\n    import os\n    os._exit(0)"


def os_exit(nb):  # case 13b: the kernel dies in the last test cell; a demo cell follows it
    return append_to(nb, "rnn_forward", os_exit_in("rnn_forward"))


def calls_reference(nb):  # case 18: rnn_cell_forward is rnnlib's
    cells_by_id(nb)["rnn_cell_forward"].source = (
        "def rnn_cell_forward(x_t, h_prev, W_h, b_h):\n"
        '    params = rnp.stack_gates({"W_h": W_h, "b_h": b_h}, "rnn")\n'
        "    return rnp.rnn_cell_forward(x_t, h_prev, params)[0]\n"
    )
    return nb


# student -> (how the submission is made from a filled-in release, the learner functions left broken)
STUDENTS = {
    "correct": (lambda nb: nb, set()),
    "edit_locked": (edit_locked, {"rnn_forward"}),
    "delete_test": (delete_test, set()),
    "delete_answer": (delete_answer, set()),
    "to_markdown": (to_markdown, {"rnn_forward"}),
    "raise_points": (raise_points, set()),
    "duplicate_test": (duplicate_test, set()),
    "infinite_loop": (infinite_loop, {"rnn_forward"}),
    "slow": (slow, set()),
    "hide_errors": (hide_errors, {"rnn_cell_forward"}),
    "patch_comparisons": (patch_comparisons, {"rnn_cell_forward"}),
    "patch_checks": (patch_checks, {"tanh"}),
    "patch_references": (patch_references, {"sigmoid"}),
    "rebind_checks": (rebind_checks, {"tanh"}),
    "lying_array": (lying_array, {"rnn_cell_forward"}),
    "always_equal": (always_equal, {"rnn_forward"}),
    "fake_output": (fake_output, {"rnn_forward"}),
    "warning": (warning, set()),
    "sys_exit": (sys_exit, {"rnn_forward"}),
    "os_exit": (os_exit, {"rnn_forward"}),
    "late": (lambda nb: nb, set()),
    "calls_reference": (calls_reference, {"rnn_cell_forward"}),
}
BLANK = "blank"  # the untouched release
KILLER = "dies_every_time"  # case 13b, bounded: sigmoid kills every kernel that calls it
BROKEN_FILES = ("renamed", "empty_folder", "invalid_json")  # case 17


def submit(course: Path, student: str, nb: nbformat.NotebookNode | None = None, *, name: str | None = None,
           timestamp: str = ON_TIME) -> Path:  # fmt: skip
    folder = course / "submitted" / student / A.name
    folder.mkdir(parents=True)
    if nb is not None:
        nbformat.write(nb, folder / (name or A.notebook_name))
    (folder / "timestamp.txt").write_text(timestamp)
    return folder


def released(course: Path) -> nbformat.NotebookNode:
    return nbformat.read(course / "exercises" / A.name / A.notebook_name, as_version=4)


def expected(broken: set[str]) -> dict[str, float]:
    return A.expected_cells(broken)


EVERYONE = [*STUDENTS, BLANK, KILLER, *BROKEN_FILES]
