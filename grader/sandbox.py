"""One throwaway sandbox per submission: ``python -m grader.sandbox -f CONNECTION_FILE`` (the kernel's argv).

Started by grader.grading.SandboxKernelManager as root, in the submission's folder. It

1. takes a uid of its own from ``UIDS`` (a lock held while it lives: concurrent gradings never share one);
2. makes a cgroup (v1 ``memory`` and ``pids`` hierarchies, or v2) capping resident memory and processes;
3. writes the sandbox's view of the library for the assignment (grader.references) and copies the
   submission's folder into a private work folder owned by that uid;
4. runs the kernel under bubblewrap, as that uid, in new PID, network, IPC, UTS, user and mount namespaces:
   a read-only system, Python and venv, the course's ``rnnlib`` (that view) and ``grader`` only, no other
   course file, private tmpfs over /tmp, /var/tmp, /dev/shm and /run, an allow-listed environment, IPython
   history off, CPU-time, file-size and core-dump limits;
5. when the kernel ends (or this launcher is killed: ``--die-with-parent`` ends the PID namespace), kills
   whatever is left in the cgroup, removes it, the work folder and the view, and frees the uid.

Fail closed: a protection that cannot be set up stops the launcher with a message naming it, unless the
instructor opted out of it (``allow_without`` in the settings); the grading log then says so on every line.
"""

import ctypes
import fcntl
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from grader.references import write_view

