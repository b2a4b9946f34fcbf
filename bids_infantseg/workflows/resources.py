"""How many CPUs a run may use, and how it shares them between scans and threads.

Nipype's MultiProc refuses to start (``Insufficient resources available for job``) when a
node asks for more threads than the plugin's ``n_procs``; the plan here makes every request
fit for any number of scans, CPUs, ``--nprocs`` and ``--omp-nthreads``.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import parent_process as mp_parent_process
from pathlib import Path
from typing import Any

from bids_infantseg.utils.errors import InfantsegError
from bids_infantseg.utils.interrupts import SIGNALS

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
SLURM_CPUS = ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE")
"""SLURM's allocation, the first one set wins (per task is what one job step may use)."""

NIPYPE_LOG_LEVELS = ("workflow_level", "interface_level", "utils_level")
"""Nipype's logging settings, passed to MultiProc's workers."""

NIPYPE_LOGGERS = ("nipype.workflow", "nipype.interface", "nipype.utils", "nipype.filemanip")

POOL_PLUGINS = ("MultiProc", "LegacyMultiProc")
"""Plugins that run nodes on this machine and check each node's request against n_procs."""


class PluginError(InfantsegError, ValueError):
    """A --plugin that Nipype does not have, or plugin arguments it cannot run with."""


@dataclass(frozen=True)
class RunPlan:
    """The Nipype plugin, its arguments, and the scans at once and threads per scan."""

    plugin: str
    plugin_args: dict[str, Any] = field(hash=False)
    concurrent: int
    threads: int


def available_cpus(cgroup_cpu_max: Path = CGROUP_CPU_MAX,
                   environ: Mapping[str, str] | None = None) -> int:
    """The CPUs this process may use: the least of its affinity, its cgroup v2 quota and
    SLURM's allocation. ``os.cpu_count()`` counts the whole machine, which a container or a
    cluster job shares with others."""
    environ = os.environ if environ is None else environ
    limits = [len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
              else os.cpu_count() or 1]
    quota = _cgroup_quota(cgroup_cpu_max)
    if quota is not None:
        limits.append(quota)
    slurm = next((environ[name] for name in SLURM_CPUS if environ.get(name)), None)
    if slurm is not None and slurm.strip().isdigit():
        limits.append(int(slurm))
    return max(1, min(limits))


