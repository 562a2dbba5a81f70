"""A confined kernel for `nbgrader autograde`: learner code runs under limits, away from the course's secrets.

nbgrader_config.py puts ``ConfinedExecute`` in place of nbgrader's Execute in autograde only (validate and
JupyterLab keep the plain python3 kernel), with the three grading steps at the end of this file.
ConfinedExecute starts the kernel "rnn-grader" (grader/kernels/rnn-grader/kernel.json, found without
installing it), whose launcher grader/confine.py applies, before starting ipykernel:

- resource limits: address space (``memory_limit``), CPU seconds (``cpu_limit``: the cell running when it is
  reached fails with ``CPUTimeExceeded``, a few seconds later the kernel is killed), file size, no core dumps,
  and processes/threads (``process_limit``: the kernel counts as a dedicated user, so only with ``user``);
- a new network namespace (no network, loopback down): the kernel talks to nbgrader over unix sockets (ipc);
- a new mount namespace hiding the course's secrets (solutions/, submitted/, autograded/, feedback/, .git,
  the gradebook) behind empty read-only mounts, and a private writable copy of the notebook's folder;
- an unprivileged ``user`` (default "nobody"): the process cap counts, and nothing of the instructor's is
  writable.

Each protection that the machine refuses is skipped, never failing the grading, and one log line on the
kernel's stderr (shown by nbgrader) names the protections that are on and off.

Inside the kernel, ConfinedExecute also

- snapshots the modules the tests rely on (``GUARDED``) and the notebook's names bound to them or to their
  functions (``np``, ``checks``, ...) before the first answer cell, and silently puts them back before each
  test cell: an answer that replaces ``checks.assert_close``, ``rnp.lstm_forward`` or
  ``np.testing.assert_allclose``, or rebinds ``checks``, is undone before the tests run. The snapshot lives
  in the learner's process: code written against this grader can still reach and spoil it (containers do
  not change that; only running the tests in another process would);
- survives a kernel that dies (``os._exit``, a crash): that cell gets an error output (0 for its tests), a
  fresh kernel replays the code cells before it silently, and grading goes on (at most ``max_restarts``).
"""

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import DeadKernelError
from nbformat import NotebookNode
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import Execute, NbGraderPreprocessor, OverwriteCells, SaveAutoGrades
from traitlets import Bool, Integer, Unicode, default

from grader.confine import SETTINGS

KERNEL_NAME = "rnn-grader"
KERNELS = Path(__file__).parent / "kernels"
GUARDED = ("rnnlib.checks", "rnnlib.numpy", "rnnlib.equations", "rnnlib.torch", "numpy", "numpy.testing",
           "torch", "torch.testing", "torch.nn.functional", "builtins", "math")  # fmt: skip

# Run in the kernel: a hidden module "_rnn_grader_guard" holding the snapshot and its restore().
SNAPSHOT = f"""
def _rnn_grader_snapshot():
    import sys, types
    modules = {{n: sys.modules[n] for n in {GUARDED!r} if n in sys.modules}}
    saved = {{n: dict(vars(m)) for n, m in modules.items()}}
    ns = get_ipython().user_ns
    names = {{k: v for k, v in ns.items() if not k.startswith("_")
             and (isinstance(v, types.ModuleType) or getattr(v, "__module__", None) in modules)}}
    def restore():
        for n, m in modules.items():
            sys.modules[n] = m
            vars(m).update((k, v) for k, v in saved[n].items() if vars(m).get(k, restore) is not v)
        ns.update((k, v) for k, v in names.items() if ns.get(k, restore) is not v)
    sys.modules["_rnn_grader_guard"] = types.SimpleNamespace(restore=restore)
_rnn_grader_snapshot()
del _rnn_grader_snapshot
"""
RESTORE = "__import__('_rnn_grader_guard').restore()"


