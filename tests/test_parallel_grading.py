"""Parallel grading (`python -m grader grade`) gives what a serial `nbgrader autograde` gives, for real.

The bad-submission matrix of test_grading_matrix (exercise 01, every hostile and broken student) is handed in
to one course, copied, and graded twice: serially by ONE `nbgrader autograde`, and in parallel by
`python -m grader grade --workers 2` (threads of the command; batches of submissions graded by nbgrader's own
autograde into throwaway gradebooks, the results imported by the command). Compared: every gradebook row
through nbgrader's API (submissions, notebooks, grades, comments, and the row counts), `nbgrader export`'s
CSV, the autograded notebooks (all but the execution timings), and the matrix's expected scores per test cell.

Resumable: the whole command killed (SIGKILL to its process group) after its first result, then run again:
it grades only what was left, and the gradebook and feedback equal the serial ones. On a Dask cluster: a
`dask scheduler` and two `dask worker` processes on localhost, the gradebook in a PostgreSQL server from
Debian's packages (initdb in a temporary folder, 127.0.0.1), one worker killed mid-batch: every submission
graded once, rows equal the serial ones, and the database password, in the environment of the command and of
the workers, reaches no grading kernel. Every subprocess has a timeout; the servers are stopped after.
"""

import csv
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from bad_submissions import (
    BLANK,
    BROKEN_FILES,
    DUE,
    KILLER,
    LATE,
    ON_TIME,
    STUDENTS,
    TIMEOUT,
    A,
    answered,
    append_to,
    expected,
    os_exit_in,
    released,
    submit,
)  # fmt: skip
from conftest import REPO as ROOT
from conftest import SOURCE, leftovers
from nbgrader import api
from nbgrader.api import Gradebook, MissingEntry

from grader.sandbox import BASE

pytestmark = [pytest.mark.nbgrader, pytest.mark.slow]

BIN = Path(sys.executable).parent
ENV = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")  # nbgrader calls alembic
SWEEP_BLOCKER = "sweep_blocker"
EVERYONE = [*STUDENTS, BLANK, KILLER, SWEEP_BLOCKER, *BROKEN_FILES]
RESUMED = ["correct", "warning", "os_exit", "slow", BLANK]  # a small class for the kill-and-resume tests
COURSE_ID = "rnn-course"
GRADED_CELLS = len(A.tests) + len(A.manual)  # one grade row each per submission


def run(*args, cwd: Path, timeout: float = 600, env: dict | None = None, check: bool = True) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env or ENV, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)  # fmt: skip
    assert not check or done.returncode == 0, f"{args} failed ({done.returncode}):\n{done.stdout[-4000:]}"
    return done.stdout


def nbgrader(*args, cwd: Path, **kw) -> str:
    return run(BIN / "nbgrader", *args, cwd=cwd, **kw)


def grade_command(course: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "grader", "grade", A.name, "--root", str(course), *args]


def new_course(root: Path, db: str | None = None, env: dict | None = None) -> Path:
    """The repository's config (10 s per cell, as the matrix), exercise 01 generated, the roster imported."""
    root.mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", root)
    with open(root / "nbgrader_config.py", "a") as config:
        config.write(f"\nc.ExecutePreprocessor.timeout = {TIMEOUT}  # the test course only\n")
        if db:
            config.write(f"c.CourseDirectory.db_url = {db!r}\n")
    shutil.copytree(SOURCE / A.name, root / "solutions" / A.name)
    nbgrader("db", "assignment", "add", A.name, f"--duedate={DUE}", cwd=root, env=env)
    nbgrader("generate_assignment", A.name, cwd=root, env=env)
    roster = root / "students.csv"
    roster.write_text("id,first_name,last_name,email\n" + "".join(f"{s},{s},Student,\n" for s in EVERYONE))
    nbgrader("db", "student", "import", roster, cwd=root, env=env)
    return root


