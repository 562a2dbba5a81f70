"""Autograde in two processes: learner code in a throwaway sandbox, the tests in a trusted process.

nbgrader runs the tests of a notebook in the learner's own kernel, where code written against the tests can
reach and change them. ``SplitExecute`` (nbgrader's Execute for autograde, wired in nbgrader_config.py;
validate and JupyterLab keep the plain kernel) runs each code cell of a submission in one of two places:

- the **sandbox** (grader.sandbox: bubblewrap, a uid and a cgroup of its own, made for this submission and
  destroyed after it): the answer cells and the notebook's other cells, as submitted;
- the **trusted kernel** (a plain python3 kernel that never runs learner code, kept warm across submissions
  and reset for each notebook): each test cell, visible and hidden, taken from the assignment's source
  notebook by its grade_id, after the source's setup cells (imports, helpers, constants: the locked cells
  that use no name an answer defines).

A test reads the learner's work through grader.channel only: before each test cell, the names that the
source's answer cells define are bound in the trusted namespace, functions as proxies that call them in
the sandbox (grader.trusted / grader.agent) and values as plain data. The test cell's outputs are recorded
in the submission as nbgrader expects, so gradebook, feedback and export stay nbgrader's. The hidden tests
never enter the sandbox, and the reference implementations are not in it (grader.references).

A sandbox kernel that dies (``os._exit``, the memory cap) gives that cell an error output (0 for its tests);
a fresh sandbox replays the code cells before it silently, and grading goes on (at most ``max_restarts``).
"""

import ast
import asyncio
import atexit
import json
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager, KernelManager
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbclient.util import run_sync
from nbformat import NotebookNode
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import Execute, NbGraderPreprocessor, OverwriteCells, SaveAutoGrades
from traitlets import Bool, Float, Integer, List, Unicode, default
from traitlets.config import Application

from grader.sandbox import BASE, OPT_OUTS, SETTINGS, lock

KERNEL_NAME = "rnn-grader"
KERNELS = Path(__file__).parent / "kernels"
SERVE_GRACE = 10  # seconds the sandbox gets to finish its part after a test cell, before an interrupt


class SandboxKernelManager(AsyncKernelManager):
    """Starts the rnn-grader kernel (grader.sandbox) of one submission, over unix sockets, with its limits."""

    memory_limit = Integer(4 * 2**30, help="Resident memory of the sandbox in bytes (cgroup).").tag(
        config=True
    )
    cpu_limit = Integer(300, help="CPU seconds of the sandbox's kernel for a whole notebook.").tag(
        config=True
    )
    process_limit = Integer(64, help="Processes and threads in the sandbox (cgroup pids).").tag(config=True)
    file_size_limit = Integer(256 * 2**20, help="Largest file written (RLIMIT_FSIZE).").tag(config=True)
    allow_without = List(
        Unicode(), help=f"Protections to grade without when the machine lacks them, among {OPT_OUTS}: every "
        "log line then says so. Empty (the default): grading refuses to start without them."
    ).tag(config=True)  # fmt: skip
    assignment = Unicode("", help="The assignment graded (set by SplitExecute).")
    # A sandbox's kernel exits in about 0.2 s when asked; now and then it does not, and jupyter_client would
    # wait 5 s before its SIGTERM (on which the launcher kills the sandbox and cleans up).
    shutdown_wait_time = Float(1.0, help="Seconds a kernel gets to exit before SIGTERM.").tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        BASE.mkdir(mode=0o711, parents=True, exist_ok=True)
        # ipc: the sockets are files, reachable in the sandbox's own network namespace
        self.private = Path(tempfile.mkdtemp(prefix="k-", dir=BASE))
        self.private.chmod(0o700)
        self._lock = lock(self.private)  # released when this grading ends, however: then it may be swept
        self.transport, self.ip = "ipc", str(self.private / "kernel")

    @default("kernel_spec_manager")
    def _kernel_spec_manager_default(self) -> KernelSpecManager:
        manager = KernelSpecManager(parent=self)
        manager.kernel_dirs = [str(KERNELS), *manager.kernel_dirs]
        return manager

    async def start_kernel(self, **kw: Any) -> None:  # type: ignore[override]
        unknown = set(self.allow_without) - set(OPT_OUTS)
        if unknown:
            raise ValueError(f"allow_without: unknown protections {sorted(unknown)} (known: {OPT_OUTS})")
        settings = {"memory": self.memory_limit, "cpu": self.cpu_limit, "processes": self.process_limit,
                    "file_size": self.file_size_limit, "allow_without": self.allow_without,
                    "assignment": self.assignment}  # fmt: skip
        env = dict(kw.pop("env", None) or os.environ, **{SETTINGS: json.dumps(settings)})
        await super().start_kernel(env=env, **kw)

    async def cleanup_resources(self, restart: bool = False) -> None:  # type: ignore[override]
        await super().cleanup_resources(restart=restart)
        if not restart:
            self.release()

    def release(self) -> None:
        """Remove the kernel's private folder and give up its lock (idempotent)."""
        shutil.rmtree(self.private, ignore_errors=True)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def defined_names(source: str) -> set[str]:
    """The global names a cell binds at top level (functions, classes, assignments, imports)."""
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        else:
            names |= {
                n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
            }
    return names