class GraderKernelManager(AsyncKernelManager):
    """Finds the rnn-grader kernelspec, talks to the kernel over unix sockets, passes the limits on."""

    memory_limit = Integer(4 * 2**30, help="Address-space cap in bytes (RLIMIT_AS).").tag(config=True)
    cpu_limit = Integer(300, help="CPU seconds for a whole notebook (RLIMIT_CPU).").tag(config=True)
    process_limit = Integer(64, help="Processes and threads of the user (RLIMIT_NPROC).").tag(config=True)
    file_size_limit = Integer(256 * 2**20, help="Largest file written (RLIMIT_FSIZE).").tag(config=True)
    user = Unicode("nobody", help="User to run as when root ('': no change).").tag(config=True)
    isolate_network = Bool(True, help="Run the kernel in a new network namespace.").tag(config=True)
    hide_course = Bool(True, help="Hide the course's solutions, submissions and gradebook.").tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # ipc: the sockets are files, reachable from a kernel in another network namespace
        self._private = Path(tempfile.mkdtemp(prefix="rnn-grader-"))
        self.transport, self.ip = "ipc", str(self._private / "kernel")

    @default("kernel_spec_manager")
    def _kernel_spec_manager_default(self) -> KernelSpecManager:
        manager = KernelSpecManager(parent=self)
        manager.kernel_dirs = [str(KERNELS), *manager.kernel_dirs]
        return manager

    def secrets(self) -> list[str]:
        """The course paths the kernel must not see: solutions, every submission, feedback, git, gradebook."""
        course = CourseDirectory(config=self.config)
        root = Path(course.root)
        names = [course.source_directory, course.submitted_directory, course.autograded_directory]
        paths = [root / name for name in (*names, course.feedback_directory, ".git")]
        if course.db_url.startswith("sqlite:///"):
            paths.append(Path(course.db_url.removeprefix("sqlite:///")))
        return [str(p) for p in paths if p.exists()]

    async def start_kernel(self, **kw: Any) -> None:  # type: ignore[override]
        settings = {
            "memory": self.memory_limit,
            "cpu": self.cpu_limit,
            "processes": self.process_limit,
            "file_size": self.file_size_limit,
            "user": self.user,
            "network": not self.isolate_network,
            "hide": self.secrets() if self.hide_course else [],
        }
        env = dict(kw.pop("env", None) or os.environ, **{SETTINGS: json.dumps(settings)})
        await super().start_kernel(env=env, **kw)

    async def cleanup_resources(self, restart: bool = False) -> None:  # type: ignore[override]
        await super().cleanup_resources(restart=restart)
        if not restart:
            shutil.rmtree(self._private, ignore_errors=True)


class ConfinedExecute(Execute):
    """nbgrader's Execute in the rnn-grader kernel; ``--ConfinedExecute.kernel_name=python3`` turns it off."""

    kernel_name = Unicode(KERNEL_NAME, help="The kernel autograde runs submissions in.").tag(config=True)
    max_restarts = Integer(3, help="Fresh kernels per notebook after the kernel died.").tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("kernel_manager_class", GraderKernelManager)
        super().__init__(**kwargs)

    def preprocess(self, nb: NotebookNode, resources: Any = None, km: Any = None) -> tuple:
        self._snapshot_taken, self._restarts, self._dead = False, 0, set()
        return super().preprocess(nb, resources, km)

    def preprocess_cell(self, cell: NotebookNode, resources: Any, index: int) -> tuple:
        try:
            self._guard(cell)
            return super().preprocess_cell(cell, resources, index)
        except DeadKernelError:
            self._dead.add(index)
            cell.outputs.append(NotebookNode(
                output_type="error", ename="DeadKernelError", evalue="the kernel died running this cell",
                traceback=["DeadKernelError: the kernel died running this cell (os._exit? a crash?); "
                           "graded 0, the notebook goes on in a fresh kernel"]))  # fmt: skip
            self._restart(index)
            return cell, self.resources

    def _guard(self, cell: NotebookNode) -> None:
        """Snapshot before the first answer or test cell runs; put the snapshot back before each test cell."""
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or not (meta.get("solution") or meta.get("grade")):
            return
        if self._snapshot_taken and not meta.get("grade"):
            return
        reply = self._silently(RESTORE if self._snapshot_taken else SNAPSHOT)
        self._snapshot_taken = True
        if reply is None or reply["content"]["status"] != "ok":
            self.log.warning("The grader's snapshot failed in the kernel: %s", reply and reply["content"])

    def _silently(self, code: str) -> dict | None:
        """Run ``code`` in the kernel with no trace in the notebook; a kernel death is the caller's."""
        return self.wait_for_reply(self.kc.execute(code, silent=True, store_history=False))

    def _restart(self, index: int) -> None:
        """A fresh kernel with the code cells before ``index`` replayed silently (those that died skipped)."""
        while True:
            self._restarts += 1
            if self._restarts > self.max_restarts:
                raise DeadKernelError(f"Kernel died more than {self.max_restarts} times")
            self.log.warning(
                "The kernel died in cell %d: its tests score 0; a fresh kernel (%d of at most %d) replays "
                "the cells before it", index, self._restarts, self.max_restarts)  # fmt: skip
            self._cleanup_kernel()
            self.km = self.create_kernel_manager()
            self.start_new_kernel()
            self.start_new_kernel_client()
            self._snapshot_taken = False
            try:
                for i, earlier in enumerate(self.nb.cells[:index]):
                    if earlier.cell_type == "code" and i not in self._dead and not timed_out(earlier):
                        self._replay(i, earlier)
                return
            except DeadKernelError:
                continue

    def _replay(self, index: int, cell: NotebookNode) -> None:
        self._guard(cell)
        try:
            self._silently(cell.source)
        except DeadKernelError:
            self._dead.add(index)
            raise