# Written against grader.sandbox: every launcher first sweeps /run/rnn-grader under an exclusive flock of its
# .sweep file, every grading makes its private folder there under a shared one, and a sandbox that dies gets a
# fresh folder mid-notebook; once its notebook is graded, the grading (root) removes its private folder and
# everything in /run/rnn-grader named after it (grader.sandbox.remove). This learner (right answers) holds
# that lock from a process of its own that outlives its cells, to stall every other grading, plants folders
# for the sweeps and for that removal to find, and leaves in its private folder (HOME's parent) a link to
# /run/rnn-grader, every grading's folders, for root to follow when it removes the folder.
BLOCK_SWEEPS = """
import os, subprocess, sys
own = os.path.dirname(os.environ["HOME"])
os.symlink("/run/rnn-grader", own + "/every-grading")
HOLD = (
    "import fcntl, os, time\\n"
    "os.makedirs('/run/rnn-grader', exist_ok=True)\\n"
    "fcntl.flock(os.open('/run/rnn-grader/.sweep', os.O_CREAT | os.O_RDONLY), fcntl.LOCK_EX)\\n"
    "print('held', flush=True)\\n"
    "time.sleep(3600)\\n"
)
holder = subprocess.Popen([sys.executable, "-c", HOLD], stdout=subprocess.PIPE, text=True,
                          start_new_session=True)
print("sweep lock:", holder.stdout.readline().strip())
for name in ("k-planted", "k-planted.view", os.path.basename(own) + ".planted"):
    os.makedirs(f"/run/rnn-grader/{name}", exist_ok=True)
print("planted:", sorted(n for n in os.listdir("/run/rnn-grader") if n.startswith("k-planted")),
      os.path.isdir(own + ".planted"), os.readlink(own + "/every-grading"))
"""
CANARY = BASE / "canary-of-test_parallel_grading"  # what root would remove if it followed that link


def hand_in(course: Path, students: list[str]) -> None:
    """The matrix's submissions (test_grading_matrix.graded) of ``students``."""
    for student in students:
        if student in STUDENTS:
            make, _ = STUDENTS[student]
            submit(course, student, make(answered(released(course))),
                   timestamp=LATE if student == "late" else ON_TIME)  # fmt: skip
        elif student == BLANK:
            submit(course, BLANK, released(course))
        elif student == KILLER:
            submit(course, KILLER, append_to(answered(released(course)), "sigmoid", os_exit_in("sigmoid")))
        elif student == SWEEP_BLOCKER:
            submit(course, SWEEP_BLOCKER, append_to(answered(released(course)), "sigmoid", BLOCK_SWEEPS))
        elif student == "renamed":
            submit(course, "renamed", answered(released(course)), name="my_answers.ipynb")
        elif student == "empty_folder":
            submit(course, "empty_folder")
        elif student == "invalid_json":
            (submit(course, "invalid_json") / A.notebook_name).write_text('{"cells": [ this is not JSON')


# --- what is compared --------------------------------------------------------------------------------------


def rows(db_url: str, students: list[str]) -> dict:
    """Every gradebook field of the students' submissions, through nbgrader's API (ids aside)."""
    out = {}
    with Gradebook(db_url, COURSE_ID) as gb:
        for student in students:
            try:
                sub = gb.find_submission(A.name, student)
            except MissingEntry:
                out[student] = None
                continue
            out[student] = (sub.timestamp, sub.extension, {
                nb.name: (nb.flagged, nb.late_submission_penalty,
                          {g.name: (g.auto_score, g.manual_score, g.extra_credit, g.needs_manual_grade,
                                    g.max_score) for g in nb.grades},
                          {c.name: (c.auto_comment, c.manual_comment) for c in nb.comments})
                for nb in sub.notebooks})  # fmt: skip
    return out


def counts(db_url: str) -> dict[str, int]:
    models = (api.Student, api.SubmittedAssignment, api.SubmittedNotebook, api.Grade, api.Comment)
    with Gradebook(db_url, COURSE_ID) as gb:
        return {model.__name__: gb.db.query(model).count() for model in models}


