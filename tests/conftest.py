"""Shared by the whole test-suite: the repository's paths and the book's pages (_toc.yml), commands run with
the venv first on PATH (nbgrader calls alembic) and a timeout, Chromium's options, and a visible skip for the
tests that autograde on a machine where grader.sandbox cannot set up its protections (autograde refuses to
grade there, as it should), and what a grading may not leave behind (``leftovers``).

Tests import these names (``from conftest import REPO, nbgrader``) and the exercise model of
``tests/exercise_model.py``; no test module imports another.
"""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from grader.sandbox import BASE, CGROUP_V1, UIDS, missing

REPO = Path(__file__).resolve().parents[1]
SOURCE, RELEASE = REPO / "solutions", REPO / "exercises"
ENV = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
TIMEOUT = 1800  # seconds for any one command a test runs
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def toc_pages() -> list[str]:
    """Every document of _toc.yml, in reading order (paths without suffix, e.g. 'book/intro')."""
    toc = yaml.safe_load((REPO / "_toc.yml").read_text(encoding="utf-8"))

    def files(entries: list[dict]) -> Iterator[str]:
        for entry in entries:
            if "file" in entry:
                yield entry["file"]
            yield from files(entry.get("sections", []))

    pages = [toc["root"]]
    for part in toc.get("parts", [{"chapters": toc.get("chapters", [])}]):
        pages += files(part["chapters"])
    return pages


PAGES = toc_pages()
SANDBOX_MISSING = missing()
needs_sandbox = pytest.mark.skipif(
    bool(SANDBOX_MISSING), reason=f"autograde refuses to grade on this machine: {'; '.join(SANDBOX_MISSING)}"
)


def run(*args: str | Path, cwd: Path, check: bool = True, timeout: float = TIMEOUT) -> str:
    """Run a command with the venv's bin/ first on PATH; return its output (stdout and stderr)."""
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=timeout,
    )  # fmt: skip
    if check:
        assert done.returncode == 0, (
            f"{' '.join(map(str, args))} failed ({done.returncode}):\n{done.stdout[-4000:]}"
        )
    return done.stdout


def nbgrader(*args: str | Path, cwd: Path) -> str:
    return run(Path(sys.executable).parent / "nbgrader", *args, cwd=cwd)


def leftovers() -> list[str]:
    """Processes of the grading uids, sandbox folders, cgroups, and files the sandboxes' uids own in /tmp."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and proc.stat().st_uid in UIDS:
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[:2]  # state, parent
                found.append(f"process {proc.name} {state}: {(proc / 'cmdline').read_bytes()[:80]!r}")
        except OSError:
            pass
    found += [str(p) for p in BASE.glob("k-*")]
    found += [str(p) for p in CGROUP_V1.glob("*/rnn-grader/*") if p.is_dir()]
    for folder in ("/tmp", "/dev/shm", "/var/tmp"):
        found += [str(p) for p in Path(folder).iterdir() if _owner(p) in UIDS]
    return found


def _owner(path: Path) -> int:
    try:
        return path.lstat().st_uid
    except OSError:
        return -1
