"""The kernel inside the sandbox: ``python -m grader.kernel -f CONNECTION_FILE``.

An ipykernel with IPython's history off (no record of the cells in the sandbox) and without its debugger
(ipykernel imports debugpy at start: 70 ms of CPU per submission, for a protocol nobody speaks here), in
which running out of CPU time raises ``CPUTimeExceeded`` in the cell that used it up (the hard limit kills the
kernel 5 s later).
"""

import signal
import sys
from typing import Any


class CPUTimeExceeded(Exception):
    """Raised in the running cell when the sandbox has used its CPU-time cap."""


def _raise_cpu_time_exceeded(signum: int, frame: Any) -> None:
    raise CPUTimeExceeded("the grading sandbox used up its CPU time")


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGXCPU, _raise_cpu_time_exceeded)
    sys.modules["debugpy"] = None  # type: ignore[assignment]  # ipykernel: "debugpy not available"
    from ipykernel.kernelapp import launch_new_instance

    # parent_handle=1: no parent poller (its pid is outside this PID namespace) and no console banner
    launch_new_instance(argv=[*argv, "--HistoryManager.enabled=False", "--IPKernelApp.parent_handle=1"])


if __name__ == "__main__":
    main(sys.argv[1:])
