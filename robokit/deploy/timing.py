"""Wall-clock pacing for the real-time control loop: a precise wait and SCHED_FIFO for the loop thread."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

log = logging.getLogger(__name__)


def precise_wait(t_target: float, spin_s: float = 0.001) -> None:
    """Sleep until ``t_target`` (time.perf_counter clock): a plain sleep, then a short busy spin."""
    remaining = t_target - time.perf_counter()
    if remaining > spin_s:
        time.sleep(remaining - spin_s)
    while time.perf_counter() < t_target:
        pass


class RealtimePriority:
    """Run the calling thread SCHED_FIFO for a while (Linux), restoring its policy afterwards.

    A loaded machine delays a woken thread by milliseconds; a real-time thread is scheduled at once.
    Needs the right to raise priority (root, CAP_SYS_NICE or an ``rtprio`` limit, as libfranka
    needs anyway); without it the thread runs at normal priority and the log says so.
    ``priority`` None does nothing.
    """

    def __init__(self, priority: int | None) -> None:
        self.priority = priority
        self._saved: tuple[int, Any] | None = None

    def __enter__(self) -> None:
        if self.priority is None or not hasattr(os, "sched_setscheduler"):
            return
        try:
            saved = (os.sched_getscheduler(0), os.sched_getparam(0))
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.priority))
            self._saved = saved
        except OSError as exc:
            log.warning("cannot use real-time priority %d (%s); running at normal priority. Grant rtprio "
                        "(e.g. '@realtime - rtprio 99' in /etc/security/limits.conf) to use it",
                        self.priority, exc)

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            policy, param = self._saved
            try:
                os.sched_setscheduler(0, policy, param)
            except OSError:
                log.warning("could not restore the loop thread's scheduling policy")
            self._saved = None