def used_names(source: str) -> set[str]:
    return {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)}


class Plan:
    """What the assignment's source notebook says: test code by grade_id, setup cells, the answers' names."""

    def __init__(self, source: NotebookNode) -> None:
        self.learner_names: set[str] = set()
        self.tests: dict[str, str] = {}
        self.order: list[tuple[str, str]] = []  # (kind, code) in source order: "setup" or "test:<grade_id>"
        cells = [c for c in source.cells if c.cell_type == "code"]
        for cell in cells:
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("solution"):
                self.learner_names |= defined_names(_python(cell.source))
        for cell in cells:
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("solution"):
                continue
            if meta.get("grade"):
                self.tests[meta["grade_id"]] = cell.source
                self.order.append((f"test:{meta['grade_id']}", cell.source))
            elif not used_names(_python(cell.source)) & self.learner_names:
                self.order.append(("setup", cell.source))

    def setup_before(self, grade_id: str) -> list[str]:
        """The setup cells that come before the test ``grade_id`` in the source."""
        index = self.order.index((f"test:{grade_id}", self.tests[grade_id]))
        return [code for kind, code in self.order[:index] if kind == "setup"]


def _python(source: str) -> str:
    """A cell's source with IPython's magics and shell escapes commented out, for the ast module."""
    return "\n".join(
        "#" + line if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()
    )


