"""Grades that a learner who has read the grader cannot forge (grader/: SplitExecute, sandbox, channel).

One course with four real assignments (01, 02, 03, 04), graded by the real `nbgrader autograde` in the shipped
configuration. Every attacker below was written against this grader's code: it hands in correct answers
except in one answer cell, where it attacks and (mostly) defines a wrong or borrowed function. Where the
grader holds, the tests depending on that function score 0 and every other test full marks; where it did
not, the attacker would gain the points of that cell. An honest student, graded last in the same batch, must
get exactly the gradebook rows and outputs of a clean run, and after the batch no process, file, uid lock
holder or cgroup of any sandbox may be left.
"""

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import REPO as ROOT
from conftest import leftovers, nbgrader, needs_sandbox
from exercise_model import LOADED
from nbgrader.api import Gradebook

from grader.grading import KERNEL_NAME, SandboxKernelManager
from grader.sandbox import BASE, CGROUP_V1, FONT_CACHE

pytestmark = [pytest.mark.nbgrader, needs_sandbox]
BIN = Path(sys.executable).parent
ASSIGNMENTS = ("01_recurrent_cell", "02_vanishing_gradients", "03_lstm_gates", "04_gru_gates")
SECRET = "s3cr3t-of-the-instructor"
HIDDEN_MARK = {"03_lstm_gates": "(1, 1, 5, 11, 1.0)"}  # a line of forget_gate's hidden test
WRONG_FORGET = "def forget_gate(x_t, h_prev, W_f, b_f):\n    return np.zeros((x_t.shape[0], W_f.shape[0]))\n"
WRONG_RESET = "def reset_gate(x_t, h_prev, W_r, b_r):\n    return np.zeros((x_t.shape[0], W_r.shape[0]))\n"