SETTINGS = "RNN_GRADER_SANDBOX"  # the launcher's settings, in its environment (never passed on)
BASE = Path("/run/rnn-grader")  # private folders of the kernels, the uid locks
FONT_CACHE = BASE / "mpl"  # matplotlib's list of this machine's fonts, copied into every sandbox
UIDS = range(61000, 62000)
CGROUP_V1 = Path("/sys/fs/cgroup")
CLONE_NEWNS, MS_BIND, MS_REC, MS_PRIVATE = 0x00020000, 4096, 16384, 1 << 18
OPT_OUTS = ("cgroup", "sandbox")  # what an instructor may explicitly grade without
ENVIRONMENT = {"LANG": "C.UTF-8", "MPLBACKEND": "agg", "PYTHONDONTWRITEBYTECODE": "1",
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # fmt: skip


NEEDS = "the sandbox needs root, bubblewrap (bwrap) and setpriv (util-linux)"


class Refused(RuntimeError):
    """A protection could not be set up and the instructor did not opt out of it."""


def _tools() -> bool:
    """Whether this process can build a sandbox: root, bwrap and setpriv (see NEEDS)."""
    return os.geteuid() == 0 and bool(shutil.which("bwrap")) and bool(shutil.which("setpriv"))


def missing() -> list[str]:
    """What this machine cannot give a sandbox, each with its reason (empty: grading can run)."""
    found = [] if _tools() else [NEEDS]
    try:
        Cgroup(f"probe-{os.getpid()}", 2**30, 8).destroy()
    except OSError as error:
        found.append(f"cannot create a cgroup with memory and pids caps ({error})")
    return found


def take_uid(locks: Path) -> tuple[int, int]:
    """A free uid of ``UIDS`` and the descriptor of its lock (held until this process exits)."""
    locks.mkdir(parents=True, exist_ok=True)
    busy = set()
    for proc in Path("/proc").iterdir():
        try:
            busy.add(proc.stat().st_uid) if proc.name.isdigit() else None
        except OSError:
            pass
    for uid in UIDS:
        if uid in busy:
            continue
        fd = os.open(locks / str(uid), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return uid, fd
        except BlockingIOError:
            os.close(fd)
    raise Refused(f"no free grading uid in {UIDS.start}-{UIDS.stop - 1}")


class Cgroup:
    """A cgroup capping resident memory and processes: v1 ``memory`` + ``pids`` hierarchies, or v2."""

    def __init__(self, name: str, memory: int, pids: int) -> None:
        v2 = CGROUP_V1 / "cgroup.controllers"
        if v2.exists():
            self.dirs = [CGROUP_V1 / "rnn-grader" / name]
            limits = {"memory.max": memory, "memory.swap.max": 0, "pids.max": pids}
            (CGROUP_V1 / "cgroup.subtree_control").write_text("+memory +pids")
            (CGROUP_V1 / "rnn-grader").mkdir(exist_ok=True)
            (CGROUP_V1 / "rnn-grader" / "cgroup.subtree_control").write_text("+memory +pids")
        else:
            self.dirs = [CGROUP_V1 / "memory" / "rnn-grader" / name, CGROUP_V1 / "pids" / "rnn-grader" / name]
            limits = {
                "memory.limit_in_bytes": memory,
                "memory.memsw.limit_in_bytes": memory,
                "pids.max": pids,
            }
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)
        for key, value in limits.items():
            for d in self.dirs:
                if (d / key).exists():
                    (d / key).write_text(str(value))
        if not any((d / "pids.max").exists() for d in self.dirs):
            raise OSError("no pids controller")

    @classmethod
    def existing(cls, name: str) -> "Cgroup":
        cgroup = cls.__new__(cls)
        cgroup.dirs = [d for d in CGROUP_V1.glob(f"*/rnn-grader/{name}")] + [CGROUP_V1 / "rnn-grader" / name]
        return cgroup

    def join(self) -> None:
        """Put the calling process (and so all it starts) into the cgroup."""
        for d in self.dirs:
            (d / "cgroup.procs").write_text(str(os.getpid()))

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in self.dirs:
            try:
                found |= {int(p) for p in (d / "cgroup.procs").read_text().split()}
            except OSError:
                pass
        return found

    def destroy(self) -> None:
        """Kill every process left in it, then remove it."""
        for _ in range(200):
            left = self.pids()
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
        for d in self.dirs:
            try:
                d.rmdir()
            except OSError:
                pass


def font_cache() -> Path | None:
    """matplotlib's font list for this machine, built once, outside any sandbox (None without matplotlib).

    A sandbox starts with an empty MPLCONFIGDIR, where importing matplotlib scans every font again (0.2 s of
    each submission that plots); it gets a copy of this list instead. The list names the system's and
    matplotlib's own fonts only: it is built with an empty HOME, so no learner's file is in it.
    """
    if FONT_CACHE.is_dir() or find_spec("matplotlib") is None:
        return FONT_CACHE if FONT_CACHE.is_dir() else None
    try:
        building = Path(tempfile.mkdtemp(prefix="mpl-", dir=BASE))
    except OSError:
        return None
    env = {"MPLCONFIGDIR": str(building), "HOME": str(building), "PATH": os.environ.get("PATH", "")}
    try:
        subprocess.run([sys.executable, "-c", "import matplotlib.font_manager"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)  # fmt: skip
        building.rename(FONT_CACHE)
    except (subprocess.SubprocessError, OSError):  # no list, or another sandbox's came first
        shutil.rmtree(building, ignore_errors=True)
    return FONT_CACHE if FONT_CACHE.is_dir() else None  # without it, each sandbox scans the fonts itself


def lock(folder: Path) -> int:
    """Hold an exclusive lock on ``folder`` while the returned descriptor is open (the grading's lifetime)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


@contextmanager
def _sweeping(how: int) -> Iterator[None]:
    """BASE/.sweep locked: exclusively by a sweep, shared while a private folder is made and locked."""
    fd = os.open(BASE / ".sweep", os.O_CREAT | os.O_RDONLY, 0o600)
    try:
        fcntl.flock(fd, how)
        yield
    finally:
        os.close(fd)


def private_folder() -> tuple[Path, int]:
    """A new private folder in BASE for one grading kernel (mode 0700), and its lock (see ``lock``).

    Made and locked under a shared lock that ``sweep`` takes exclusively: otherwise the sweep of a grading
    running in parallel could take a folder made but not yet locked for a leftover, and remove it.
    """
    with _sweeping(fcntl.LOCK_SH):
        folder = Path(tempfile.mkdtemp(prefix="k-", dir=BASE))
        return folder, lock(folder)


def sweep() -> list[str]:
    """Remove what gradings whose processes were killed left behind (their folders are no longer locked)."""
    removed = []
    with _sweeping(fcntl.LOCK_EX):
        for private in BASE.glob("k-*"):
            if not private.is_dir() or "." in private.name:
                continue
            try:
                fd = lock(private)
            except OSError:
                continue  # a grading in progress
            try:
                remove(private)
                removed.append(private.name)
            finally:
                os.close(fd)
    return removed


def remove(private: Path) -> None:
    """Remove a kernel's private folder and all named after it: its launcher's view of the library and mount
    points, and its cgroup (killing any process left in it). The launcher removes them itself, unless it was
    killed; then the grading (``release``) or, if that was killed too, the next ``sweep`` removes them. The
    private folder goes last: as long as anything named after it is left, ``sweep`` can find it."""
    Cgroup.existing(private.name).destroy()
    for leftover in [*BASE.glob(f"{private.name}.*"), private]:
        shutil.rmtree(leftover, ignore_errors=True)


def bwrap_argv(private: Path, view: Path, torch_real: bool, uid: int) -> tuple[list[str], dict[Path, Path]]:
    """bubblewrap's arguments (what the sandbox sees, and nothing else) and the folders to ``expose`` first.

    bwrap runs as the sandbox's uid, which cannot reach a folder below one closed to others (pyenv keeps
    Python below /root): such a folder is bound first, in the launcher's own mount namespace, to a reachable
    place (``expose``), and bwrap binds it from there.
    """
    venv = Path(sys.prefix)
    rnnlib = Path(find_spec("rnnlib").submodule_search_locations[0])
    grader = Path(__file__).parent
    binds = {
        Path(sys.base_prefix): Path(sys.base_prefix),
        venv: venv,
        view / "rnnlib": rnnlib,
        grader: grader,
    }
    if not torch_real:
        binds[view / "torch"] = Path(find_spec("torch").submodule_search_locations[0])
    argv = ["bwrap", "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
            "--uid", str(uid), "--gid", str(uid), "--hostname", "sandbox", "--clearenv",
            "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
            "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/sbin", "/sbin",
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp",
            "--tmpfs", "/dev/shm",
            "--tmpfs", "/run", "--dir", "/etc"]  # fmt: skip
    for name in ("ld.so.cache", "localtime", "passwd", "group", "nsswitch.conf"):
        if Path("/etc", name).exists():
            argv += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    exposed = {}
    for source, target in binds.items():
        if not _reachable(source):
            exposed[source] = private.parent / f"{private.name}.exposed{len(exposed)}"
        argv += ["--ro-bind", str(exposed.get(source, source)), str(target)]
    argv += ["--bind", str(private), str(private), "--chdir", str(private / "work")]
    environment = ENVIRONMENT | {
        "PATH": f"{venv}/bin:/usr/bin:/bin",
        "HOME": str(private / "work"),
        "IPYTHONDIR": str(private / "ipython"),
        "MPLCONFIGDIR": str(private / "mpl"),
    }
    for key, value in environment.items():
        argv += ["--setenv", key, value]
    return argv, exposed


def _reachable(path: Path) -> bool:
    """Whether every folder above ``path`` lets other users through."""
    return all(parent.stat().st_mode & 0o001 for parent in path.parents)


def expose(folders: dict[Path, Path]) -> None:
    """In a mount namespace of this process's own, bind each folder to a reachable place (root only)."""
    if not folders:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    calls = [("unshare", CLONE_NEWNS), ("mount", None, b"/", None, MS_REC | MS_PRIVATE, None)]
    for source, place in folders.items():
        place.mkdir(exist_ok=True)
        calls.append(("mount", str(source).encode(), str(place).encode(), None, MS_BIND | MS_REC, None))
    for name, *args in calls:
        if getattr(libc, name)(*args) != 0:
            raise OSError(ctypes.get_errno(), f"{name}: {os.strerror(ctypes.get_errno())}")


def _limit(settings: dict) -> None:
    """In the child before exec: CPU time (a SIGXCPU first, then the kill), file size, no core dumps."""
    resource.setrlimit(resource.RLIMIT_CPU, (settings["cpu"], settings["cpu"] + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (settings["file_size"], settings["file_size"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _signal_kernel(connection: str, signum: int) -> None:
    """Send ``signum`` to the kernel started with ``connection`` (not bwrap, whose argv names it too)."""
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if proc.name.isdigit() and argv[1:3] == [b"-m", b"grader.kernel"] and connection.encode() in argv:
                os.kill(int(proc.name), signum)
        except OSError:
            pass


def launch(settings: dict[str, Any], connection: Path) -> int:
    """Set up every protection, run the kernel in it, tear everything down; the kernel's exit status."""
    allowed = set(settings["allow_without"])
    if os.geteuid() == 0:
        sweep()
    private = Path(json.loads(connection.read_text())["ip"]).parent  # made for this kernel only
    kernel = [sys.executable, "-m", "grader.kernel", "-f", str(private / "connection.json")]
    shutil.copy(connection, private / "connection.json")
    # the submission's folder without its notebooks: the one being graded holds the restored hidden tests
    shutil.copytree(
        os.getcwd(), private / "work", ignore=shutil.ignore_patterns("*.ipynb"), dirs_exist_ok=True
    )
    fonts = font_cache()
    if fonts:
        shutil.copytree(fonts, private / "mpl")
    view = Path(str(private) + ".view")
    hidden = write_view(settings["assignment"], Path(find_spec("rnnlib").submodule_search_locations[0]), view)
    off: list[str] = []
    cgroup = uid_lock = None
    exposed: dict[Path, Path] = {}
    try:
        if "sandbox" in allowed:
            off.append("sandbox")
            argv = kernel
        else:
            if not _tools():
                raise Refused(NEEDS)
            uid, uid_lock = take_uid(BASE / "uids")
            for path in [private, *private.rglob("*")]:
                os.chown(path, uid, uid, follow_symlinks=False)
            argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
            sandbox, exposed = bwrap_argv(private, view, hidden.torch, uid)
            argv += [*sandbox, "--", *kernel]
        try:
            cgroup = Cgroup(private.name, settings["memory"], settings["processes"])
        except OSError as error:
            if "cgroup" not in allowed:
                raise Refused(f"cannot create a cgroup with memory and pids caps ({error})") from None
            off.append("cgroup")
        what = "" if not off else f" WITHOUT {' and '.join(off)} (the instructor's opt-out)"
        print(f"[rnn-grader] sandbox for {settings['assignment']}{what}", file=sys.stderr, flush=True)

        def child_setup() -> None:
            expose(exposed)
            if cgroup:
                cgroup.join()
            _limit(settings)

        # bwrap would die of the kernel manager's SIGINT to the process group (and the sandbox with it):
        # it gets a session of its own, and the interrupt is passed to the kernel process alone.
        child = subprocess.Popen(argv, preexec_fn=child_setup, start_new_session=True)
        signal.signal(signal.SIGINT, lambda *_: _signal_kernel(kernel[-1], signal.SIGINT))
        signal.signal(signal.SIGTERM, lambda *_: child.kill())
        return child.wait()
    finally:
        if cgroup:
            cgroup.destroy()
        shutil.rmtree(view, ignore_errors=True)
        for place in exposed.values():
            place.rmdir()
        shutil.rmtree(private / "work", ignore_errors=True)
        if uid_lock is not None:
            os.close(uid_lock)


def main(argv: list[str]) -> None:
    settings = json.loads(os.environ.pop(SETTINGS))
    try:
        sys.exit(launch(settings, Path(argv[argv.index("-f") + 1])))
    except Refused as error:
        print(f"[rnn-grader] refusing to grade: {error}", file=sys.stderr, flush=True)
        sys.exit(3)


if __name__ == "__main__":
    main(sys.argv[1:])
