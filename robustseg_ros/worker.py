"""The perception node's inference worker: one thread fed through a one-frame slot.

A newer frame replaces a pending one (``on_drop`` counts it), so latency never grows with a queue.
``stop`` drops the pending frame, wakes the thread and joins it once the frame in progress is done: after
``stop`` the worker runs nothing more, which a clean shutdown needs before the ROS context goes away.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

Job = TypeVar("Job")


class InferenceWorker(Generic[Job]):
    """Runs ``process(job)`` on its own thread for the newest submitted job; ``process`` must not raise."""

    def __init__(self, process: Callable[[Job], None], on_drop: Callable[[], None],
                 name: str = "robustseg_inference") -> None:
        self._process = process
        self._on_drop = on_drop
        self._slot = threading.Condition()
        self._pending: Job | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Put ``job`` in the slot; a job still waiting there is dropped (``on_drop``). Ignored once stopping."""
        with self._slot:
            if self._stopping:
                return
            if self._pending is not None:
                self._on_drop()
            self._pending = job
            self._slot.notify()

    def stop(self, timeout_s: float) -> bool:
        """Drop any pending job, wait up to ``timeout_s`` (s) for the job in progress; True when the thread ended."""
        with self._slot:
            self._stopping = True
            self._pending = None
            self._slot.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _take(self) -> Job | None:
        with self._slot:
            while self._pending is None and not self._stopping:
                self._slot.wait()
            job, self._pending = self._pending, None
            return None if self._stopping else job

    def _run(self) -> None:
        while (job := self._take()) is not None:
            self._process(job)
