"""The kernels grader.grading starts, in real processes: ready without jupyter_client's quiet wait, the
trusted kernel's reset, and the sandbox's kernel (grader.kernel, run here without its sandbox) without a
debugger.

- ``ReadyClient``: a kernel is ready as soon as it answers ``kernel_info`` and IOPub carries its messages;
  the first cell of a fresh kernel still shows its output, and a dead kernel is an error, not a hang.
- ``RESET``: each notebook's objects, cycles included, are collected by the next notebook's reset, although
  every reset freezes what survives it.
"""

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

from grader.grading import RESET, ReadyClient

START = 120  # seconds a kernel may take to start on a loaded machine


@asynccontextmanager
async def kernel(name: str = "python3", specs: KernelSpecManager | None = None) -> AsyncIterator:
    """A started kernel and its ReadyClient, shut down after."""
    extra = {"kernel_spec_manager": specs} if specs else {}
    km = AsyncKernelManager(kernel_name=name, client_class="grader.grading.ReadyClient", **extra)
    await km.start_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=START)
        yield km, kc
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


async def run(kc: ReadyClient, code: str) -> tuple[str, dict]:
    """stdout of ``code`` and the shell reply."""
    seen = []
    reply = await kc.execute_interactive(code, output_hook=seen.append, timeout=60)
    return "".join(m["content"]["text"] for m in seen if m["msg_type"] == "stream"), reply["content"]


def test_a_fresh_kernel_s_first_cell_shows_its_output_once_ready():
    async def first_cells() -> list[str]:
        outputs = []
        for n in range(3):  # a kernel that came up ready before IOPub connected would lose this output
            async with kernel() as (_, kc):
                assert isinstance(kc, ReadyClient)
                outputs.append((await run(kc, f"print('first cell of kernel {n}')"))[0])
        return outputs

    assert asyncio.run(first_cells()) == [f"first cell of kernel {n}\n" for n in range(3)]


def test_waiting_for_a_dead_kernel_is_an_error_not_a_hang():
    async def dead() -> None:
        async with kernel() as (km, kc):
            km.provisioner.process.kill()
            km.provisioner.process.wait(timeout=30)
            with pytest.raises(RuntimeError, match="died"):
                await asyncio.wait_for(kc.wait_for_ready(timeout=30), 60)

    asyncio.run(dead())


PROBE = """\
import builtins, weakref
class Cycle:
    pass
node = Cycle()
node.me = node  # only the cycle collector frees it
builtins.probes = getattr(builtins, "probes", []) + [weakref.ref(node)]
"""


def test_the_trusted_reset_collects_every_notebook_s_objects_and_freezes_what_survives():
    async def notebooks() -> list[str]:
        async with kernel() as (_, kc):
            seen = []
            for _ in range(3):  # three notebooks, each with a reset after it
                assert (await run(kc, PROBE))[1]["status"] == "ok"
                assert (await run(kc, RESET))[1]["status"] == "ok"
                out, _ = await run(kc, "import builtins, gc; print([p() is None for p in builtins.probes], "
                                       "gc.get_freeze_count() > 0)")  # fmt: skip
                seen.append(out)
            return seen

    assert asyncio.run(notebooks()) == ["[True] True\n", "[True, True] True\n", "[True, True, True] True\n"]


def test_the_sandbox_s_kernel_has_no_debugger(tmp_path):
    spec = tmp_path / "kernels" / "sandbox-kernel"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "grader.kernel", "-f", "{connection_file}"]
    spec_json = {"argv": argv, "display_name": "grader.kernel", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(spec_json))
    specs = KernelSpecManager(kernel_dirs=[str(spec.parent)])

    async def probe() -> tuple[dict, dict]:
        async with kernel("sandbox-kernel", specs) as (_, kc):
            info = await kc.kernel_info(reply=True, timeout=60)
            return info["content"], (await run(kc, "import debugpy"))[1]

    info, imported = asyncio.run(probe())
    assert info["status"] == "ok" and "debugger" not in info.get("supported_features", [])
    assert imported["status"] == "error" and imported["ename"] == "ModuleNotFoundError"