class SplitExecute(Execute):
    """Answer cells in a per-submission sandbox, test cells in a trusted kernel (see the module docstring)."""

    kernel_name = Unicode(KERNEL_NAME, help="The sandbox kernel learner code runs in.").tag(config=True)
    trusted_kernel_name = Unicode("python3", help="The kernel the tests run in.").tag(config=True)
    max_restarts = Integer(3, help="Fresh sandboxes per notebook after the kernel died.").tag(config=True)
    _trusted: tuple[KernelManager, Any] | None = None  # (manager, client), shared by the process's instances

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("kernel_manager_class", SandboxKernelManager)
        super().__init__(**kwargs)

    # --- the notebook ---------------------------------------------------------------------------------

    def preprocess(self, nb: NotebookNode, resources: Any = None, km: Any = None) -> tuple:
        names = resources["nbgrader"]
        self._assignment = names["assignment"]
        coursedir = CourseDirectory(config=self.config)
        path = Path(coursedir.format_path(coursedir.source_directory, ".", names["assignment"]))
        path = path / f"{names['notebook']}.ipynb"
        if not path.exists():
            raise FileNotFoundError(f"the source notebook {path} is needed: the tests are taken from it")
        self._plan = Plan(nbformat.read(path, as_version=4))
        self._restarts, self._dead, self._setup_done, self._given_up = 0, set(), 0, False
        self._trusted_kernel()
        self._in_trusted("get_ipython().reset(new_session=False)")
        self._managers: list[SandboxKernelManager] = []
        try:
            return super().preprocess(nb, resources, km)
        finally:  # a sandbox whose kernel died is not always shut down by nbclient
            for manager in self._managers:
                if isinstance(manager, SandboxKernelManager):
                    manager.release()

    def create_kernel_manager(self) -> KernelManager:
        km = super().create_kernel_manager()
        km.assignment = self._assignment
        self._managers.append(km)
        return km

    def preprocess_cell(self, cell: NotebookNode, resources: Any, index: int) -> tuple:
        if cell.cell_type != "code":
            return cell, self.resources
        if self._given_up:
            cell.outputs = [_error("SandboxGivenUp", f"the sandbox died {self._restarts} times: not run")]
            return cell, self.resources
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        try:
            if grade_id in self._plan.tests:
                return self._test(cell, index, grade_id), self.resources
            return super().preprocess_cell(cell, resources, index)
        except (DeadKernelError, CellTimeoutError):  # dead, or so broken it no longer sends its outputs
            self._dead.add(index)
            cell.outputs.append(
                _error(
                    "DeadKernelError",
                    "the sandbox's kernel died in this cell (os._exit? "
                    "the memory cap?): graded 0, the notebook goes on in a fresh sandbox",
                )
            )
            self._restart(index)
            return cell, self.resources

    # --- a test cell, in the trusted kernel ---------------------------------------------------------------

    def _test(self, cell: NotebookNode, index: int, grade_id: str) -> NotebookNode:
        setup = self._plan.setup_before(grade_id)
        for code in setup[self._setup_done :]:
            self._in_trusted(code)
        self._setup_done = max(self._setup_done, len(setup))
        shown, cell.source = cell.source, self._plan.tests[grade_id]  # run the source's test, hidden part in
        socket = str(self.km.private / "agent.sock")
        serving = self.kc.execute(f"__import__('grader.agent').agent.serve({socket!r})", silent=True,
                                  store_history=False)  # fmt: skip
        names = sorted(self._plan.learner_names)
        self._in_trusted(f"__import__('grader.trusted').trusted.bind({socket!r}, {names!r}, globals())")
        sandbox = self.km, self.kc
        self.km, self.kc = self._trusted
        try:
            cell = self.execute_cell(cell, index, store_history=False)
        finally:
            self.km, self.kc = sandbox
            cell.source = shown  # as nbgrader restored it (with its note when the learner had deleted it)
            self._in_trusted("__import__('grader.trusted').trusted.release()")
        self._finish_serving(serving)
        return cell

    def _finish_serving(self, msg_id: str) -> None:
        """Wait for the sandbox's part of a test; interrupt it if it runs on; DeadKernelError if gone."""
        for attempt in range(2):
            try:
                run_sync(_reply)(self.kc, msg_id, SERVE_GRACE)
                return
            except TimeoutError:
                if not run_sync(self.km.is_alive)():
                    break
                if attempt == 0:
                    run_sync(self.km.interrupt_kernel)()
        raise DeadKernelError("the sandbox did not come back after a test cell")

    def _trusted_kernel(self) -> None:
        """The trusted kernel of this process: nbgrader makes a new SplitExecute for every notebook, so the
        kernel is kept at class level, started once, reused by every notebook and shut down at exit."""
        trusted = SplitExecute._trusted
        if trusted is not None and run_sync(trusted[0].is_alive)():
            return
        km = AsyncKernelManager(kernel_name=self.trusted_kernel_name)
        run_sync(km.start_kernel)(
            extra_arguments=["--HistoryManager.enabled=False"],
            cwd=tempfile.gettempdir(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        kc = km.client()
        kc.start_channels()
        run_sync(kc.wait_for_ready)(timeout=self.startup_timeout)
        SplitExecute._trusted = km, kc
        atexit.register(lambda: (kc.stop_channels(), run_sync(km.shutdown_kernel)(now=True)))

    def _in_trusted(self, code: str) -> None:
        """Run trusted code (setup cells, the channel's bind and release) silently in the trusted kernel."""
        km, kc = self._trusted
        reply = run_sync(_reply)(kc, kc.execute(code, silent=True, store_history=False), self.timeout)
        if reply["content"]["status"] != "ok":
            self.log.warning(
                "trusted kernel: %s: %s", reply["content"].get("ename"), reply["content"].get("evalue")
            )

    # --- a dead sandbox -------------------------------------------------------------------------------

    def _silently(self, code: str) -> dict | None:
        """Run ``code`` in the sandbox with no trace in the notebook; a kernel death is the caller's."""
        return self.wait_for_reply(self.kc.execute(code, silent=True, store_history=False))

    def _restart(self, index: int) -> None:
        """A fresh sandbox, the sandbox cells before ``index`` replayed silently (those that died skipped)."""
        while True:
            self._restarts += 1
            if self._restarts > self.max_restarts:
                self.log.warning(
                    "The sandbox died %d times: the cells from %d on score 0", self._restarts, index
                )
                self._given_up = True
                return
            self.log.warning(
                "The sandbox's kernel died in cell %d: its tests score 0; a fresh sandbox (%d of at most %d) "
                "replays the cells before it", index, self._restarts, self.max_restarts)  # fmt: skip
            self._cleanup_kernel()
            self.km = self.create_kernel_manager()
            self.start_new_kernel()
            self.start_new_kernel_client()
            try:
                for i, earlier in enumerate(self.nb.cells[:index]):
                    grade_id = earlier.metadata.get("nbgrader", {}).get("grade_id")
                    if (
                        earlier.cell_type == "code"
                        and i not in self._dead
                        and grade_id not in self._plan.tests
                        and not timed_out(earlier)
                    ):
                        self._replay(i, earlier)
                return
            except DeadKernelError:
                continue

    def _replay(self, index: int, cell: NotebookNode) -> None:
        try:
            self._silently(cell.source)
        except (DeadKernelError, CellTimeoutError):  # dead, or so broken it no longer sends its outputs
            self._dead.add(index)
            raise


async def _reply(kc: Any, msg_id: str, timeout: float | None) -> dict:
    """The shell reply to ``msg_id`` (other replies are dropped); TimeoutError after ``timeout`` seconds."""

    async def reply() -> dict:
        while True:
            msg = await kc.shell_channel.get_msg(timeout=None)
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg

    try:
        return await asyncio.wait_for(reply(), timeout)
    except asyncio.TimeoutError:
        raise TimeoutError(f"no reply in {timeout} s") from None


def opt_outs(config: Any) -> list[str]:
    """The protections an instructor opted out of, from a config (a list, or its text on the command line)."""
    value = config.SandboxKernelManager.get("allow_without", [])
    if isinstance(value, str):
        value = ast.literal_eval(value) if value.lstrip().startswith("[") else [value]
    return list(value)


def mark_unsafe_log() -> None:
    """While an opt-out is in force in the running application, every log line starts by saying so."""
    make = logging.getLogRecordFactory()

    def record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        entry = make(*args, **kwargs)
        missing = opt_outs(Application.instance().config) if Application.initialized() else []
        if missing:
            entry.msg = f"[UNSAFE: grading without {' and '.join(missing)}] {entry.msg}"
        return entry

    logging.setLogRecordFactory(record)


def _error(name: str, text: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=name, evalue=text, traceback=[f"{name}: {text}"])


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
