"""The work folder's lock: one run at a time, a second refuses or waits, stale locks go."""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bids_infantseg.cli.participant import work_folder
from bids_infantseg.utils import locks
from bids_infantseg.utils.locks import LOCK_NAME, LockedError, hold

HOLD = """
import sys, time
from pathlib import Path
from bids_infantseg.utils.locks import hold
with hold(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def holder_process(folder: Path, seconds: float) -> subprocess.Popen:
    """Another run: a process holding the folder's lock for ``seconds``."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def stale_lock(folder: Path, pid: int, host: str | None = None) -> Path:
    path = folder / LOCK_NAME
    path.write_text(json.dumps({"host": host or socket.gethostname(), "pid": pid,
                                "started": "2026-01-01T00:00:00+00:00"}))
    return path


@pytest.fixture(params=["flock", "exclusive-file"])
def mode(request, monkeypatch):
    """Both ways of locking: flock, and the O_EXCL file where a file system has no flock."""
    if request.param == "exclusive-file":
        def no_flock(fd, operation):
            raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
        monkeypatch.setattr(locks.fcntl, "flock", no_flock)
    return request.param


def test_a_second_holder_is_refused_naming_the_first(tmp_path, mode):
    with hold(tmp_path) as me:
        written = json.loads((tmp_path / LOCK_NAME).read_text())
        assert (written["host"], written["pid"]) == (socket.gethostname(), os.getpid())
        with pytest.raises(LockedError) as refused, hold(tmp_path):
            pass
    message = str(refused.value)
    assert message == (f"the work folder {tmp_path} is in use by another run (host "
                       f"{me.host}, pid {me.pid}, started {me.started}); wait for it with "
                       "--wait-lock, or give this run another -w")
    assert not (tmp_path / LOCK_NAME).exists()  # released: nothing left behind
    with hold(tmp_path):
        pass


def test_another_process_holding_it_is_named(tmp_path):
    proc = holder_process(tmp_path, 30)
    try:
        with pytest.raises(LockedError, match=f"pid {proc.pid}, started"), hold(tmp_path):
            pass
    finally:
        proc.kill()
        proc.wait()
    with hold(tmp_path):  # its death released the lock, though its file is still there
        pass


def test_waiting_logs_once_then_proceeds(tmp_path, mode, caplog):
    outer = hold(tmp_path)
    outer.__enter__()
    threading.Timer(1.0, outer.__exit__, (None, None, None)).start()
    start = time.monotonic()
    with caplog.at_level(logging.INFO, logger="bids_infantseg"), \
            hold(tmp_path, wait=True, poll_s=0.1) as me:
        assert time.monotonic() - start >= 0.9
        assert json.loads((tmp_path / LOCK_NAME).read_text())["started"] == me.started
    waits = [r.getMessage() for r in caplog.records if "waiting" in r.getMessage()]
    assert len(waits) == 1 and f"pid {os.getpid()}" in waits[0] and str(tmp_path) in waits[0]


def test_a_stale_lock_of_a_dead_run_is_taken_over_with_a_warning(tmp_path, mode, caplog):
    pid = dead_pid()
    stale_lock(tmp_path, pid)
    with hold(tmp_path) as me:
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == me.pid
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "taking over" in warning and f"pid {pid}" in warning


def test_without_flock_a_lock_of_another_host_is_not_guessed_stale(tmp_path, monkeypatch):
    monkeypatch.setattr(locks.fcntl, "flock", lambda fd, op: (_ for _ in ()).throw(
        OSError(errno.ENOSYS, "no locks")))
    stale_lock(tmp_path, dead_pid(), host="elsewhere")
    with pytest.raises(LockedError, match="host elsewhere"), hold(tmp_path):
        pass


def test_each_selection_of_scans_has_its_own_work_folder(tmp_path):
    assert work_folder(tmp_path, None, None, None) == tmp_path / "all"
    assert work_folder(tmp_path, ["sub-01"], None, None) == tmp_path / "sub-01"
    assert work_folder(tmp_path, ["02", "sub-01", "01"], ["ses-1"], None) == \
        tmp_path / "sub-01+02_ses-1"
    filtered = work_folder(tmp_path, ["01"], None, {"t2w": {"acquisition": "fast"}})
    assert filtered.name.startswith("sub-01_filter-") and filtered != work_folder(
        tmp_path, ["01"], None, {"t2w": {"acquisition": "slow"}})
    many = work_folder(tmp_path, [f"{i:03d}" for i in range(40)], None, None)
    assert many.name.startswith("sel-") and len(many.name) == 16
    assert work_folder(tmp_path, ["../x"], None, None).name.startswith("sel-")