def _cgroup_quota(cpu_max: Path) -> int | None:
    """CPUs of a cgroup v2 ``cpu.max`` (``"<quota> <period>"``, rounded up); None: no limit."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max" or not (quota.isdigit() and period.isdigit()) or int(period) == 0:
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def check_plugin(name: str | None, plugin_args: dict | None) -> None:
    """Refuse, before any work, a plugin Nipype does not have or counts it would wait on."""
    from nipype.pipeline import plugins as nipype_plugins  # not at import: the CLI starts fast

    if name is not None and not hasattr(nipype_plugins, f"{name}Plugin"):
        known = sorted(n[:-len("Plugin")] for n in dir(nipype_plugins)
                       if n.endswith("Plugin") and n != "Plugin")
        raise PluginError(f"--plugin {name}: not a Nipype plugin ({', '.join(known)})")
    for key in ("n_procs", "n_gpu_procs"):
        value = (plugin_args or {}).get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise PluginError(f"--plugin-args {key}: must be a positive integer, not {value!r}")


def choose_plugin(name: str | None, plugin_args: dict | None,
                  concurrent: int) -> tuple[str, dict]:
    """Nipype plugin and its arguments: the user's, else Linear for one scan at a time, else
    MultiProc.

    Linear for one at a time because it runs in this process: no pickling, plain tracebacks.
    """
    check_plugin(name, plugin_args)
    if name is None:
        return ("MultiProc", {**(plugin_args or {})}) if concurrent > 1 else ("Linear", {})
    return name, {**(plugin_args or {})}


def plan_run(plugin: str | None, plugin_args: dict | None, *, scans: int, cpus: int,
             nprocs: int, omp_nthreads: int | None, gpu: bool = False) -> RunPlan:
    """Scans at once (``--nprocs``, at most the scans there are), threads per scan, plugin.

    On this machine the threads are the CPUs' share of each scan (``--omp-nthreads`` at
    most that), so N scans never ask for more than the CPUs unless N alone is more; a pool
    plugin's ``n_procs`` holds the N scans' threads, and on a GPU ``n_gpu_procs`` one
    scan's, so one inference uses the GPU at a time. A cluster plugin's jobs run elsewhere:
    ``--omp-nthreads`` is taken as given there.
    """
    concurrent = max(1, min(nprocs, scans))
    name, args = choose_plugin(plugin, plugin_args, concurrent)
    share = max(1, cpus // concurrent)
    local = name == "Linear" or name in POOL_PLUGINS
    threads = min(omp_nthreads or share, share) if local else omp_nthreads or share
    if name not in POOL_PLUGINS:
        return RunPlan(name, args, concurrent, threads)
    threads = min(threads, args.setdefault("n_procs", concurrent * threads))
    if gpu:
        threads = min(threads, args.setdefault("n_gpu_procs", threads))
    if name == "MultiProc":
        # Workers forked from a process whose torch threads have run deadlock in torch
        # (seen in grid_sample); the fork server starts them from a clean process.
        args.setdefault("mp_context", "forkserver")
    return RunPlan(name, args, concurrent, threads)


@contextmanager
def plugin_runner(plan: RunPlan, log_levels: Mapping[str, str],
                  silent: bool = False) -> Iterator[Any]:
    """What ``Workflow.run(plugin=...)`` takes, for the block's time: the plugin's name, or
    for a plugin that runs nodes on this machine (Linear, MultiProc, LegacyMultiProc) the
    plugin itself, whose worker processes are stopped when the block ends, however it ends.

    Why stop them here: Nipype shuts its pool down only when the workflow ran to its end. A
    run stopped by an error or a signal left its workers running their nodes, so that the
    interpreter's exit waited for them (Ctrl-C did not stop a MultiProc run), and a killed
    run left them waiting forever on pipes they hold themselves (orphans holding GBs).

    These plugins call :func:`~bids_infantseg.utils.interrupts.check_interrupted` as each node
    starts and ends, so that a signal an interface swallowed still stops the run.

    MultiProc's workers come from a fork server, so they import Nipype afresh and log
    every node at Nipype's default INFO ("[Node] Setting-up ...", ~45 lines a scan)
    whatever this process set. Their pool is made again here with an initializer
    (:func:`init_worker`) that runs Nipype's own (the working folder) and then sets the
    levels (``silent``: none, see :func:`set_nipype_logging`); the pool has started no
    worker yet. Linear runs in this process, LegacyMultiProc
    forks it, and cluster plugins' job scripts apply the workflow's configuration, levels
    included: all already quiet.
    """
    if plan.plugin != "Linear" and plan.plugin not in POOL_PLUGINS:
        yield plan.plugin
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from nipype.pipeline import plugins as nipype_plugins

    from bids_infantseg.utils.interrupts import check_interrupted

    plugin_args = {**plan.plugin_args, "status_callback": check_interrupted}
    runner = getattr(nipype_plugins, f"{plan.plugin}Plugin")(plugin_args=plugin_args)
    if plan.plugin == "MultiProc":
        runner.pool.shutdown(wait=False)
        runner.pool = ProcessPoolExecutor(
            max_workers=runner.processors, initializer=init_worker,
            initargs=(runner._cwd, dict(log_levels), silent),
            mp_context=mp.get_context(runner.plugin_args.get("mp_context")))
        runner._async_callback = partial(_keep_result, runner)
    try:
        yield runner
    finally:
        pool = getattr(runner, "pool", None)
        if pool is not None:
            _stop_workers(pool)


def _stop_workers(pool: Any, grace_s: float = 5.0) -> None:
    """End a plugin's pool now: its workers are sent SIGTERM, and SIGKILL after ``grace_s``
    (LegacyMultiProc's forked workers inherit this process's handlers and may not end on
    SIGTERM). Nothing to do after a finished run (Nipype shut the pool down). SIGINT and
    SIGTERM wait meanwhile, so that a signal cannot leave workers behind."""
    from concurrent.futures import ProcessPoolExecutor

    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        if isinstance(pool, ProcessPoolExecutor):
            workers = list((pool._processes or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
        else:  # LegacyMultiProc's multiprocessing.Pool
            workers = list(pool._pool)
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
        deadline = time.monotonic() + grace_s
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                worker.kill()
                worker.join()
        if not isinstance(pool, ProcessPoolExecutor):
            pool.terminate()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


def _keep_result(runner: Any, future: Future) -> None:
    """MultiProc's result callback, also for a task whose worker died (killed, out of memory,
    stopped by :func:`_stop_workers`): Nipype's raises in the pool's thread, which logs a
    traceback, and its run never hears of the task again."""
    from concurrent.futures.process import BrokenProcessPool

    try:
        result = future.result()
    except BaseException as exc:  # noqa: BLE001 - CancelledError, BrokenProcessPool
        taskid = next((t for t, f in list(runner._task_obj.items()) if f is future), None)
        if taskid is None:
            return
        if isinstance(exc, BrokenProcessPool):
            exc = RuntimeError("its worker process ended before the step did (killed, or out "
                               f"of memory?): {exc}")
        result = {"result": None, "taskid": taskid,
                  "traceback": traceback.format_exception(exc)}
    runner._taskresult[result["taskid"]] = result


def set_nipype_logging(levels: Mapping[str, str], silent: bool = False) -> None:
    """Nipype's ``[logging]`` levels in this process; ``silent``: none of its messages.

    Why silent (at default verbosity): a scan's failure is the run's FAILED line, from the
    crash file; Nipype's own report of it (warnings, "Node failed", the traceback, and again
    the traceback while saving the crash file) made a full disk ~40 lines.
    """
    from nipype import config
    from nipype import logging as nipype_logging

    config.update_config({"logging": dict(levels)})
    nipype_logging.update_logging(config)
    if silent:
        for name in NIPYPE_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def init_worker(cwd: str, log_levels: dict[str, str], silent: bool = False) -> None:
    """A MultiProc worker's start: Nipype's own initializer, then the run's log levels.

    The worker also ignores SIGINT, which Ctrl-C sends to every process of the terminal's
    group: the main process stops the run and its workers (a worker's KeyboardInterrupt
    printed a traceback). And it ends when the main process is gone, however that died: a
    fork server's workers otherwise wait forever for work (and the fork server with them).
    """
    from nipype.pipeline.plugins.multiproc import process_initializer

    process_initializer(cwd)
    set_nipype_logging(log_levels, silent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = mp_parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), daemon=True,
                         name="exit-with-run").start()


def _exit_with(parent: Any) -> None:
    parent.join()  # returns once the main process has ended
    os._exit(1)
