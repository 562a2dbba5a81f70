"""The confined grading kernel (grader/grading.py, grader/confine.py) under the real `nbgrader autograde`.

A temporary course with the repository's nbgrader_config.py (plus a 5 s CPU cap: the CPU-bound student costs
little) and a two-function assignment, "toy": double (1 point) and square (1 point). Every hostile student
writes a correct square and, in the answer cell of double, first does something the grading kernel must not
allow, then defines a correct double. So where the protection holds, double's test cell scores 0 (the cell
stopped at the attack) and square's scores 1; where it were missing, double would score 1. Every attack is
bounded by construction even without the protection: a 20 GiB np.empty (virtual, never touched), at most 200
forked children that sleep 1 s and are reaped, a loop of at most 20 CPU seconds, one connection to a listener
of this test on 127.0.0.1, reading files of the temporary course, an UPDATE of its gradebook.

Which protections the machine allows is probed independently with util-linux (root? `unshare --net --mount`?);
a protection it does not allow must be named in the kernel's log line, and the grading must still complete.
"""

import json
import os
import re
import resource
import socket
import subprocess
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from nbgrader.api import Gradebook
from test_exercises import ROOT, nbgrader

ASSIGNMENT = "toy"
CPU_CAP = 5  # seconds of CPU for a whole notebook in the test course (the course default is 300)
AS_ROOT = os.geteuid() == 0
NAMESPACES = subprocess.run(["unshare", "--net", "--mount", "true"], capture_output=True).returncode == 0
SOLUTION = {"double": "def double(x):\n    return 2 * x", "square": "def square(x):\n    return x * x"}


def nbgrader_cell(cell, grade_id: str, *, solution=False, grade=False, locked=False, points=None):
    cell.metadata["nbgrader"] = {
        "grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3, "solution": solution,
        "task": False, **({"points": points} if grade else {}),
    }  # fmt: skip
    return cell


def source_notebook() -> nbformat.NotebookNode:
    """double and square, a test cell of one point each."""
    cells = [
        new_markdown_cell("# Toy\n\n**2 points**: 2 autograded"),
        nbgrader_cell(new_code_cell("import os\nimport numpy as np"), "imports", locked=True),
    ]
    for name, tests in [("double", "assert double(3) == 6"), ("square", "assert square(3) == 9")]:
        body = (
            SOLUTION[name].replace("    return", "    ### BEGIN SOLUTION\n    return")
            + "\n    ### END SOLUTION"
        )
        cells.append(nbgrader_cell(new_code_cell(body), name, solution=True))
        cells.append(nbgrader_cell(new_code_cell(tests), f"test_{name}", grade=True, locked=True, points=1))
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def attacks(course: Path, port: int) -> dict[str, tuple[str, str]]:
    """student -> (code run before double is defined, the error that must stop it)."""
    solution, gradebook = course / "solutions" / ASSIGNMENT / "toy.ipynb", course / "gradebook.db"
    other = course / "submitted" / "good" / ASSIGNMENT / "toy.ipynb"
    copy = "import json\nexec(json.load(open({!r}))['cells'][2]['source'])"  # double's cell, wholesale
    return {
        "memory": ("block = np.empty(20 * 2**30, dtype=np.uint8)", "MemoryError"),
        "fork": (FORK, "BlockingIOError"),
        "network": (f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5)", "OSError"),
        "cpu": ("import time\nt = time.process_time()\nwhile time.process_time() - t < 20:\n    pass",
                "CPUTimeExceeded"),
        "copier": (copy.format(str(solution)), "PermissionError"),
        "peeker": (copy.format(str(other)), "PermissionError"),
        "forger": (FORGE.format(str(gradebook)), "OperationalError"),
    }  # fmt: skip


FORK = """import time
children = []
try:
    for _ in range(200):
        pid = os.fork()
        if pid == 0:
            time.sleep(1)
            os._exit(0)
        children.append(pid)
finally:
    for pid in children:
        os.waitpid(pid, 0)"""

