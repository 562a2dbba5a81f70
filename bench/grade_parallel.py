"""A simulated class graded serially and in parallel, side by side in one run, and what that projects to.

A temporary course gets the repository's nbgrader_config.py and one assignment's solutions/ folder; every
simulated student hands in the solution. Two copies of it are graded: one by ONE `nbgrader autograde`
(serial), one by `python -m grader grade --workers W` (grader/parallel.py). Printed: wall seconds of each,
their ratio (target <= 0.6 with 2 workers on 2 cores), the serial seconds per notebook, and from those the
projected wall time of 1,000 learners x 6 assignments on one 16-core machine and on a 10-node cluster of
16-core machines, assuming the parallel efficiency measured here holds at that width.

    .venv/bin/python bench/grade_parallel.py [--students 40] [--workers 2] [assignment]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", OMP_NUM_THREADS="1")


def run(*args: str | Path, cwd: Path) -> float:
    """Wall seconds of a command, which must succeed. If not, the end of its output is printed, with the end
    of the log of each submission it names as failed (`python -m grader grade`), before the course goes."""
    start = time.perf_counter()
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=3600)  # fmt: skip
    if done.returncode:
        failed = [line.split("failed: ", 1)[1] for line in done.stdout.splitlines() if "  failed: " in line]
        tails = "".join(f"\n--- {log}\n{Path(log).read_text()[-6000:]}" for log in failed)
        sys.exit(f"{' '.join(map(str, args))} failed:\n{done.stdout[-3000:]}{tails}")
    return time.perf_counter() - start


def make_course(root: Path, assignment: str, students: int) -> None:
    root.mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", root)
    shutil.copytree(ROOT / "solutions" / assignment, root / "solutions" / assignment)
    run(BIN / "nbgrader", "generate_assignment", assignment, cwd=root)
    for n in range(students):
        shutil.copytree(root / "solutions" / assignment, root / "submitted" / f"student{n:03d}" / assignment)


def hours(seconds: float) -> str:
    return f"{seconds / 3600:5.2f} h" if seconds >= 3600 else f"{seconds / 60:5.1f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("assignment", nargs="?", default="01_recurrent_cell")
    parser.add_argument("--students", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        serial, parallel = Path(tmp) / "serial", Path(tmp) / "parallel"
        make_course(serial, args.assignment, args.students)
        shutil.copytree(serial, parallel)
        t_serial = run(BIN / "nbgrader", "autograde", args.assignment, cwd=serial)
        t_parallel = run(sys.executable, "-m", "grader", "grade", args.assignment, "--root", parallel,
                         "--workers", str(args.workers), cwd=ROOT)  # fmt: skip
    per_notebook = t_serial / args.students
    efficiency = t_serial / (args.workers * t_parallel)
    notebooks = 1000 * 6
    print(f"{args.students} submissions of {args.assignment}, {os.cpu_count()} CPUs")
    print(f"  serial   nbgrader autograde            {t_serial:7.1f} s  ({per_notebook:.2f} s per notebook)")
    print(f"  parallel python -m grader grade -w {args.workers}  {t_parallel:7.1f} s")
    print(f"  ratio parallel / serial                {t_parallel / t_serial:7.2f}  (target <= 0.6)")
    print(f"  parallel efficiency                    {efficiency:7.2f}  (1 = perfect scaling)")
    print(f"projected for 1,000 learners x 6 assignments ({notebooks} notebooks at {per_notebook:.2f} s):")
    print(f"  serial, one core                       {hours(notebooks * per_notebook)}")
    for label, cores in (("one machine, 16 cores", 16), ("10 nodes x 16 cores (Dask)", 160)):
        print(f"  {label:38s} {hours(notebooks * per_notebook / (cores * efficiency))}")


if __name__ == "__main__":
    main()