def export(course: Path, students: list[str] = EVERYONE, env: dict | None = None) -> list[dict]:
    nbgrader("export", cwd=course, env=env)
    with open(course / "grades.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["student_id"] in students]
    return sorted(rows, key=lambda r: (r["assignment"], r["student_id"]))


def autograded(course: Path, student: str) -> list | None:
    """The autograded notebook's cells without execution timings and cell ids (None: no notebook).

    A cell nbgrader puts back (a deleted test cell) gets a fresh random id in every run, serial ones too."""
    path = course / "autograded" / student / A.name / A.notebook_name
    if not path.exists():
        return None
    cells = nbformat.read(path, as_version=4).cells
    for cell in cells:
        cell.metadata.pop("execution", None)
        cell.pop("id", None)
    return cells


def sqlite(course: Path) -> str:
    return f"sqlite:///{course / 'gradebook.db'}"


# --- the serial reference and the parallel run of the whole matrix -----------------------------------------


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> Path:
    """The matrix graded by ONE `nbgrader autograde` (the reference), with its export."""
    BASE.mkdir(mode=0o711, parents=True, exist_ok=True)
    CANARY.touch()
    course = new_course(tmp_path_factory.mktemp("serial") / "course")
    hand_in(course, EVERYONE)
    nbgrader("autograde", A.name, cwd=course, check=False)
    return course


@pytest.fixture(scope="module")
def parallel(tmp_path_factory) -> tuple[Path, str]:
    """The same class graded by `python -m grader grade --workers 2`; its printed summary."""
    course = new_course(tmp_path_factory.mktemp("parallel") / "course")
    hand_in(course, EVERYONE)
    out = run(*grade_command(course, "--workers", "2"), cwd=ROOT, check=False)
    return course, out


def test_parallel_gradebook_equals_serial(serial, parallel):
    course, out = parallel
    assert rows(sqlite(course), EVERYONE) == rows(sqlite(serial), EVERYONE)
    assert counts(sqlite(course)) == counts(sqlite(serial))
    assert export(course) == export(serial)
    for student in EVERYONE:
        assert autograded(course, student) == autograded(serial, student), student
    assert f"{len(EVERYONE)} graded" in out, out[-3000:]  # one task per folder, the empty one too


def test_parallel_keeps_the_matrix_outcomes(parallel):
    """test_grading_matrix's expected score per test cell, per student; the summary and logs per student: a
    submission nbgrader could not grade (no autograded/ folder) is FAILED, with the path of its log."""
    course, out = parallel
    got = rows(sqlite(course), EVERYONE)
    for student, (_, broken) in STUDENTS.items():
        cells = got[student][2][A.path.stem][2]
        assert {gid: cells[gid][0] for gid in A.tests} == expected(broken), student
    logs = course / ".grading" / "logs" / A.name
    assert {p.stem for p in logs.glob("*.log")} == set(EVERYONE)
    assert "Skipping unknown notebook" in (logs / "renamed.log").read_text()
    summary = {line.split()[1]: line for line in out.splitlines() if line.startswith(f"{A.name}  ")}
    assert set(summary) == set(EVERYONE), out[-3000:]
    for student in EVERYONE:
        failed = not (course / "autograded" / student / A.name).is_dir()
        assert ("FAILED" in summary[student]) == failed and (str(logs / f"{student}.log") in out) == failed
    assert summary["correct"].split()[2:] == ["8", "/", "10", "ok"], summary["correct"]


def test_a_learner_holding_the_sweep_lock_stalls_no_one_and_leaves_nothing(serial, parallel):
    """BLOCK_SWEEPS ran (its /run is a private tmpfs, where it could do all of it), earned exactly the right
    answers' points in both runs, every other learner's outcome is the matrix's and the serial run's (tests
    above), and after both runs no process, folder or cgroup of a grading is left, the lock holder too. Root
    removed its private folder without following its link: the rest of /run/rnn-grader is still there."""
    course, _ = parallel
    for graded in (serial, course):
        (sigmoid,) = [c for c in autograded(graded, SWEEP_BLOCKER)
                      if c.metadata.get("nbgrader", {}).get("grade_id") == "sigmoid"]  # fmt: skip
        said = "".join(o.get("text", "") for o in sigmoid.outputs)
        assert "sweep lock: held" in said and "'k-planted'" in said and "True /run/rnn-grader" in said, said
        cells = rows(sqlite(graded), [SWEEP_BLOCKER])[SWEEP_BLOCKER][2][A.path.stem][2]
        assert {gid: cells[gid][0] for gid in A.tests} == expected(set())
    assert leftovers() == []
    assert not (BASE / "k-planted").exists() and not (BASE / "k-planted.view").exists()
    assert CANARY.exists(), "a grading followed the learner's link and removed /run/rnn-grader's files"
    CANARY.unlink()


def test_a_second_run_grades_only_the_failed_and_changes_nothing(serial, parallel):
    """Done means an autograded/ folder, as for nbgrader: a second run retries only the failed submissions
    (the renamed notebook, the invalid JSON, the empty folder, ...)."""
    course, _ = parallel
    before = rows(sqlite(course), EVERYONE), counts(sqlite(course))
    failed = [s for s in EVERYONE if not (course / "autograded" / s / A.name).is_dir()]
    assert set(BROKEN_FILES) <= set(failed)
    out = run(*grade_command(course, "--workers", "2"), cwd=ROOT, check=False)
    assert f"{len(failed)} graded, {len(failed)} failed" in out, out[-2000:]
    assert (rows(sqlite(course), EVERYONE), counts(sqlite(course))) == before


# --- killed and resumed ---------------------------------------------------------------------------------


def wait_for(condition, what: str, process: subprocess.Popen | None = None, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what}: the process ended first ({process.returncode})")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout} s")
        time.sleep(0.2)


