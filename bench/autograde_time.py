"""Seconds `nbgrader autograde` spends per notebook, against a bare kernel, in one run.

A temporary course gets the repository's nbgrader_config.py, solutions/ and two baselines: an empty notebook
(what starting and stopping a kernel costs) and a notebook that only imports numpy, torch and rnnlib.checks
(what the exercises pay before their first test). Every simulated student submits the solution of every
assignment and both baselines; one `nbgrader autograde "*"` grades all of them.
The time per notebook is read from nbgrader's own timestamped log, from "Sanitizing <notebook>" to the
"Setting destination file permissions" that ends that submission.

    .venv/bin/python bench/autograde_time.py [--students 3] [assignment ...]
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BASELINE = "00_bare_kernel"
BASELINES = {BASELINE: "", "00_imports_only": "import numpy as np\nimport torch\n\nfrom rnnlib import checks"}
LOG_FORMAT = "%(created).3f [%(name)s | %(levelname)s] %(message)s"


def nbgrader(*args: str, cwd: Path) -> str:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")  # nbgrader calls alembic
    done = subprocess.run(
        [str(BIN / "nbgrader"), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if done.returncode:
        sys.exit(f"nbgrader {' '.join(args)} failed:\n{done.stdout[-3000:]}")
    return done.stdout


def make_course(root: Path, assignments: list[str], students: int) -> None:
    """Config, sources, the baseline notebooks; every student submits every solution."""
    shutil.copy(ROOT / "nbgrader_config.py", root)
    for name in assignments:
        shutil.copytree(ROOT / "solutions" / name, root / "solutions" / name)
    for name, code in BASELINES.items():
        baseline = nbformat.v4.new_notebook(
            cells=[nbformat.v4.new_code_cell(code)] if code else [],
            metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        )
        (root / "solutions" / name).mkdir(parents=True)
        nbformat.write(baseline, root / "solutions" / name / "baseline.ipynb")
    for name in [*BASELINES, *assignments]:
        nbgrader("generate_assignment", name, cwd=root)
        for n in range(students):
            shutil.copytree(root / "solutions" / name, root / "submitted" / f"student{n}" / name)


def spans(log: str) -> dict[str, list[float]]:
    """Assignment -> seconds per graded notebook, from the timestamped autograde log."""
    out: dict[str, list[float]] = {}
    start = None
    for line in log.splitlines():
        match = re.match(r"(\d+\.\d+) .*\| INFO\] Sanitizing .*/submitted/[^/]+/([^/]+)/", line)
        if match:
            start = (float(match[1]), match[2])
        elif start and "Setting destination file permissions" in line:
            out.setdefault(start[1], []).append(float(line.split()[0]) - start[0])
            start = None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("assignments", nargs="*", help="ids in solutions/ (default: all)")
    parser.add_argument("--students", type=int, default=3, help="submissions per assignment")
    args = parser.parse_args()
    assignments = args.assignments or sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir())
    with tempfile.TemporaryDirectory() as tmp:
        course = Path(tmp)
        make_course(course, assignments, args.students)
        log = nbgrader("autograde", "*", f"--Application.log_format={LOG_FORMAT}", cwd=course)
    seconds = spans(log)
    missing = {*BASELINES, *assignments} - set(seconds)
    if missing:
        sys.exit(f"no timing found in the log for {sorted(missing)}")
    bare = statistics.median(seconds[BASELINE])
    print(f"autograde seconds per notebook, median of {args.students} submissions, {os.cpu_count()} CPUs")
    print(f"  {'bare kernel (empty notebook)':32s} {bare:6.2f} s")
    for name in [*list(BASELINES)[1:], *assignments]:
        median = statistics.median(seconds[name])
        print(f"  {name:32s} {median:6.2f} s  = {median / bare:4.1f} x bare kernel")


if __name__ == "__main__":
    main()