# student -> (assignment, the function attacked, its answer cell, whether the function ends up wrong)
ATTACKS = {
    # calling the reference, however it is reached
    "ref_default": (
        "01_recurrent_cell",
        "rnn_cell_forward",
        """
def rnn_cell_forward(x_t, h_prev, W_h, b_h, _ref=rnp.rnn_cell_forward):
    return _ref(x_t, h_prev, rnp.stack_gates({"W_h": W_h, "b_h": b_h}, "rnn"))[0]
""",
        True,
    ),
    "ref_exec_source": (
        "01_recurrent_cell",
        "rnn_cell_forward",
        """
_ns = {}
exec(compile(open(rnp.__file__).read(), "numpy.py", "exec"), _ns)
def rnn_cell_forward(x_t, h_prev, W_h, b_h):
    return _ns["rnn_cell_forward"](x_t, h_prev, _ns["stack_gates"]({"W_h": W_h, "b_h": b_h}, "rnn"))[0]
""",
        True,
    ),
    "ref_torch": (
        "01_recurrent_cell",
        "rnn_cell_forward",
        """
def rnn_cell_forward(x_t, h_prev, W_h, b_h):
    H = W_h.shape[0]
    cell = torch.nn.RNNCell(x_t.shape[1], H, dtype=torch.float64)
    with torch.no_grad():
        cell.weight_hh.copy_(torch.from_numpy(W_h[:, :H])); cell.weight_ih.copy_(torch.from_numpy(W_h[:, H:]))
        cell.bias_ih.copy_(torch.from_numpy(b_h)); cell.bias_hh.zero_()
        return cell(torch.from_numpy(x_t), torch.from_numpy(h_prev)).numpy()
""",
        True,
    ),
    "ref_closure": (
        "03_lstm_gates",
        "lstm_cell_forward",
        """
def _make(ref=rnp.lstm_cell_forward, stack=rnp.stack_gates):
    def lstm_cell_forward(x_t, h_prev, c_prev, gates):
        h_t, c_t, _ = ref(x_t, h_prev, c_prev, stack(gates, "lstm"))
        return h_t, c_t
    return lstm_cell_forward
lstm_cell_forward = _make()
""",
        True,
    ),
    "ref_private_helper": (
        "03_lstm_gates",
        "lstm_cell_forward",
        """
from rnnlib import checks
def lstm_cell_forward(x_t, h_prev, c_prev, gates, _ref=checks.lstm_reference):
    out = _ref(x_t, h_prev, c_prev, gates)
    return out["h_t"], out["c_t"]
""",
        True,
    ),
    # exercise 2: its sandbox has no torch, and its tests' helpers run in the trusted kernel only
    "torch_in_answer": (
        "02_vanishing_gradients",
        "jacobian_norms",
        """
def jacobian_norms(hs, W_hh):  # right, but by torch, which JupyterLab has and the grader's sandbox does not
    t = torch.from_numpy
    J, norms = torch.eye(hs.shape[1], dtype=torch.float64), [1.0]
    for s in range(hs.shape[0] - 1, 0, -1):
        J = J @ ((1 - t(hs[s]) ** 2)[:, None] * t(W_hh))
        norms.append(torch.linalg.matrix_norm(J, ord=2).item())
    return np.array(norms)
""",
        True,
    ),
    "shadow_helpers": (
        "02_vanishing_gradients",
        "rnn_distance",
        """
# The hidden test expects first_below(autograd_norms(torch_rnn_with(given_params), given_x), 1e-3): in one
# kernel these helpers would be this learner's to redefine, and a wrong distance would pass.
def torch_rnn_with(params):
    return None
def autograd_norms(rnn, x, alpha=0.0):
    norms = np.ones(len(x))
    norms[7:] = 0.0
    return norms
rnn_norms, rnn_distance = None, 7
""",
        True,
    ),
    # graded first of the batch's exercise 2: the demo it runs in the trusted kernel is copied to every
    # later learner (Plan.demos), and every sandbox gets a copy of one font list (grader.sandbox.font_cache)
    "demo_poisoner": (
        "02_vanishing_gradients",
        "first_below",
        """
import glob, os
from rnnlib import plots, vanishing
vanishing.repeated_vs_distinct = lambda **kw: {"repeated": np.full(61, 1e9), "distinct": np.full(61, 1e9)}
plots.plot_repeated_vs_distinct = lambda ax, results: ax.set_title("POISONED")
results = rho = result = "POISONED"
for path in glob.glob("/run/rnn-grader/mpl/*") + glob.glob(os.environ.get("MPLCONFIGDIR", "") + "/*"):
    try:
        open(path, "w").write('{"_version": "POISONED"}')
        print("overwrote", path)
    except OSError as error:
        print("could not write", path, error)
"""
        + LOADED["02_vanishing_gradients"].answers["first_below"],
        False,
    ),
    # changing what the tests use
    "patch_checks": (
        "03_lstm_gates",
        "forget_gate",
        """
import sys, types
from rnnlib import checks
fake = types.ModuleType("rnnlib.checks")
fake.__dict__.update(assert_close=lambda *a, **k: None, diagnose_affine=lambda *a, **k: None)
sys.modules["rnnlib.checks"] = checks = fake
np.testing.assert_allclose = lambda *a, **k: None
"""
        + WRONG_FORGET,
        True,
    ),
    "patch_thread": (
        "03_lstm_gates",
        "forget_gate",
        """
import builtins, threading, time
def _keep_patching():
    while True:
        builtins.isinstance = lambda *a: True
        np.allclose = lambda *a, **k: True
        time.sleep(0.001)
threading.Thread(target=_keep_patching, daemon=True).start()
"""
        + WRONG_FORGET,
        True,
    ),
    "lying_array": (
        "03_lstm_gates",
        "forget_gate",
        """
class Agreeable(np.ndarray):
    def __eq__(self, other): return np.ones(np.shape(other), dtype=bool)
    def __array_ufunc__(self, *a, **k): return np.zeros(1)
def forget_gate(x_t, h_prev, W_f, b_f):
    return np.zeros((x_t.shape[0], W_f.shape[0])).view(Agreeable)
""",
        True,
    ),
    # reading what it must not see
    "hidden_reader": (
        "03_lstm_gates",
        "forget_gate",
        """
import glob, os
print(repr(globals().get("In")), repr(globals().get("_ih")))
for path in glob.glob("/proc/*/cmdline") + glob.glob("/run/**", recursive=True) + glob.glob("/tmp/**"):
    try:
        text = open(path, errors="replace").read()
    except OSError:
        continue
    print(path, text[:20000])
print(sorted(os.environ.items()))
"""
        + LOADED["03_lstm_gates"].answers["forget_gate"],
        False,
    ),
    # leaving something behind for the next learners
    "detached": (
        "04_gru_gates",
        "reset_gate",
        """
import os, signal, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(3)
        for path in ("/tmp/leak", "/dev/shm/leak", "/var/tmp/leak"):
            open(path, "w").write("left behind")
        try:
            os.kill(-1, signal.SIGKILL)
        finally:
            time.sleep(600)
    os._exit(0)
os.wait()
open("/tmp/big", "wb").write(b"x" * 50_000_000)
"""
        + LOADED["04_gru_gates"].answers["reset_gate"],
        False,
    ),
    # resources
    "memory": ("04_gru_gates", "reset_gate", "hog = bytearray(3 * 2**30)\n" + WRONG_RESET, True),
    "fork_bomb": (
        "04_gru_gates",
        "reset_gate",
        """
import os, time
children = []
try:
    for _ in range(300):
        pid = os.fork()
        if pid == 0:
            time.sleep(2)
            os._exit(0)
        children.append(pid)
finally:
    for pid in children:
        os.waitpid(pid, 0)
"""
        + LOADED["04_gru_gates"].answers["reset_gate"],
        True,
    ),
    "network": (
        "04_gru_gates",
        "reset_gate",
        """
import socket
socket.create_connection(("127.0.0.1", PORT), timeout=5)
"""
        + LOADED["04_gru_gates"].answers["reset_gate"],
        True,
    ),
}
BREAKS_ITS_OWN_SANDBOX = {"patch_thread"}  # ipykernel itself calls isinstance: the rest of its notebook fails
HONEST = "zz_honest"  # graded after every attacker of the batch


