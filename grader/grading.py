"""Autograde in two processes: learner code in a throwaway sandbox, the tests in a trusted process.

nbgrader runs the tests of a notebook in the learner's own kernel, where code written against the tests can
reach and change them. ``SplitExecute`` (nbgrader's Execute for autograde, wired in nbgrader_config.py;
validate and JupyterLab keep the plain kernel) runs each code cell of a submission in one of two places:

- the **sandbox** (grader.sandbox: bubblewrap, a uid and a cgroup of its own, made for this submission and
  destroyed after it): the answer cells and the notebook's other cells, as submitted;
- the **trusted kernel** (a plain python3 kernel that never runs learner code, kept warm across submissions
  and reset for each notebook): each test cell, visible and hidden, taken from the assignment's source
  notebook by its grade_id, after the source's setup cells (imports, helpers, constants: the locked cells
  that use no name an answer defines; the first of them run while the sandbox starts). A locked cell that
  only the tests need runs there too, in place (``Plan.helpers``); one whose names nothing reads (a demo of
  the library) runs once per grading process, later notebooks get a copy of its outputs (``Plan.demos``).

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
import copy
import hashlib
import json
import logging
import os
import subprocess
import tempfile
import time
import traceback
from pathlib import Path
from queue import Empty
from typing import Any

import nbformat
from jsonschema import ValidationError
from jsonschema.validators import validator_for
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager, KernelManager
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbclient.util import run_sync
from nbformat import NotebookNode
from nbgrader.coursedir import CourseDirectory
from nbgrader.nbgraderformat.common import BaseMetadataValidator
from nbgrader.nbgraderformat.v3 import MetadataValidatorV3
from nbgrader.preprocessors import (
    CheckCellMetadata,
    Execute,
    NbGraderPreprocessor,
    OverwriteCells,
    SaveAutoGrades,
)
from traitlets import Bool, Float, Integer, List, Unicode, default
from traitlets.config import Application

from grader.sandbox import BASE, OPT_OUTS, SETTINGS, private_folder, remove

KERNEL_NAME = "rnn-grader"
KERNELS = Path(__file__).parent / "kernels"
SERVE_GRACE = 10  # seconds the sandbox gets to finish its part after a test cell, before an interrupt
# The trusted kernel's reset for each notebook. IPython's reset collects garbage before it clears the
# namespace, so a notebook's cycles are only freed by the next full collection, which scans every object of
# torch and the other modules loaded (0.1 s of CPU, a tenth of grading a notebook of exercise 1). Here the
# notebook's garbage is collected at once, and gc.freeze() leaves what survives (modules, mostly) out of
# later collections.
RESET = "get_ipython().reset(new_session=False); __import__('gc').collect(); __import__('gc').freeze()"


class ReadyClient(AsyncKernelClient):
    """jupyter_client's client, ready as soon as the kernel has answered kernel_info on the shell channel and
    IOPub carries its messages. jupyter_client then also waits until IOPub has been quiet for 0.2 s (its
    "flush"): 0.2 s of nothing per kernel start, a fifth of grading a notebook of exercise 1. Nothing needs
    the flush here: nbclient and ``_reply`` match every message to their own request and drop the others."""

    async def wait_for_ready(self, timeout: float | None = None) -> None:  # type: ignore[override]
        deadline = time.monotonic() + (float("inf") if timeout is None else timeout)
        while True:
            self.kernel_info()
            try:
                msg = await self.shell_channel.get_msg(timeout=1)
                if msg["msg_type"] == "kernel_info_reply":
                    await self.iopub_channel.get_msg(timeout=0.2)  # IOPub is connected: Empty if not yet
                    self._handle_kernel_info_reply(msg)
                    return
            except Empty:
                pass
            if not await self._async_is_alive():
                raise RuntimeError("Kernel died before replying to kernel_info")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kernel didn't respond in {timeout:g} seconds")


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
    # A sandbox is thrown away whole, so it is not asked to shut down (the learner's kernel, asked, often took
    # longer than jupyter_client's wait): the launcher gets SIGTERM at once, kills the sandbox and cleans up.
    shutdown_wait_time = Float(10.0, help="Seconds the launcher gets to clean up before SIGKILL.").tag(
        config=True
    )

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("client_class", f"{__name__}.ReadyClient")
        super().__init__(**kwargs)
        BASE.mkdir(mode=0o711, parents=True, exist_ok=True)
        # ipc: the sockets are files, reachable in the sandbox's own network namespace
        # locked until this grading ends, however it ends: then it may be swept
        self.private, self._lock = private_folder()
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

    async def _async_request_shutdown(self, restart: bool = False) -> None:
        """Shutting down is the launcher's SIGTERM, not a message to the kernel (see shutdown_wait_time)."""
        await self.provisioner.terminate(restart=restart)

    async def _async_finish_shutdown(self, waittime: float | None = None, pollinterval: float = 0.01,
                                     restart: bool = False) -> None:  # fmt: skip
        """jupyter_client's wait for the launcher to end, polling every 10 ms instead of every 100 ms."""
        await super()._async_finish_shutdown(waittime, pollinterval, restart)

    async def cleanup_resources(self, restart: bool = False) -> None:  # type: ignore[override]
        await super().cleanup_resources(restart=restart)
        if not restart:
            self.release()

    def release(self) -> None:
        """Remove the kernel's private folder, and what its launcher left if it was killed (the view, the
        cgroup), then give up its lock (idempotent)."""
        remove(self.private)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def _binds(node: ast.stmt) -> set[str]:
    """The global names one top-level statement binds."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {node.name}
    if isinstance(node, ast.Import | ast.ImportFrom):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


def defined_names(source: str) -> set[str]:
    """The global names a cell binds at top level (functions, classes, assignments, imports)."""
    return set().union(*(_binds(node) for node in ast.parse(source).body))


def used_names(source: str) -> set[str]:
    return {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)}


def outside_names(source: str) -> set[str]:
    """The names a cell reads before binding them itself: what it needs from the cells before it."""
    bound: set[str] = set()
    needed: set[str] = set()
    for node in ast.parse(source).body:
        loads = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        needed |= loads - bound
        bound |= _binds(node)
    return needed


class Plan:
    """What the assignment's source notebook says: test code by grade_id, setup cells, the answers' names."""

    def __init__(self, source: NotebookNode) -> None:
        self.learner_names: set[str] = set()
        self.tests: dict[str, str] = {}
        self.helpers: dict[str, str] = {}  # grade_id -> code of the locked cells the sandbox does not need
        # (kind, grade_id, code) in source order, kind "setup", "helper" or "test"
        self.order: list[tuple[str, str | None, str]] = []
        cells = [c for c in source.cells if c.cell_type == "code"]
        for cell in cells:
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("solution"):
                self.learner_names |= defined_names(_python(cell.source))
        locked, sandbox_cells = {}, []
        for cell in cells:
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("solution"):
                sandbox_cells.append(cell.source)
            elif meta.get("grade"):
                self.tests[meta["grade_id"]] = cell.source
                self.order.append(("test", meta["grade_id"], cell.source))
            else:
                if not used_names(_python(cell.source)) & self.learner_names:
                    self.order.append(("setup", meta.get("grade_id"), cell.source))
                    if meta.get("locked") and meta.get("grade_id") and defined_names(_python(cell.source)):
                        locked[meta["grade_id"]] = cell.source
                        continue
                sandbox_cells.append(cell.source)
        # A locked setup cell whose names no sandbox cell reads (the tests' helpers) runs in the trusted
        # kernel only, in place: the sandbox then needs none of what the tests use (torch, say).
        while True:
            read = set().union(*(outside_names(_python(code)) for code in sandbox_cells))
            needed = {gid for gid, code in locked.items() if defined_names(_python(code)) & read}
            if not needed:
                break
            sandbox_cells += [locked.pop(gid) for gid in needed]
        self.helpers = locked
        self.order = [("helper" if gid in locked else kind, gid, code) for kind, gid, code in self.order]
        # A helper whose names no other cell of the trusted kernel reads, and which uses nothing a test cell
        # defines (a test's functions call the learner's), gives every submission the same outputs: a demo of
        # the library (a figure, a table). It runs once per grading process (SplitExecute), its outputs kept
        # under a key of all the code run up to it (what the trusted kernel's state then depends on).
        read = [(gid, used_names(_python(code))) for _, gid, code in self.order]
        tests = set().union(*(defined_names(_python(code)) for code in self.tests.values()))
        self.demos: dict[str, str] = {}  # grade_id -> key
        for position, (_, gid, _) in enumerate(self.order):
            code = locked.get(gid)
            if code is None or used_names(_python(code)) & tests:
                continue
            if not defined_names(_python(code)) & set().union(*(r for g, r in read if g != gid)):
                run = "\0".join(c for _, _, c in self.order[: position + 1])
                self.demos[gid] = hashlib.sha256(run.encode()).hexdigest()

    def position(self, kind: str, grade_id: str) -> int:
        """Where the test or helper ``grade_id`` is in ``order``."""
        return next(i for i, (k, gid, _) in enumerate(self.order) if (k, gid) == (kind, grade_id))


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
    coalesce_streams = Bool(
        True,
        help="One stdout and one stderr output per cell: how a kernel splits a cell's prints into messages "
        "depends on timing, and a submission's feedback should not (nbclient's trait, on here).",
    ).tag(config=True)
    _trusted: tuple[KernelManager, Any] | None = None  # (manager, client), shared by the process's instances
    _demo_outputs: dict[str, tuple] = {}  # a demo's key (Plan.demos) -> (outputs, execution_count), likewise
    _plans: dict[tuple[str, int], Plan] = {}  # (source notebook, its mtime) -> its Plan, shared likewise

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
        key = str(path), path.stat().st_mtime_ns
        if key not in SplitExecute._plans:
            SplitExecute._plans[key] = Plan(nbformat.read(path, as_version=4))
        self._plan = SplitExecute._plans[key]
        self._restarts, self._dead, self._done, self._given_up = 0, set(), 0, False
        self._trusted_kernel()
        self._sent: list[str] = []
        self._send_trusted(RESET)
        for kind, _, code in self._plan.order:  # the leading setup cells too: run while the sandbox starts
            if kind != "setup":
                break
            self._send_trusted(code)
            self._done += 1
        self._managers: list[SandboxKernelManager] = []
        try:
            return super().preprocess(nb, resources, km)
        finally:  # a sandbox whose kernel died is not always shut down by nbclient
            for manager in self._managers:
                if isinstance(manager, SandboxKernelManager):
                    manager.release()
            self._settle()

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
            if grade_id in self._plan.helpers:
                return self._helper(cell, index, grade_id), self.resources
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

    def _catch_up(self, position: int) -> None:
        """Run the source's setup and helper cells before ``position`` of the plan in the trusted kernel (not
        the demos: nothing reads their names)."""
        for kind, grade_id, code in self._plan.order[self._done : position]:
            if kind != "test" and grade_id not in self._plan.demos:
                self._in_trusted(code)
        self._done = max(self._done, position)

    def _helper(self, cell: NotebookNode, index: int, grade_id: str) -> NotebookNode:
        """A cell of ``Plan.helpers`` (a helper of the tests, a demo of the library): the source's code, run
        in place in the trusted kernel; a demo run before in this process gets a copy of its outputs."""
        position = self._plan.position("helper", grade_id)
        demo = self._plan.demos.get(grade_id)
        if demo in SplitExecute._demo_outputs:
            cell.outputs, cell.execution_count = copy.deepcopy(SplitExecute._demo_outputs[demo])
            return cell
        self._catch_up(position)
        cell = self._in_trusted_cell(cell, index, self._plan.helpers[grade_id])
        self._done = max(self._done, position + 1)
        if demo and not any(output.output_type == "error" for output in cell.outputs):
            SplitExecute._demo_outputs[demo] = copy.deepcopy((cell.outputs, cell.execution_count))
        return cell

    def _test(self, cell: NotebookNode, index: int, grade_id: str) -> NotebookNode:
        self._catch_up(self._plan.position("test", grade_id))
        socket = str(self.km.private / "agent.sock")
        serving = self.kc.execute(f"__import__('grader.agent').agent.serve({socket!r})", silent=True,
                                  store_history=False)  # fmt: skip
        names = sorted(self._plan.learner_names)
        self._in_trusted(f"__import__('grader.trusted').trusted.bind({socket!r}, {names!r}, globals())")
        try:  # the source's test, its hidden part in
            cell = self._in_trusted_cell(cell, index, self._plan.tests[grade_id])
        finally:
            self._in_trusted("__import__('grader.trusted').trusted.release()")
        self._finish_serving(serving)
        return cell

    def _in_trusted_cell(self, cell: NotebookNode, index: int, code: str) -> NotebookNode:
        """Execute the source's ``code`` as ``cell`` in the trusted kernel, outputs recorded in the cell; the
        cell keeps the source it was shown with (as nbgrader restored it, with its note if it was deleted)."""
        self._settle()
        shown, cell.source = cell.source, code
        sandbox = self.km, self.kc
        self.km, self.kc = self._trusted
        try:
            return self.execute_cell(cell, index, store_history=False)
        finally:
            self.km, self.kc = sandbox
            cell.source = shown

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
        km = AsyncKernelManager(kernel_name=self.trusted_kernel_name, client_class=f"{__name__}.ReadyClient")
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

    def _send_trusted(self, code: str) -> None:
        """Start trusted code silently in the trusted kernel without waiting for it (``_settle`` does)."""
        self._sent.append(self._trusted[1].execute(code, silent=True, store_history=False))

    def _settle(self) -> None:
        """Wait for the trusted code sent by ``_send_trusted``; a failure is logged."""
        while self._sent:
            reply = run_sync(_reply)(self._trusted[1], self._sent.pop(0), self.timeout)
            if reply["content"]["status"] != "ok":
                content = reply["content"]
                self.log.warning("trusted kernel: %s: %s", content.get("ename"), content.get("evalue"))

    def _in_trusted(self, code: str) -> None:
        """Run trusted code (setup cells, the channel's bind and release) silently in the trusted kernel."""
        self._send_trusted(code)
        self._settle()

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
                        and grade_id not in self._plan.helpers
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


class _CompiledSchema(BaseMetadataValidator):
    """``validate_cell`` with nbgrader's metadata schema compiled once: ``jsonschema.validate`` checks the
    schema itself (nbgrader's constant file) on every call, 2 ms a cell: 0.13 s a notebook of exercise 2."""

    _validators: dict[int, Any] = {}  # schema version -> its jsonschema validator

    def validate_cell(self, cell: NotebookNode) -> None:
        meta = cell.metadata.get("nbgrader")
        if meta is None or meta.get("schema_version", 0) != self.schema_version:
            return super().validate_cell(cell)  # nbgrader's own error for a schema too old or too new
        if self.schema_version not in self._validators:
            self._validators[self.schema_version] = validator_for(self.schema)(self.schema)
        self._validators[self.schema_version].validate(meta)


class MetadataValidator(MetadataValidatorV3, _CompiledSchema):
    """nbgrader's current metadata validator, its schema checked through ``_CompiledSchema``."""


class CheckCellMetadataCompiled(CheckCellMetadata):
    """nbgrader's CheckCellMetadata with ``MetadataValidator``: the same checks, the same error."""

    def preprocess(self, nb: NotebookNode, resources: Any) -> tuple:
        try:
            MetadataValidator().validate_nb(nb)
        except ValidationError:
            self.log.error(traceback.format_exc())
            raise ValidationError(
                "Notebook failed to validate; the nbgrader metadata may be corrupted."
            ) from None
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
