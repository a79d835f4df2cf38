"""Preemption: a SIGTERM ends the loop at the next step boundary, with a checkpoint of that step.

Preemptible capacity announces the end of a job with SIGTERM and a grace period. Without a
handler the process dies at once and loses every step since its last periodic checkpoint. With
:class:`PreemptionWatch` (which ``train_and_evaluate`` holds while it trains) the signal only sets
a flag; the loop finishes the step it is in, saves that step's checkpoint, waits for the write,
logs one line naming the step and raises :class:`Preempted`, whose exit status is
:data:`PREEMPTED_EXIT_STATUS`. Running the same command again resumes from that checkpoint and
ends where an uninterrupted run ends.

Single-process runs only, for now: with several ``jax.distributed`` processes every process must
save at the same step, which JAX's preemption sync point
(``multihost_utils.reached_preemption_sync_point``) is for; that is not wired in yet (issue 24),
so a multi-process run keeps the default behaviour of SIGTERM.
"""

from __future__ import annotations

import signal
import threading
import types
from typing import Any

import jax
from absl import logging

# EX_TEMPFAIL of sysexits.h: a temporary failure, the same command should be retried.
PREEMPTED_EXIT_STATUS = 75


class Preempted(SystemExit):
    """The run saved a checkpoint and stopped on SIGTERM; its ``code`` is the exit status."""

    def __init__(self, step: int, directory: str):
        super().__init__(PREEMPTED_EXIT_STATUS)
        self.step = step
        self.message = (
            f"Preempted (SIGTERM): saved the checkpoint of step {step} in {directory}; run the "
            "same command again to resume."
        )

    def __str__(self) -> str:
        return self.message


class PreemptionWatch:
    """Turns SIGTERM into a flag that the loop reads at each step boundary (a context manager).

    Installed only in the main thread of a single-process run (Python runs signal handlers
    there); elsewhere :meth:`reached` is always False. The previous handler is put back on exit.
    """

    def __init__(self) -> None:
        self.signalled = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> PreemptionWatch:
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        if not self.signalled:
            logging.warning("SIGTERM: saving a checkpoint at the end of this step, then stopping.")
        self.signalled = True

    def reached(self, step: int) -> bool:
        """Whether the run must save ``step`` and stop."""
        return self.signalled

    def stopped(self, step: int, directory: str) -> Preempted:
        """The :class:`Preempted` to raise once the checkpoint of ``step`` is written; logs it."""
        stop = Preempted(step, directory)
        logging.warning("%s", stop)
        return stop
