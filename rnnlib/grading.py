"""A confined kernel for `nbgrader autograde`: learner code runs under limits, away from the course's secrets.

nbgrader_config.py swaps nbgrader's Execute for ``ConfinedExecute`` in autograde only (validate and JupyterLab
keep the plain python3 kernel). It starts the kernel "rnn-grader" (rnnlib/kernels/rnn-grader/kernel.json,
found without installing it), whose launcher rnnlib/confine.py applies, before starting ipykernel:

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
"""

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbgrader.converters import Autograde
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import Execute
from traitlets import Bool, Integer, Unicode, default

from rnnlib.confine import SETTINGS

KERNEL_NAME = "rnn-grader"
KERNELS = Path(__file__).parent / "kernels"


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

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("kernel_manager_class", GraderKernelManager)
        super().__init__(**kwargs)


def autograde_preprocessors(steps: list[type] | None = None) -> list[type]:
    """``steps`` (nbgrader's autograde steps by default) with Execute replaced by ConfinedExecute."""
    steps = steps or Autograde.class_traits()["autograde_preprocessors"].default()
    return [ConfinedExecute if step is Execute else step for step in steps]
