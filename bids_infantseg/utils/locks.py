"""One run at a time per work folder: a lock file holding the run's host, pid and start time.

Why: two runs sharing a Nipype work folder delete and rewrite each other's intermediate
files (both ended "0 of 2 scan(s) segmented", FileNotFoundError on ``conformed.nii.gz``).
The second run refuses in one line naming the first, or waits for it.

How: ``flock`` on the lock file; the kernel (or the NFS server, through the client's POSIX
lock emulation) releases it when the holding process dies, however it dies, so a killed run
never blocks the next one. A lock file left behind by such a run is taken over with a
warning naming it. Where the file system has no locks (``flock`` fails, e.g. Lustre without
the ``flock`` mount option), the file is created exclusively instead (``O_EXCL``) and a stale
one is recognised by its pid on this host; a stale lock of another host must then be removed
by hand (the refusal names the file).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from bids_infantseg.utils.errors import InfantsegError

LOGGER = logging.getLogger("bids_infantseg")

LOCK_NAME = "bids_infantseg.lock"
NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
"""``flock`` errors meaning the file system has no locks (not that the lock is held)."""


class LockedError(InfantsegError):
    """Another run holds the work folder; the message names it in one line."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: host name, process id and start time (UTC, ISO 8601)."""

    host: str
    pid: int
    started: str

    def __str__(self) -> str:
        return f"host {self.host}, pid {self.pid}, started {self.started}"

    @classmethod
    def me(cls) -> Holder:
        return cls(socket.gethostname(), os.getpid(),
                   datetime.now(UTC).isoformat(timespec="seconds"))

    def alive(self) -> bool | None:
        """Whether the process still runs; None when it is on another host (unknowable)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's live process
            return True
        return True


@contextmanager
def hold(folder: Path, *, wait: bool = False, poll_s: float = 1.0) -> Iterator[Holder]:
    """Hold the lock of ``folder`` (which must exist) while the block runs.

    Raises :class:`LockedError` when another run holds it, or with ``wait`` logs once that
    it waits and polls every ``poll_s`` seconds until the lock is free.
    """
    path = Path(folder) / LOCK_NAME
    me = Holder.me()
    fd = _acquire(path, me, wait, poll_s)
    try:
        yield me
    finally:
        # removed while still held, so that it is never another run's file that goes
        path.unlink(missing_ok=True)
        os.close(fd)


def _acquire(path: Path, me: Holder, wait: bool, poll_s: float) -> int:
    """The lock's open file, locked and naming this run.

    The file is created exclusively when missing, so that where ``flock`` is not supported
    creating it is the lock; otherwise ``flock`` decides, and a file left by a run that died
    holding it is taken over.
    """
    waiting = False
    while True:
        try:
            fd, created = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            try:
                fd, created = os.open(path, os.O_RDWR), False
            except FileNotFoundError:  # released meanwhile
                continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd, retry=True)
            os.close(fd)
            waiting = _busy(path, holder, wait, waiting)
            time.sleep(poll_s)
            continue
        except OSError as err:
            if err.errno not in NO_LOCKS:
                os.close(fd)
                raise
            if created:  # no flock on this file system: creating the file was the lock
                _write(fd, me)
                return fd
            holder = _read(fd, retry=True)
            os.close(fd)
            if holder is not None and holder.alive() is False:
                LOGGER.warning("%s: taking over the stale lock of %s, no longer running",
                               path.parent, holder)
                path.unlink(missing_ok=True)
                continue
            waiting = _busy(path, holder, wait, waiting)
            time.sleep(poll_s)
            continue
        if not _is_file_at(fd, path):  # its holder removed it as we opened it: start again
            os.close(fd)
            continue
        left = None if created else _read(fd)
        if left is not None:
            LOGGER.warning("%s: taking over the lock of a run that ended without releasing "
                           "it (%s); it was killed or its host failed", path.parent, left)
        _write(fd, me)
        return fd


def _busy(path: Path, holder: Holder | None, wait: bool, waiting: bool) -> bool:
    """Refuse, or log once that this run waits; returns whether it is waiting."""
    who = str(holder) if holder else f"unknown: {path} cannot be read"
    if not wait:
        raise LockedError(f"the work folder {path.parent} is in use by another run ({who}); "
                          "wait for it with --wait-lock, or give this run another -w")
    if not waiting:
        LOGGER.info("waiting for the run holding the work folder %s (%s) to finish "
                    "(--wait-lock)", path.parent, who)
    return True


def _is_file_at(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _write(fd: int, me: Holder) -> None:
    data = (json.dumps(asdict(me)) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def _parse(data: bytes) -> Holder | None:
    try:
        content = json.loads(data)
        return Holder(str(content["host"]), int(content["pid"]), str(content["started"]))
    except (ValueError, KeyError, TypeError):
        return None


def _read(fd: int, retry: bool = False) -> Holder | None:
    """The holder written in the open lock file; ``retry`` gives a run that has just taken
    the lock a moment to write itself in."""
    for attempt in range(5 if retry else 1):
        holder = _parse(os.pread(fd, 4096, 0))
        if holder is not None or not retry:
            return holder
        time.sleep(0.05 * (attempt + 1))
    return None