def logged(course: Path) -> set[str]:
    return {p.stem for p in (course / ".grading" / "logs" / A.name).glob("*.log")}


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def test_a_killed_command_resumes_where_it_stopped(serial, tmp_path):
    """SIGKILL to the command and its workers after the first result (one submission per nbgrader run);
    the rerun (batches) grades the rest only."""
    course = new_course(tmp_path / "course")
    hand_in(course, RESUMED)
    first = subprocess.Popen(grade_command(course, "--workers", "1", "--batch", "1"), cwd=ROOT, env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: logged(course), "a first result", first)
    finally:
        stop(first, signal.SIGKILL)
    pending = course / ".grading" / "pending" / A.name
    done = {s for s in RESUMED if (course / "autograded" / s).is_dir() and not (pending / s).exists()}
    assert 0 < len(done) < len(RESUMED), done
    stamps = {s: (course / "autograded" / s / A.name).stat().st_mtime_ns for s in done}
    out = run(*grade_command(course, "--workers", "2"), cwd=ROOT)
    assert f"{len(RESUMED) - len(done)} graded, 0 failed" in out, out[-2000:]
    assert {s: (course / "autograded" / s / A.name).stat().st_mtime_ns for s in done} == stamps
    assert rows(sqlite(course), RESUMED) == rows(sqlite(serial), RESUMED)
    assert counts(sqlite(course))["Grade"] == len(RESUMED) * GRADED_CELLS
    for student in RESUMED:
        assert autograded(course, student) == autograded(serial, student), student
    nbgrader("generate_feedback", A.name, cwd=course)
    nbgrader("generate_feedback", A.name, cwd=serial)
    for student in RESUMED:
        page = f"feedback/{student}/{A.name}/{A.path.stem}.html"
        assert (course / page).read_text() == (serial / page).read_text(), student
    assert not any(pending.iterdir())


