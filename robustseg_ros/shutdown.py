"""Ending a ROS process cleanly on SIGINT and SIGTERM, for the console scripts that spin nodes.

rclpy's own signal handler shuts the context down from inside the signal, while the executor may be
taking a message and a worker thread publishing: a traceback and exit code 1 follow now and then. Here
the signals only set an event; the script's loop ends, its nodes stop and are destroyed, and the context
is shut down last (``rclpy.init(..., signal_handler_options=SignalHandlerOptions.NO)``).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: Longest time (s) between a signal and the executor loop noticing it.
SPIN_PERIOD_S = 0.1


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """SIGINT and SIGTERM set the yielded event instead of interrupting; the previous handlers come back after."""
    stop = threading.Event()
    previous = {number: signal.signal(number, lambda *_: stop.set()) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def spin_until(executor, done: Callable[[], bool]) -> None:
    """Spin ``executor`` until ``done()``, checking at least every ``SPIN_PERIOD_S``."""
    while not done():
        executor.spin_once(timeout_sec=SPIN_PERIOD_S)
