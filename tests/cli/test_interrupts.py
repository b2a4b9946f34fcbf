"""Ctrl-C and kill: a run stops as a whole, in one line, leaves no process or lock behind,
and its rerun finishes from the cache. Real runs in their own processes, as users start them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import pytest

from bids_infantseg.utils.locks import LOCK_NAME
from tests.cli.test_participant import one_scan_dataset, outputs

ROOT = Path(__file__).resolve().parents[1]

SLOW_SEGMENT = """
import os, sys, time
from pathlib import Path
from bids_infantseg.interfaces import segmentation as interfaces

segment = interfaces.Segment._run_interface

def slow_segment(self, runtime):
    Path(os.environ["SEGMENT_STARTED"]).touch()
    time.sleep(60)
    return segment(self, runtime)

# at import, so that MultiProc's workers (the fork server imports this file) have it too
interfaces.Segment._run_interface = slow_segment

if __name__ == "__main__":
    from bids_infantseg.cli.main import main
    sys.exit(main())
"""
"""bids_infantseg whose segment step says it started, then waits a minute before it works:
the signal always reaches a run in the middle of a scan."""

PLUGINS = {"Linear": ["--nprocs", "1"], "MultiProc": ["--plugin", "MultiProc"]}


def _default_sigint() -> None:
    # a shell's background job starts with SIGINT ignored, which the run keeps
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Run:
    """A participant run in its own session (its processes are the session's), its stdout
    and stderr in files: processes it leaves behind could hold pipes open forever."""

    def __init__(self, folder: Path, script: Path | None, *args: str,
                 env: dict[str, str] | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.stdout, self.stderr = folder / "stdout", folder / "stderr"
        command = [str(script)] if script else ["-m", "bids_infantseg"]
        with self.stdout.open("w") as out, self.stderr.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, *command, *args], stdout=out, stderr=err,
                start_new_session=True, preexec_fn=_default_sigint,
                env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
        self.pid = self.proc.pid

    def wait(self, timeout_s: float) -> int:
        return self.proc.wait(timeout=timeout_s)

    def output(self) -> tuple[str, str]:
        return self.stdout.read_text(), self.stderr.read_text()

    def leftovers(self, timeout_s: float = 15.0) -> list[str]:
        """The session's processes still alive ``timeout_s`` after the run ended; killed."""
        deadline = time.monotonic() + timeout_s
        while (left := session_processes(self.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        with suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)  # the old code's orphans: not for the next test
        return left


def session_processes(sid: int) -> list[tuple[int, int, str]]:
    """``(pid, parent pid, command)`` of every live (not zombie) process in session ``sid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        state, ppid, _pgrp, session = text[text.rindex(")") + 2:].split()[:4]
        if int(session) == sid and state != "Z":
            found.append((int(stat.parent.name), int(ppid), command[:120]))
    return found


def wait_for(path: Path, run: Run, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert run.proc.poll() is None, run.output()
        assert time.monotonic() < deadline, "the segment step did not start"
        time.sleep(0.05)


pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


@pytest.mark.parametrize("plugin", PLUGINS)
@pytest.mark.parametrize("signum, whom", [(signal.SIGINT, "group"), (signal.SIGTERM, "pid")],
                         ids=["ctrl-c", "kill"])
def test_a_signal_stops_the_whole_run_in_one_line_and_the_rerun_finishes(
        tmp_path, tiny_model_dir, plugin, signum, whom):
    """Ctrl-C reaches the terminal's whole process group, ``kill PID`` the main process.
    Before: under Linear Ctrl-C failed the scan's segment step and the run went on (exit 1,
    "segment step failed"); under MultiProc it printed a traceback, and SIGTERM left the
    workers and the fork server running, orphaned, and the lock file behind."""
    root = one_scan_dataset(tmp_path / "bids")
    out, work, started = tmp_path / "out", tmp_path / "work", tmp_path / "segment-started"
    script = tmp_path / "slow_segment.py"
    script.write_text(SLOW_SEGMENT)
    options = ["--model", str(tiny_model_dir), "--device", "cpu", "-w", str(work),
               *PLUGINS[plugin]]
    proc = Run(tmp_path / "run", script, str(root), str(out), "participant", *options,
               env={"SEGMENT_STARTED": str(started)})
    wait_for(started, proc)
    conformed = next(work.rglob("conform/result_conform.pklz"))
    stamp = conformed.stat().st_mtime_ns

    os.killpg(proc.pid, signum) if whom == "group" else proc.proc.send_signal(signum)
    sent = time.monotonic()
    try:
        status = proc.wait(60)
    finally:
        took = time.monotonic() - sent
        left = proc.leftovers()
    stdout, stderr = proc.output()

    name = signal.Signals(signum).name
    assert status == 128 + signum, stderr
    assert stderr.splitlines()[-1] == (f"bids_infantseg: interrupted ({name}); rerun the same "
                                       "command to finish the missing scans"), stderr
    assert stderr.count("interrupted") == 1 and "Traceback" not in stderr, stderr
    assert "ERROR" not in stderr and "nipype" not in stderr and stdout == "", (stdout, stderr)
    assert took < 15, took
    assert not list(work.rglob(LOCK_NAME))
    assert left == []

    rerun = Run(tmp_path / "rerun", None, str(root), str(out), "participant", *options)
    try:
        assert rerun.wait(300) == 0, rerun.output()
    finally:
        left = rerun.leftovers()
    assert "1 of 1 scan(s) segmented" in rerun.output()[1]
    assert outputs(out, "sub-01", "sub-01/anat")["dseg"].is_file()
    assert conformed.stat().st_mtime_ns == stamp  # what was done is not done again
    assert left == []  # nor does a run that finished leave any


def test_no_process_of_a_multiproc_run_outlives_its_kill(tmp_path, tiny_model_dir):
    """SIGKILL, where no cleanup runs: the workers end themselves, and then their fork
    server. Before, they waited forever for work, the fork server for them."""
    root = one_scan_dataset(tmp_path / "bids")
    started = tmp_path / "segment-started"
    script = tmp_path / "slow_segment.py"
    script.write_text(SLOW_SEGMENT)
    proc = Run(tmp_path / "run", script, str(root), str(tmp_path / "out"), "participant",
               "--model", str(tiny_model_dir), "--device", "cpu", *PLUGINS["MultiProc"],
               env={"SEGMENT_STARTED": str(started)})
    wait_for(started, proc)
    assert len(session_processes(proc.pid)) >= 3  # main, fork server, worker(s)
    proc.proc.kill()
    proc.wait(60)
    assert proc.leftovers() == []


def test_a_worker_that_dies_fails_its_scan_instead_of_hanging_the_run(tmp_path,
                                                                       tiny_model_dir):
    """A MultiProc worker killed mid-step (the kernel's out-of-memory killer): before, the
    run never heard of its step again and waited forever."""
    root = one_scan_dataset(tmp_path / "bids")
    started = tmp_path / "segment-started"
    script = tmp_path / "slow_segment.py"
    script.write_text(SLOW_SEGMENT)
    proc = Run(tmp_path / "run", script, str(root), str(tmp_path / "out"), "participant",
               "--model", str(tiny_model_dir), "--device", "cpu", *PLUGINS["MultiProc"],
               env={"SEGMENT_STARTED": str(started)})
    wait_for(started, proc)
    processes = session_processes(proc.pid)
    fork_server = [pid for pid, ppid, command in processes
                   if ppid == proc.pid and "forkserver" in command]
    workers = [pid for pid, ppid, _command in processes if ppid in fork_server]
    assert workers
    os.kill(workers[0], signal.SIGKILL)
    try:
        status = proc.wait(120)
    finally:
        left = proc.leftovers()
    stderr = proc.output()[1]
    assert status == 1 and "Traceback" not in stderr, stderr
    assert "segment step failed: its worker process ended before the step did (killed, or " \
           "out of memory?)" in stderr
    assert left == []