# --- a Dask cluster and a PostgreSQL gradebook ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres() -> Iterator[tuple[str, str]]:
    """A PostgreSQL server of Debian's packages in a temporary folder: (URL without password, password)."""
    initdb = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not initdb:
        pytest.skip("PostgreSQL's server is not installed (make postgres installs Debian's package)")
    pg = initdb[-1].parent
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses root
    password, port = secrets.token_hex(16), free_port()
    with tempfile.TemporaryDirectory(prefix="pg-") as tmp:
        folder = Path(tmp)
        (folder / "password").write_text(password)
        if as_postgres:
            for path in (folder, folder / "password"):
                shutil.chown(path, "postgres")
        data = folder / "data"
        run(*as_postgres, pg / "initdb", "-D", data, "-U", "grader", f"--pwfile={folder / 'password'}",
            "--auth=scram-sha-256", cwd=folder, timeout=120)  # fmt: skip
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
        run(*as_postgres, pg / "pg_ctl", "-D", data, "-l", folder / "log", "-w", "-t", "60", "-o", options,
            "start", cwd=folder, timeout=90)  # fmt: skip
        try:
            env = dict(ENV, PGPASSWORD=password)
            run(pg / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "grader", "gradebook", cwd=folder,
                env=env, timeout=60)  # fmt: skip
            yield f"postgresql+psycopg2://grader@127.0.0.1:{port}/gradebook", password
        finally:
            run(*as_postgres, pg / "pg_ctl", "-D", data, "-m", "fast", "-w", "-t", "60", "stop", cwd=folder,
                timeout=90, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def cluster(postgres, tmp_path_factory) -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """`dask scheduler` and two `dask worker`s on localhost (the workers' environment has the password)."""
    from dask.distributed import Client

    logs, port = tmp_path_factory.mktemp("dask"), free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(ENV, PGPASSWORD=postgres[1])
    commands = [[BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]]
    commands += [[BIN / "dask", "worker", address, "--nthreads", "1", "--no-dashboard", "--name", f"w{i}",
                  "--death-timeout", "60"] for i in range(2)]  # fmt: skip
    processes = []
    try:
        for n, command in enumerate(commands):
            with open(logs / f"{n}.log", "w") as log:
                processes.append(subprocess.Popen([str(c) for c in command], cwd=ROOT, env=env, stdout=log,
                                                  stderr=subprocess.STDOUT, start_new_session=True))
            if n == 0:
                listening = lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0  # noqa: E731
                wait_for(listening, "scheduler", processes[0], timeout=60)
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address, processes[1:]
    finally:
        for process in reversed(processes):
            stop(process)


SNIFF = """
import glob, os
print("environment:", dict(os.environ))
for path in [os.environ.get("PGPASSFILE", ""), os.path.expanduser("~/.pgpass"),
             *glob.glob("/tmp/pg-*/password")]:
    try:
        print(path, open(path).read())
    except OSError as error:
        print(path, error)
"""


def test_on_a_dask_cluster_with_postgres(serial, postgres, cluster, tmp_path, monkeypatch):
    """Two dask workers, one killed mid-batch (one submission per task, so that it was grading one); a
    PostgreSQL gradebook; the password reaches no kernel."""
    url, password = postgres
    monkeypatch.setenv("PGPASSWORD", password)  # this test reads the gradebook too, as the instructor
    address, workers = cluster
    env = dict(ENV, PGPASSWORD=password)
    course = new_course(tmp_path / "course", db=url, env=env)  # nbgrader itself reads PGPASSWORD here
    students = [*RESUMED, "hide_errors", "late"]
    hand_in(course, students)
    submit(course, "sniffer", append_to(answered(released(course)), "sigmoid", SNIFF))
    command = grade_command(course, "--scheduler", address, "--db", url, "--batch", "1")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        wait_for(lambda: logged(course), "a first result", process)
        stop(workers[0], signal.SIGKILL)  # a worker dies mid-batch: Dask reruns its task on the other
        out, _ = process.communicate(timeout=600)
    finally:
        stop(process, signal.SIGKILL)
    assert process.returncode == 0, out[-3000:]
    assert f"{len(students) + 1} graded, 0 failed" in out, out[-3000:]
    assert rows(url, students) == rows(sqlite(serial), students)
    got = counts(url)
    assert got["SubmittedAssignment"] == len(students) + 1
    assert got["Grade"] == (len(students) + 1) * GRADED_CELLS
    assert export(course, students, env) == export(serial, students)
    sniffed = (course / "autograded" / "sniffer" / A.name / A.notebook_name).read_text()
    assert "environment:" in sniffed and password not in sniffed
    assert password not in json.dumps(rows(url, ["sniffer"]), default=str)