FORGE = """import sqlite3
with sqlite3.connect({!r}) as db:
    db.execute("UPDATE grade SET manual_score = 100")"""


def protected(student: str) -> bool:
    """Whether this machine allows the protection that stops this student."""
    return {
        "memory": True,  # RLIMIT_AS needs no privilege
        "cpu": True,
        "fork": AS_ROOT,  # RLIMIT_NPROC counts only for a user other than root
        "network": NAMESPACES or not AS_ROOT,  # as root a new netns; otherwise a new user namespace
        "copier": NAMESPACES and AS_ROOT,
        "peeker": NAMESPACES and AS_ROOT,
        "forger": NAMESPACES and AS_ROOT,
    }[student]


def scores(course: Path, student: str) -> dict[str, float]:
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        notebook = gb.find_submission_notebook("toy", ASSIGNMENT, student)
        return {g.name: g.score for g in notebook.grades}


def error_of(course: Path, student: str) -> str:
    """`ename: evalue` of the error in double's answer cell of the autograded notebook ('' if none)."""
    nb = nbformat.read(course / "autograded" / student / ASSIGNMENT / "toy.ipynb", as_version=4)
    (cell,) = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "double"]
    return "".join(f"{o.ename}: {o.evalue}" for o in cell.outputs if o.output_type == "error")


def timed_autograde(course: Path, *args: str) -> tuple[str, float]:
    start = time.perf_counter()
    log = nbgrader("autograde", ASSIGNMENT, *args, cwd=course)
    return log, time.perf_counter() - start


@pytest.fixture(scope="module")
def listener():
    server = socket.create_server(("127.0.0.1", 0))
    yield server
    server.close()


@pytest.fixture(scope="module")
def graded(tmp_path_factory, listener) -> dict:
    """good graded (confined), the attackers in one batch, good again in the plain and confined kernels."""
    course = tmp_path_factory.mktemp("confined")
    config = (ROOT / "nbgrader_config.py").read_text() + f"\nc.GraderKernelManager.cpu_limit = {CPU_CAP}\n"
    (course / "nbgrader_config.py").write_text(config)
    (course / "solutions" / ASSIGNMENT).mkdir(parents=True)
    nbformat.write(source_notebook(), course / "solutions" / ASSIGNMENT / "toy.ipynb")
    nbgrader("generate_assignment", ASSIGNMENT, cwd=course)
    released = course / "exercises" / ASSIGNMENT / "toy.ipynb"
    plan = {"good": ""} | {s: code for s, (code, _) in attacks(course, listener.getsockname()[1]).items()}
    for student, attack in plan.items():
        nb = nbformat.read(released, as_version=4)
        nb.cells[2].source = (attack + "\n\n" if attack else "") + SOLUTION["double"]
        nb.cells[4].source = SOLUTION["square"]
        (course / "submitted" / student / ASSIGNMENT).mkdir(parents=True)
        nbformat.write(nb, course / "submitted" / student / ASSIGNMENT / "toy.ipynb")
    confined_log, _ = timed_autograde(course, "--student", "good")
    before = scores(course, "good")
    attack_log, _ = timed_autograde(course, "--CourseDirectory.student_id_exclude=good")
    after = scores(course, "good")
    again = ("--student", "good", "--force")  # timed alike: gradebook made, student known, both re-graded
    plain_log, plain_s = timed_autograde(course, *again, "--ConfinedExecute.kernel_name=python3")
    plain = scores(course, "good")
    _, confined_s = timed_autograde(course, *again)
    print(f"\ngrading time per submission: confined kernel {confined_s:.1f} s, plain kernel {plain_s:.1f} s "
          f"(one `nbgrader autograde --student good --force` each, nbgrader's start-up in)")  # fmt: skip
    return {"course": course, "before": before, "after": after, "plain": plain,
            "logs": (confined_log, attack_log, plain_log)}  # fmt: skip


