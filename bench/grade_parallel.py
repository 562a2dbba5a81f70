"""A simulated class graded serially and in parallel, side by side in one run, and what that projects to.

A temporary course gets the repository's nbgrader_config.py and one assignment's solutions/ folder; every
simulated student hands in the solution. Two copies of it are graded: one by ONE `nbgrader autograde`
(serial), one by `python -m grader grade --workers W` (grader/parallel.py), one after the other, ``--repeats``
times on fresh copies (this machine's speed drifts by 10-20 % from one minute to the next). Printed: the
median wall seconds of each, the median of the runs' ratios (target <= 0.6 with 2 workers on 2 cores) and
each run's, the serial seconds per notebook, and from those the projected wall time of 1,000 learners x 6
assignments on one 16-core machine and on a 10-node cluster of 16-core machines, assuming the parallel
efficiency measured here holds at that width.

    .venv/bin/python bench/grade_parallel.py [--students 40] [--workers 2] [--repeats 3] [assignment]
"""

import argparse
import os
import shutil
import statistics
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
    parser.add_argument("--repeats", type=int, default=3, help="serial and parallel runs, alternated")
    args = parser.parse_args()
    runs = []  # (serial, parallel) seconds, side by side
    with tempfile.TemporaryDirectory() as tmp:
        pristine = Path(tmp) / "course"
        make_course(pristine, args.assignment, args.students)
        for n in range(args.repeats):
            serial, parallel = Path(tmp) / f"serial{n}", Path(tmp) / f"parallel{n}"
            shutil.copytree(pristine, serial)
            shutil.copytree(pristine, parallel)
            t_serial = run(BIN / "nbgrader", "autograde", args.assignment, cwd=serial)
            t_parallel = run(sys.executable, "-m", "grader", "grade", args.assignment, "--root", parallel,
                             "--workers", str(args.workers), cwd=ROOT)  # fmt: skip
            runs.append((t_serial, t_parallel))
            shutil.rmtree(serial)
            shutil.rmtree(parallel)
    t_serial, t_parallel = statistics.median(s for s, _ in runs), statistics.median(p for _, p in runs)
    per_notebook = t_serial / args.students
    efficiency = t_serial / (args.workers * t_parallel)
    notebooks = 1000 * 6
    print(f"{args.students} submissions of {args.assignment}, {os.cpu_count()} CPUs, "
          f"medians of {args.repeats} run(s), serial and parallel alternated")  # fmt: skip
    print(f"  serial   nbgrader autograde            {t_serial:7.1f} s  ({per_notebook:.2f} s per notebook)")
    print(f"  parallel python -m grader grade -w {args.workers}  {t_parallel:7.1f} s")
    each = ", ".join(f"{p:.1f}/{s:.1f}" for s, p in runs)
    ratio = statistics.median(p / s for s, p in runs)
    print(f"  ratio parallel / serial                {ratio:7.2f}  (target <= 0.6)")
    print(f"    each run, parallel/serial seconds:   {each}")
    print(f"  parallel efficiency                    {efficiency:7.2f}  (1 = perfect scaling)")
    print(f"projected for 1,000 learners x 6 assignments ({notebooks} notebooks at {per_notebook:.2f} s):")
    print(f"  serial, one core                       {hours(notebooks * per_notebook)}")
    for label, cores in (("one machine, 16 cores", 16), ("10 nodes x 16 cores (Dask)", 160)):
        print(f"  {label:38s} {hours(notebooks * per_notebook / (cores * efficiency))}")


if __name__ == "__main__":
    main()
