"""What a run reports: metrics, the NaN/Inf check, throughput, TensorBoard, tqdm, its summary.

Step metrics stay on the devices until a report is due (logging, checkpoint or
evaluation steps, and the first step), so the host does not wait on every step.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or Inf."""


class Progress:
    """Collects step metrics and reports them (process 0 writes; every process checks).

    Args:
      config: the run's config (``model``, ``norm``, ``batch_size``, ``progress_bar``).
      workdir: where TensorBoard events go.
      total_steps: the last step of the run.
      start_step: the step the run resumes after.
      first: :meth:`train.placement.Placement.first`, to fetch one replica's metrics.
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        workdir: str,
        total_steps: int,
        start_step: int,
        first: Callable[[Any], Any],
    ):
        from tensorboardX import SummaryWriter
        from tqdm import tqdm

        self.is_chief = jax.process_index() == 0
        self.workdir = workdir
        self.batch_size = config.batch_size
        self.first = first
        self.writer = SummaryWriter(workdir) if self.is_chief else None
        self.bar = tqdm(
            total=total_steps,
            initial=start_step,
            disable=not (self.is_chief and config.progress_bar),
            desc=f"{config.model} {config.norm}",
            unit="step",
        )
        self.pending: list[tuple[int, Any]] = []
        self.train_loss = math.nan
        self.timed_steps, self.timed_seconds = 0, 0.0
        self.tick: float | None = None

    @property
    def examples_per_sec(self) -> float | None:
        """Training throughput so far, the first (compiling) step excluded."""
        if not self.timed_seconds:
            return None
        return self.batch_size * self.timed_steps / self.timed_seconds

    def add(self, step: int, metrics: Any) -> None:
        """Keeps a step's device metrics until the next :meth:`fetch`."""
        self.pending.append((step, metrics))

    def fetch_due(self) -> bool:
        """The first step is fetched at once, so that its compilation is not timed."""
        return self.tick is None

    def fetch(self) -> list[tuple[int, dict[str, Any]]]:
        """Fetches the pending metrics, times the steps they cover, and checks them.

        Raises:
          NonFiniteLossError: a NaN/Inf loss or gradient norm.
        """
        fetched = [(step, self.first(metrics)) for step, metrics in self.pending]
        self.pending.clear()
        now = time.perf_counter()
        if self.tick is not None:
            self.timed_steps += len(fetched)
            self.timed_seconds += now - self.tick
        self.tick = now
        self.bar.update(len(fetched))
        for step, metrics in fetched:
            if not (np.isfinite(metrics["loss"]) and np.isfinite(metrics["grad_norm"])):
                raise NonFiniteLossError(
                    f"non-finite training loss ({metrics['loss']}) or gradient norm "
                    f"({metrics['grad_norm']}) at step {step}; stopping."
                )
        if fetched:
            self.train_loss = float(fetched[-1][1]["loss"])
        return fetched

    def restart_timer(self) -> None:
        """Excludes what ran since the fetch (checkpoints, evaluation) from the throughput."""
        self.tick = time.perf_counter()

    def log_train(self, fetched: list[tuple[int, dict[str, Any]]], step: int) -> None:
        """Mean metrics of the fetched steps to TensorBoard and the progress bar."""
        if not (self.is_chief and fetched):
            return
        means = {k: float(np.mean([m[k] for _, m in fetched])) for k in fetched[0][1]}
        rate = self.examples_per_sec or 0.0
        self.bar.set_postfix(
            loss=f"{means['loss']:.4f}",
            acc=f"{means['accuracy']:.3f}",
            lr=f"{means['learning_rate']:.4g}",
            ex_s=f"{rate:.0f}",
        )
        self.scalars("train", {**means, "examples_per_sec": rate}, step)

    def scalars(self, prefix: str, values: Mapping[str, float], step: int) -> None:
        """Writes ``prefix/key`` scalars (process 0)."""
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()

    def write_summary(
        self,
        config: ml_collections.ConfigDict,
        devices: int,
        final: Mapping[str, float],
        run: Mapping[str, Any],
    ) -> None:
        """``summary.json`` in the workdir (test scores, the run and its setting), and a line.

        ``run`` has at least ``steps`` and ``wall_seconds``.
        """
        rate = self.examples_per_sec
        summary = {
            "test_accuracy": final["accuracy"],
            "test_loss": final["loss"],
            **run,
            "train_loss": self.train_loss,
            "train_examples_per_sec": rate,
            "model": config.model,
            "norm": config.norm,
            "dataset": config.dataset,
            "parallelism": config.parallelism,
            "devices": devices,
            "processes": jax.process_count(),
            "batch_size": config.batch_size,
        }
        with open(os.path.join(self.workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        print(
            f"{config.model} ({config.norm}) on {config.dataset}: "
            f"test accuracy {final['accuracy']:.2%}, test loss {final['loss']:.4f}, "
            f"{run['steps']} steps, "
            + (f"{rate:.0f} examples/s, " if rate else "")
            + f"{run['wall_seconds']:.0f} s wall, {devices} devices ({config.parallelism})",
            flush=True,
        )