def submission(course: Path, assignment: str, code: dict[str, str]) -> nbformat.NotebookNode:
    a = LOADED[assignment]
    nb = nbformat.read(course / "exercises" / assignment / a.notebook_name, as_version=4)
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in a.answers:
            cell.source = code.get(gid, a.answers[gid])
    return nb


def hand_in(course: Path, student: str, assignment: str, nb: nbformat.NotebookNode) -> None:
    target = course / "submitted" / student / assignment
    target.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target / LOADED[assignment].notebook_name)


def rows(course: Path, student: str) -> dict:
    """Every grade of ``student``: (assignment, cell) -> (score, auto score, needs manual grade)."""
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        return {(a, g.name): (g.score, g.auto_score, g.needs_manual_grade)
                for a in ASSIGNMENTS
                for g in gb.find_submission_notebook(LOADED[a].path.stem, a, student).grades}  # fmt: skip


def outputs(course: Path, student: str, assignment: str) -> list:
    """Each cell's outputs, consecutive pieces of one stream joined (how a print is split is not a grade)."""
    nb = nbformat.read(course / "autograded" / student / assignment / LOADED[assignment].notebook_name, 4)
    cells = []
    for cell in nb.cells:
        merged: list[dict] = []
        for o in cell.get("outputs", []):
            o = {k: v for k, v in o.items() if k != "execution_count"}
            if merged and o["output_type"] == "stream" and merged[-1].get("name") == o.get("name"):
                merged[-1] = merged[-1] | {"text": merged[-1]["text"] + o["text"]}
            else:
                merged.append(o)
        cells.append(merged)
    return cells


@pytest.fixture(scope="module")
def listener():
    server = socket.create_server(("127.0.0.1", 0))
    yield server
    server.close()


@pytest.fixture(scope="module")
def course(tmp_path_factory, listener) -> dict:
    root = tmp_path_factory.mktemp("sandbox")
    config = (ROOT / "nbgrader_config.py").read_text()
    (root / "nbgrader_config.py").write_text(config + "\nc.SandboxKernelManager.memory_limit = 2**30\n")
    for a in ASSIGNMENTS:
        (root / "solutions" / a).mkdir(parents=True)
        nbformat.write(LOADED[a].nb, root / "solutions" / a / LOADED[a].notebook_name)
        nbgrader("generate_assignment", a, cwd=root)
    for a in ASSIGNMENTS:
        hand_in(root, HONEST, a, submission(root, a, {}))
    nbgrader("autograde", "*", "--student", HONEST, cwd=root)
    clean = rows(root, HONEST), {a: outputs(root, HONEST, a) for a in ASSIGNMENTS}
    fonts = {p.name: p.read_bytes() for p in FONT_CACHE.iterdir()}  # built by the clean run's first sandbox
    port = listener.getsockname()[1]
    for student, (a, function, code, _) in ATTACKS.items():
        (gid,) = [g for g, names in LOADED[a].binds.items() if function in names]
        hand_in(root, student, a, submission(root, a, {gid: code.replace("PORT", str(port))}))
    env = dict(os.environ, RNN_COURSE_SECRET=SECRET, PATH=f"{BIN}:{os.environ['PATH']}")
    start = time.perf_counter()
    log = subprocess.run([BIN / "nbgrader", "autograde", "*", "--force"], cwd=root,
                         env=env, capture_output=True, text=True, timeout=1200).stderr  # fmt: skip
    print(f"\nthe batch of {len(ATTACKS) + 1} submissions graded in {time.perf_counter() - start:.0f} s")
    (root / "autograde.log").write_text(log)
    time.sleep(4)  # the detached attacker would wake up by now, had it survived
    for _ in range(50):  # a process killed at the end of the batch may take a moment to be reaped
        left = leftovers()
        if not left:
            break
        time.sleep(0.2)
    return {"root": root, "clean": clean, "log": log, "leftovers": left, "fonts": fonts}


