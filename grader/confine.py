"""The launcher of the rnn-grader kernel: ``python -m grader.confine -f CONNECTION_FILE``.

Standard library only (it runs in every grading kernel). Settings come from grader.grading.GraderKernelManager
in the environment variable RNN_GRADER_SETTINGS; each protection the machine refuses is skipped and named in
the log line this prints on stderr.
"""

import ctypes
import json
import os
import pwd
import resource
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

SETTINGS = "RNN_GRADER_SETTINGS"  # the launcher's settings, passed in the kernel's environment
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18


class CPUTimeExceeded(Exception):
    """Raised in the running cell when the kernel has used its CPU-time cap."""


def _libc_call(name: str, *args: Any) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{name}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    encode = lambda s: None if s is None else s.encode()  # noqa: E731
    _libc_call("mount", encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags), encode(data))


def _hide(paths: list[str], private: Path) -> None:
    """Cover each directory with an empty unreadable tmpfs and each file with an empty unreadable file."""
    empty = private / "hidden"
    empty.touch(mode=0o000)
    for path in paths:
        if os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "mode=000,size=4k")
        else:
            _mount(str(empty), path, None, MS_BIND)
            _mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY)


def _closed_folders(paths: list[str]) -> list[Path]:
    """The folders on the way to ``paths`` closed to other users (e.g. /root holding pyenv), outer first."""
    closed = {d for p in paths for d in Path(p).parents if not d.stat().st_mode & 0o001}
    return sorted(closed, key=lambda d: len(d.parts))


def _open_way(paths: list[str], private: Path) -> None:
    """Replace each closed folder on the way to ``paths`` by a tmpfs holding only the way to them."""
    for n, closed in enumerate(_closed_folders(paths)):
        children = {Path(p).relative_to(closed).parts[0] for p in paths if closed in Path(p).parents}
        keep = {child: private / "way" / str(n) / child for child in children}
        for child, kept in keep.items():
            kept.mkdir(parents=True)
            _mount(str(closed / child), str(kept), None, MS_BIND | MS_REC)
        _mount("tmpfs", str(closed), "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=64k")
        for child, kept in keep.items():
            (closed / child).mkdir()
            _mount(str(kept), str(closed / child), None, MS_BIND | MS_REC)


def _raise_cpu_time_exceeded(signum: int, frame: Any) -> None:
    raise CPUTimeExceeded("the grading kernel used up its CPU time")


def _grading_user(name: str) -> pwd.struct_passwd | None:
    """The unprivileged user to become: only when started as root and the user exists."""
    try:
        return pwd.getpwnam(name) if name and os.geteuid() == 0 else None
    except KeyError:
        return None


def confine(settings: dict[str, Any], private: Path) -> tuple[list[str], list[str]]:
    """Apply every protection the machine allows to this process; return (active, unavailable) ones."""
    active, off = [], []
    as_root = os.geteuid() == 0
    user = _grading_user(settings["user"])
    python = [p for p in (sys.base_prefix, *sys.path) if os.path.exists(p)]  # what the kernel must read
    namespaces = CLONE_NEWNS | (0 if as_root else CLONE_NEWUSER)
    namespaces |= 0 if settings["network"] else CLONE_NEWNET
    try:
        _libc_call("unshare", namespaces)
        _mount(None, "/", None, MS_REC | MS_PRIVATE)  # no mount below leaks out to the instructor's
        if not settings["network"]:
            active.append("no network (new network namespace)")
        if settings["hide"]:
            _hide(settings["hide"], private)
            active.append(f"hidden: {', '.join(settings['hide'])}")
        if user:
            _open_way(python, private)
    except OSError as error:
        off.append(f"namespaces ({error})")
        user = user if not _closed_folders(python) else None
    gib, mib = settings["memory"] / 2**30, settings["file_size"] / 2**20
    limits = [  # (name, limit, soft, hard)
        (f"memory {gib:g} GiB", resource.RLIMIT_AS, settings["memory"], settings["memory"]),
        (f"CPU time {settings['cpu']} s", resource.RLIMIT_CPU, settings["cpu"], settings["cpu"] + 5),
        (f"file size {mib:g} MiB", resource.RLIMIT_FSIZE, settings["file_size"], settings["file_size"]),
        ("no core dumps", resource.RLIMIT_CORE, 0, 0),
    ]
    if user:  # RLIMIT_NPROC counts the processes of a user, and never those of root
        nproc = settings["processes"]
        limits.append((f"processes {nproc}", resource.RLIMIT_NPROC, nproc, nproc))
        for pool in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # threads count too
            os.environ.setdefault(pool, str(min(4, os.cpu_count() or 1)))
    for name, which, soft, hard in limits:
        try:
            resource.setrlimit(which, (soft, hard))
            active.append(name)
        except (OSError, ValueError) as error:
            off.append(f"{name} ({error})")
    signal.signal(signal.SIGXCPU, _raise_cpu_time_exceeded)
    if user:
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
        active.append(f"user {user.pw_name}")
    else:
        why = "not root" if not as_root else f"user {settings['user']!r} missing or unable to run Python"
        why = why if settings["user"] else "no user set"
        off.append(f"process cap and unprivileged user ({why})")
    return active, off


def main(argv: list[str]) -> None:
    """``python -m grader.confine -f CONNECTION_FILE``: confine this process, then become an ipykernel."""
    connection = Path(argv[argv.index("-f") + 1])
    info = json.loads(connection.read_text())
    private = Path(info["ip"]).parent  # made by GraderKernelManager for this kernel only
    settings = json.loads(os.environ.pop(SETTINGS))
    work = private / "work"  # a writable copy of the notebook's folder
    origin = os.getcwd()
    shutil.copytree(origin, work, symlinks=True)
    shutil.copy(connection, private / "connection.json")
    os.environ.update(HOME=str(work), IPYTHONDIR=str(private / "ipython"), MPLCONFIGDIR=str(private / "mpl"))
    os.chdir(work)
    owner = _grading_user(settings["user"])
    if owner:  # before any mount: the kernel's own files become the user's
        for path in [private, *private.rglob("*")]:
            os.chown(path, owner.pw_uid, owner.pw_gid, follow_symlinks=False)
    sys.path[:] = [p for p in sys.path if p != origin]  # IPython adds "" (the work copy) instead
    active, off = confine(settings, private)
    print(f"[rnn-grader] confined kernel: {'; '.join(active)}. Not available: {'; '.join(off) or 'none'}.",
          file=sys.stderr, flush=True)  # fmt: skip
    from ipykernel.kernelapp import launch_new_instance

    launch_new_instance(argv=["-f", str(private / "connection.json"), "--HistoryManager.hist_file=:memory:"])


if __name__ == "__main__":
    main(sys.argv[1:])