def timed_out(cell: NotebookNode) -> bool:
    return any(o.get("ename") == "CellTimeoutError" for o in cell.get("outputs", []))


# Three changes to nbgrader 0.9.6's autograde steps, each found by tests/test_grading_matrix.py:
# - A deleted test cell is put back from the gradebook and graded (nbgrader's add_missing_cells, off by
#   default, left it at 0 points "needing manual grading" forever). nbgrader's own version raises KeyError
#   when the cell before the deleted one is locked but not graded (a demo cell); RestoreDeletedCells puts each
#   missing graded cell after the nearest earlier cell of the source that the submission still has.
# - A submission that duplicates a cell (same grade_id twice) must not stop the batch. DeduplicateIds empties
#   the metadata of the extra copies to {}, which CheckCellMetadata takes for an old metadata format: it
#   aborts the whole `nbgrader autograde` run, leaving every later student ungraded. DropEmptiedMetadata
#   removes that metadata entirely (the extra copies run as plain code; the last copy is graded).
# - A test cell scores 0 if it errors, not because something printed to stderr (a library's warning): nbgrader
#   counts any stderr output as a failure. Every error, even with tracebacks hidden by the learner, is still
#   an "error" output (nbgrader adds one from the kernel's reply).


class DropEmptiedMetadata(NbGraderPreprocessor):
    """Remove the empty nbgrader metadata DeduplicateIds leaves on a duplicated cell."""

    def preprocess_cell(self, cell, resources, index):
        if cell.metadata.get("nbgrader") == {}:
            del cell.metadata["nbgrader"]
        return cell, resources


class RestoreDeletedCells(OverwriteCells):
    """OverwriteCells that also puts back the graded cells a submission deleted."""

    add_missing_cells = Bool(True).tag(config=True)

    def add_missing_grade_cells(self, nb, resources):
        source = self.gradebook.find_notebook(self.notebook_id, self.assignment_id)
        order = [cell.name for cell in source.source_cells]
        answers = {cell.name for cell in source.solution_cells}
        for grade_cell in sorted(source.grade_cells, key=lambda cell: order.index(cell.name)):
            where = {cell.metadata.get("nbgrader", {}).get("grade_id"): i for i, cell in enumerate(nb.cells)}
            if grade_cell.name in where:
                continue
            self.log.warning("Missing grade cell %s: put back from the gradebook", grade_cell.name)
            index = order.index(grade_cell.name)
            restored = self.missing_cell_transform(
                source.source_cells[index], grade_cell.max_score, is_solution=grade_cell.name in answers
            )
            after = [where[name] + 1 for name in order[:index] if name in where]
            nb.cells.insert(max(after, default=0), restored)
        return nb, resources


class SaveAutoGradesIgnoringStderr(SaveAutoGrades):
    """SaveAutoGrades looking at a cell's errors only, not at its stderr stream (the outputs are kept)."""

    def preprocess_cell(self, cell, resources, index):
        outputs = cell.get("outputs")
        if outputs is None:
            return super().preprocess_cell(cell, resources, index)
        cell.outputs = [o for o in outputs if not (o.output_type == "stream" and o.get("name") == "stderr")]
        try:
            return super().preprocess_cell(cell, resources, index)
        finally:
            cell.outputs = outputs
