"""Seconds `nbgrader autograde` spends per notebook, sandboxed and in nbgrader's own way, in one run.

Two temporary courses get the repository's nbgrader_config.py, solutions/ and two baselines: an empty
notebook (what starting and stopping a kernel costs) and a notebook that only imports numpy, torch and
rnnlib.checks (what the exercises pay before their first test). One course grades as the course does
(answers in a per-submission sandbox, tests in the warm trusted kernel: grader.grading.SplitExecute), the
other with nbgrader's own Execute (everything in one plain kernel, as nbgrader does out of the box). Every
simulated student submits the solution of every assignment and both baselines; one `nbgrader autograde "*"`
per course grades all of them, the two courses one after the other.
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


IN_KERNEL = """
from nbgrader.preprocessors import Execute  # noqa: E402

steps = c.Autograde.autograde_preprocessors
c.Autograde.autograde_preprocessors = [Execute if p is SplitExecute else p for p in steps]
"""


def make_course(root: Path, assignments: list[str], students: int, in_kernel: bool) -> None:
    """Config, sources, the baseline notebooks; every student submits every solution."""
    config = (ROOT / "nbgrader_config.py").read_text()
    (root / "nbgrader_config.py").write_text(config + (IN_KERNEL if in_kernel else ""))
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
    seconds = {}
    for label, in_kernel in (("sandboxed", False), ("in-kernel", True)):
        with tempfile.TemporaryDirectory() as tmp:
            course = Path(tmp)
            make_course(course, assignments, args.students, in_kernel)
            log = nbgrader("autograde", "*", f"--Application.log_format={LOG_FORMAT}", cwd=course)
        seconds[label] = spans(log)
        missing = {*BASELINES, *assignments} - set(seconds[label])
        if missing:
            sys.exit(f"no timing found in the {label} log for {sorted(missing)}")
    print(f"autograde seconds per notebook, median of {args.students} submissions, {os.cpu_count()} CPUs")
    header = f"{'notebook':30s} {'nbgrader':>9s} {'sandboxed':>10s} {'ratio':>6s}"
    print(f"  {header}   sandboxed / its empty notebook")
    bare = statistics.median(seconds["sandboxed"][BASELINE])
    for name in [*BASELINES, *assignments]:
        plain, boxed = (statistics.median(seconds[label][name]) for label in ("in-kernel", "sandboxed"))
        print(f"  {name:30s} {plain:8.2f}s {boxed:9.2f}s {boxed / plain:6.2f}   {boxed / bare:5.1f} x")


if __name__ == "__main__":
    main()