@pytest.mark.parametrize("student", sorted(ATTACKS))
def test_the_attacker_earns_no_point_it_did_not_earn(course, student):
    a, function, _, wrong = ATTACKS[student]
    expected = LOADED[a].expected_cells({function} if wrong else set())
    with Gradebook(f"sqlite:///{course['root'] / 'gradebook.db'}") as gb:
        grades = gb.find_submission_notebook(LOADED[a].path.stem, a, student).grades
        got = {g.name: g.auto_score for g in grades if g.name in expected}
    if student in BREAKS_ITS_OWN_SANDBOX:  # graded, and never above what it earned
        assert all(got[c] is not None and got[c] <= expected[c] for c in expected), (student, got)
    else:
        assert got == expected, student


def test_the_honest_learner_graded_after_them_gets_exactly_the_clean_run(course):
    clean_rows, clean_outputs = course["clean"]
    assert rows(course["root"], HONEST) == clean_rows
    for a in ASSIGNMENTS:
        assert outputs(course["root"], HONEST, a) == clean_outputs[a], a


def test_nothing_of_any_sandbox_is_left_after_the_batch(course):
    assert course["leftovers"] == []
    assert list(BASE.glob("k-*")) == []


def test_helper_cells_run_in_the_trusted_kernel_in_place(course):
    """Exercise 2's test helpers and its library demo (grader.grading.Plan.helpers) ran in the trusted kernel:
    no error in the helpers' cell although the sandbox has no torch, and the demo's figure is there (the
    sandbox draws with matplotlib's agg backend, which shows nothing)."""
    nb = nbformat.read(course["root"] / "autograded" / HONEST / "02_vanishing_gradients"
                       / "vanishing_gradients.ipynb", 4)  # fmt: skip
    cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in nb.cells}
    assert not [o for o in cells["reference_helpers"].outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in cells["repeated_demo"].outputs)
    attacker = nbformat.read(course["root"] / "autograded" / "torch_in_answer" / "02_vanishing_gradients"
                             / "vanishing_gradients.ipynb", 4)  # fmt: skip
    test = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in attacker.cells}["test_jacobian_norms"]
    assert "not available while this exercise is graded" in str(test.outputs)  # torch was a stub


def test_a_demo_runs_once_per_batch_and_every_submission_gets_its_outputs(course):
    """The library demo of exercise 2 reads nothing of the learner's (Plan.demos): the batch ran it for its
    first submission of exercise 2 only (nbclient stamps the cells it executes), the others got a copy."""
    demos = []
    for nb_path in sorted((course["root"] / "autograded").glob("*/02_vanishing_gradients/*.ipynb")):
        cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in nbformat.read(nb_path, 4).cells}
        demos.append(cells["repeated_demo"])
    assert len(demos) > 2
    assert sum("execution" in demo.metadata for demo in demos) == 1
    assert all(demo.outputs == demos[0].outputs for demo in demos)
    assert any("image/png" in o.get("data", {}) for o in demos[0].outputs)


def test_the_first_learner_of_a_batch_cannot_change_the_demo_or_the_font_list_the_others_get(course):
    """demo_poisoner was the one whose notebook ran exercise 2's demo (its cell alone has nbclient's stamp);
    what it patched in its sandbox did not reach the demo (its outputs are the clean run's), it could not see
    the machine's font list (only its own copy), and that list is byte for byte what it was before."""
    root = course["root"]
    nb = nbformat.read(root / "autograded" / "demo_poisoner" / "02_vanishing_gradients"
                       / "vanishing_gradients.ipynb", 4)  # fmt: skip
    cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in nb.cells}
    assert "execution" in cells["repeated_demo"].metadata
    position = [c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells].index("repeated_demo")
    clean = course["clean"][1]["02_vanishing_gradients"][position]
    assert outputs(root, "demo_poisoner", "02_vanishing_gradients")[position] == clean
    assert "POISONED" not in str(clean)
    printed = str(cells["first_below"].outputs)
    assert f"overwrote {FONT_CACHE}/" not in printed and "/mpl/fontlist" in printed  # its own copy only
    assert {p.name: p.read_bytes() for p in FONT_CACHE.iterdir()} == course["fonts"]


