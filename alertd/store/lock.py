"""The state directory's lock: one alertd process per state directory.

The directory itself is flocked (deleting ``alertd.lock`` cannot let a second process
in); ``alertd.lock`` is locked too and names the holder's pid, so the second one can say
who holds it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from alertd.errors import StoreError
from alertd.store.files import fix_for, open_nofollow

LOCK_FILE = "alertd.lock"


def _flock(fd: int, state_dir: Path, *, required: bool) -> None:
    """An exclusive, non-blocking flock; StoreError naming the holder when it is taken."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise StoreError(
                f"state directory {state_dir} is in use by alertd (pid {_holder(state_dir)}); "
                "stop that one first or give this one another state_dir"
            ) from exc
        if required:
            raise StoreError(
                f"cannot lock {state_dir}: {exc.strerror or exc} (a file system without "
                "locks?); give alertd a local state_dir"
            ) from exc


def _holder(state_dir: Path) -> str:
    """The pid holding ``state_dir``'s lock: ``alertd.lock`` names it; when someone
    deleted that file (the second alertd then made it again, empty), the kernel's table
    of locks (Linux's /proc/locks) still knows who locks the directory. '?' otherwise."""
    with contextlib.suppress(OSError):
        named = (state_dir / LOCK_FILE).read_text(encoding="utf-8").strip()
        if named:
            return named
    try:
        inode = str(os.stat(state_dir).st_ino)
        table = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
    except OSError:
        return "?"
    pids = set()
    for line in table.splitlines():  # "3: FLOCK  ADVISORY  WRITE 4242 08:01:123456 0 EOF"
        fields = line.split()
        at = fields.index("FLOCK") if "FLOCK" in fields else -1
        if 0 <= at < len(fields) - 4 and fields[at + 4].rpartition(":")[2] == inode:
            pids.add(fields[at + 3])
    return pids.pop() if len(pids) == 1 else "?"


class DirectoryLock:
    """An exclusive lock on the state directory itself, held while the store is open.

    Locking the directory (not a file in it) means deleting ``alertd.lock`` cannot let a
    second alertd in; that file only tells the second one the first one's pid.
    """

    def __init__(self, fd: int, pid_fd: int) -> None:
        self.fd = fd
        self.pid_fd = pid_fd

    @classmethod
    def take(cls, state_dir: Path) -> DirectoryLock:
        """Lock ``state_dir`` (creating it), or StoreError naming the pid that holds it.

        ``alertd.lock`` is locked too, as alertd 0.1 did (so an old and a new alertd
        exclude each other), and it stands in where a directory cannot be locked (NFS).
        Unbuffered writes: a full disk fails the write itself, never a later close.
        """
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            pid_fd = open_nofollow(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(
                f"cannot use state directory {state_dir}: {exc.strerror or exc}; {fix_for(exc)}"
            ) from exc
        fd = -1
        try:
            _flock(pid_fd, state_dir, required=True)
            fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
            _flock(fd, state_dir, required=False)
            os.ftruncate(pid_fd, 0)
            os.pwrite(pid_fd, str(os.getpid()).encode("ascii"), 0)
        except BaseException as exc:
            os.close(pid_fd)
            if fd >= 0:
                os.close(fd)
            if isinstance(exc, OSError):
                raise StoreError(
                    f"cannot write {state_dir / LOCK_FILE}: {exc.strerror or exc}; {fix_for(exc)}"
                ) from exc
            raise
        return cls(fd, pid_fd)

    def close(self) -> None:
        """Release the lock."""
        os.close(self.pid_fd)
        if self.fd >= 0:
            os.close(self.fd)