def test_the_good_student_is_graded_alike_in_both_kernels_and_untouched_by_the_others(graded):
    assert graded["before"] == {"test_double": 1.0, "test_square": 1.0}
    assert graded["after"] == graded["before"], "the attackers' batch changed another student's grades"
    assert graded["plain"] == graded["before"]
    confined_log, _, plain_log = graded["logs"]
    assert "[rnn-grader] confined kernel:" in confined_log
    assert "[rnn-grader]" not in plain_log


def test_the_log_names_the_active_protections(graded):
    line = re.search(r"\[rnn-grader\] confined kernel: (.*)", graded["logs"][0])[1]
    active, off = line.split(" Not available: ")
    assert "memory 4 GiB" in active and f"CPU time {CPU_CAP} s" in active
    for student, words in [("fork", "processes 64"), ("network", "no network"), ("copier", "hidden: ")]:
        assert (words in active) == protected(student), line
    assert ("user nobody" in active) == AS_ROOT, line
    assert (off == "none.") == (AS_ROOT and NAMESPACES), line


def test_a_protection_switched_off_is_named_and_grading_goes_on(graded):
    """No user, network kept, nothing hidden: the log says what is off, the good student keeps full marks."""
    course = graded["course"]
    off = [f"--GraderKernelManager.{s}" for s in ("user=", "isolate_network=False", "hide_course=False")]
    log, _ = timed_autograde(course, "--student", "good", "--force", *off)
    line = re.search(r"\[rnn-grader\] confined kernel: (.*)", log)[1]
    assert "Not available: process cap and unprivileged user (no user set)" in line, line
    assert "no network" not in line and "hidden" not in line and "memory 4 GiB" in line, line
    assert scores(course, "good") == {"test_double": 1.0, "test_square": 1.0}


@pytest.mark.parametrize("student", ["memory", "fork", "network", "cpu", "copier", "peeker", "forger"])
def test_each_attack_is_stopped_and_scores_zero_for_its_part_only(graded, listener, student):
    course = graded["course"]
    error, expected = error_of(course, student), attacks(course, 0)[student][1]
    if protected(student):
        assert error.startswith(f"{expected}: "), (student, error)
        assert scores(course, student) == {"test_double": 0.0, "test_square": 1.0}, error
    else:  # graded all the same, and the log says what is missing
        assert scores(course, student)["test_square"] == 1.0
    if student == "network" and protected(student):
        assert "unreachable" in error
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):  # nobody knocked
            listener.accept()


def test_validate_and_jupyterlab_use_the_plain_python3_kernel(graded):
    """`nbgrader validate` in the course (its config loaded): same user, same limits, network reachable."""
    course = graded["course"]
    nb = nbformat.read(course / "submitted" / "good" / ASSIGNMENT / "toy.ipynb", as_version=4)
    listener = socket.create_server(("127.0.0.1", 0))

    limits = [resource.getrlimit(getattr(resource, name)) for name in ("RLIMIT_AS", "RLIMIT_NPROC")]
    solutions = str(course / "solutions")
    nb.cells[4].source = "\n".join([  # square's answer: defined only if the kernel is the plain one
        "import resource, socket",
        f"assert os.getuid() == {os.getuid()}",
        f"assert [resource.getrlimit(getattr(resource, n)) for n in ('RLIMIT_AS', 'RLIMIT_NPROC')] == "
        f"{limits}",
        f"socket.create_connection(('127.0.0.1', {listener.getsockname()[1]}), timeout=5).close()",
        f"assert os.listdir({solutions!r})",
        SOLUTION["square"],
    ])  # fmt: skip
    nbformat.write(nb, course / "probe.ipynb")
    out = nbgrader("validate", "probe.ipynb", cwd=course)
    listener.close()
    assert "Success! Your notebook passes all the tests." in out, out[-2000:]
    assert "[rnn-grader]" not in out
    assert "rnn-grader" not in KernelSpecManager().find_kernel_specs(), "the grading kernel is not installed"
    assert (
        json.loads((ROOT / "rnnlib" / "kernels" / "rnn-grader" / "kernel.json").read_text())["language"]
        == "python"
    )