def test_hidden_tests_and_the_instructors_environment_never_reach_the_sandbox(course):
    root = course["root"]
    printed = str(outputs(root, "hidden_reader", "03_lstm_gates"))
    assert "RNN_COURSE_SECRET" not in printed and SECRET not in printed
    assert "BEGIN HIDDEN TESTS" not in printed
    nb = nbformat.read(root / "autograded" / "hidden_reader" / "03_lstm_gates" / "lstm_gates.ipynb", 4)
    answer = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "forget_gate"][0]
    text = "".join(o.get("text", "") for o in answer.outputs)
    assert "/proc/1/cmdline" in text and "connection.json" in text  # it did look around
    assert HIDDEN_MARK["03_lstm_gates"] not in text and "rnnlib.checks" not in text.split("sorted")[0]
    # the hidden test did run, in the trusted process: its code is in the graded test cell
    test = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_forget_gate"][0]
    assert HIDDEN_MARK["03_lstm_gates"] in test.source


def test_each_resource_attack_was_stopped_by_its_cap(course, listener):
    root = course["root"]

    def answer_error(student: str) -> str:
        nb = nbformat.read(root / "autograded" / student / "04_gru_gates" / "gru_gates.ipynb", 4)
        cell = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "reset_gate"][0]
        return " ".join(f"{o.ename}: {o.evalue}" for o in cell.outputs if o.output_type == "error")

    assert "DeadKernelError" in answer_error("memory")  # the cgroup's OOM killer, not an address-space cap
    assert "BlockingIOError" in answer_error("fork_bomb")  # pids.max
    assert "ConnectionRefusedError" in answer_error("network")  # its own loopback, where nobody listens
    assert "The sandbox's kernel died" in course["log"]
    listener.setblocking(False)
    with pytest.raises(BlockingIOError):  # nobody knocked at the instructor's 127.0.0.1
        listener.accept()


def test_grading_refuses_without_the_sandbox_and_says_why_unless_the_instructor_opts_out(course, tmp_path):
    root = course["root"]
    venv_only = dict(os.environ, PATH=str(BIN))  # no bwrap, no setpriv
    args = [BIN / "nbgrader", "autograde", "01_recurrent_cell", "--student", HONEST,
            "--force"]  # fmt: skip
    log = subprocess.run(args, cwd=root, env=venv_only, capture_output=True, text=True, timeout=600).stderr
    assert "refusing to grade: the sandbox needs root, bubblewrap (bwrap) and setpriv" in log
    assert not (root / "autograded" / HONEST / "01_recurrent_cell").exists()
    log = subprocess.run([*args, "--SandboxKernelManager.allow_without=['sandbox']"], cwd=root, env=venv_only,
                         capture_output=True, text=True, timeout=600).stderr  # fmt: skip
    lines = [line for line in log.splitlines() if re.match(r"\[AutogradeApp \|", line)]
    assert lines and all("[UNSAFE: grading without sandbox]" in line for line in lines), lines[:5]
    assert rows(root, HONEST) == course["clean"][0]


def test_a_killed_launcher_leaves_nothing_once_its_grading_lets_the_sandbox_go(tmp_path):
    """The launcher tears its sandbox down itself. Killed (SIGKILL: no teardown), it leaves its view of the
    library and its cgroup behind, and ``sweep`` never finds them once the grading has removed the private
    folder they are named after: the grading's ``release`` removes them."""

    async def killed_launcher() -> tuple[str, list[str]]:
        km = SandboxKernelManager(kernel_name=KERNEL_NAME, assignment="01_recurrent_cell")
        await km.start_kernel(cwd=str(tmp_path), stderr=subprocess.DEVNULL)
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=120)
            km.provisioner.process.kill()
            km.provisioner.process.wait(timeout=30)
            name = km.private.name
            left = [p.name for p in [*BASE.glob(f"{name}.*"), *CGROUP_V1.glob(f"*/rnn-grader/{name}")]]
        finally:
            kc.stop_channels()
            await km.shutdown_kernel(now=True)
            km.release()  # as SplitExecute does for every sandbox of a notebook
        return name, left

    name, left = asyncio.run(killed_launcher())
    assert f"{name}.view" in left and name in left, left  # what the launcher's teardown did not remove
    deadline = time.monotonic() + 30  # the killed sandbox's bwrap is a zombie until init reaps it
    while (now := leftovers()) and all("['Z', '1']" in f for f in now) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftovers() == []
