"""Stop a whole run on SIGINT (Ctrl-C) or SIGTERM (``kill``, a scheduler), in one line.

Why not Python's KeyboardInterrupt: Nipype runs each node's interface in a context that turns
any exception, KeyboardInterrupt included, into that node's failure, and its Linear plugin
then goes on with the next node. Ctrl-C cost one scan ("segment step failed"), not the run,
and SIGTERM killed the process without releasing anything.

How: the signal is recorded and raised as :class:`Interrupted`, a BaseException, which the
plugins' ``except Exception`` let through. Where an interface swallowed it, the plugins'
status callback (:func:`check_interrupted`, called as each node starts and ends) raises it
again. Nipype's loggers go quiet at the signal: what they then report about the step it
stopped is not a failure.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """The run was stopped by a signal; its exit status is 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def signame(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


_received: int | None = None
"""The first signal of the block running under :func:`interruptible`; None before it."""


@contextmanager
def interruptible(mute: Iterable[str] = ("nipype",)) -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM raise :class:`Interrupted` where the main
    thread is, once: later signals are ignored so that the run's cleanup (stopping its
    workers, releasing its lock) is not cut short. The loggers named in ``mute`` and their
    children are silenced at the signal.

    A signal the process was started ignoring (``nohup``, a shell's background job) stays
    ignored; outside the main thread nothing changes.
    """
    global _received
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    muted = tuple(mute)

    def handler(signum: int, frame: FrameType | None) -> None:
        global _received
        if _received is not None:
            return
        _received = signum
        silenced.extend(_silence(muted))
        raise Interrupted(signum)

    _received = None
    silenced: list[logging.Logger] = []
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    for sig, old in previous.items():
        if old is not signal.SIG_IGN:
            signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            if old is not signal.SIG_IGN:
                signal.signal(sig, old)
        for logger in silenced:
            logger.disabled = False


def check_interrupted(*_node_status: object) -> None:
    """Raise :class:`Interrupted` when a signal has been received; Nipype's plugins call it
    with ``(node, status)`` at each node's start and end (``status_callback``)."""
    if _received is not None:
        raise Interrupted(_received)


def _silence(prefixes: tuple[str, ...]) -> list[logging.Logger]:
    """Disable the enabled loggers under ``prefixes``; returns them."""
    loggers = [logger for name, logger in list(logging.root.manager.loggerDict.items())
               if isinstance(logger, logging.Logger) and not logger.disabled
               and any(name == p or name.startswith(p + ".") for p in prefixes)]
    for logger in loggers:
        logger.disabled = True
    return loggers
