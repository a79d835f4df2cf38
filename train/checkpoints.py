"""Orbax checkpoints of the train state, and the best-validation state of the paper's protocol.

Checkpoints hold the state as arrays replicated over all devices
(:meth:`train.placement.Placement.to_global`), so a run may resume under
either placement and on another device count.

A run resumes from the newest checkpoint that restores (:func:`restore_latest`):
one that fails to read (a torn write, a truncated copy, missing files, another
model's tree) is skipped with a warning and moved, never deleted, to
``workdir/unreadable_checkpoints/`` (it may be evidence; and orbax would not
write a new checkpoint below a step it still lists).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import flax
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from train.placement import Placement


def checkpoint_manager(
    workdir: str, config: ml_collections.ConfigDict, max_to_keep: int | None = None
) -> ocp.CheckpointManager:
    """Checkpoints in ``workdir/checkpoints``, the last ``max_to_keep`` (default: the config's)."""
    if max_to_keep is None:
        max_to_keep = config.max_checkpoints_to_keep
    return ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
    )


class CheckpointRestoreError(RuntimeError):
    """No checkpoint of a run's directory restores."""


def restore_checkpoint(
    manager: ocp.CheckpointManager, placement: Placement, host_state: Any, step: int | None = None
) -> Any:
    """Checkpoint ``step`` (default: the latest) as device state, or the ``host_state`` placed on
    devices when there is no checkpoint.

    Raises:
      CheckpointRestoreError: the checkpoint does not restore (no fallback: see
        :func:`restore_latest` for that).
    """
    step = manager.latest_step() if step is None else step
    if step is None:
        return placement.put_state(host_state)
    try:
        return _restore(manager, placement, host_state, step)
    except Exception as error:
        failure = [(step, _first_line(error))]
        raise CheckpointRestoreError(_none_restores(manager, failure)) from None


def restore_latest(
    manager: ocp.CheckpointManager, placement: Placement, host_state: Any
) -> tuple[Any, int]:
    """The newest checkpoint that restores, as device state, and its step.

    Returns ``(host_state on devices, 0)`` when there is no checkpoint. Each newer
    checkpoint that fails to restore is logged (one warning: its step and the first
    line of the error) and moved to ``unreadable_checkpoints/`` beside the checkpoint
    directory, so that the run can write its steps again. Every process tries the
    same steps and must restore the same one.

    Raises:
      CheckpointRestoreError: checkpoints exist and none restores; they are left in place.
    """
    failures: list[tuple[int, str]] = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            state = _restore(manager, placement, host_state, step)
        except Exception as error:
            failures.append((step, _first_line(error)))
            logging.warning(
                "Checkpoint step %d in %s does not restore (%s); trying an older one.",
                step,
                manager.directory,
                failures[-1][1],
            )
            continue
        if failures:
            _set_aside(manager, [failed for failed, _ in failures])
        return state, step
    if failures:
        raise CheckpointRestoreError(_none_restores(manager, failures))
    return placement.put_state(host_state), 0


def _restore(
    manager: ocp.CheckpointManager, placement: Placement, host_state: Any, step: int
) -> Any:
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(
            np.shape(x), np.asarray(x).dtype, sharding=placement.replicated
        ),
        flax.serialization.to_state_dict(host_state),
    )
    restored = manager.restore(step, args=ocp.args.StandardRestore(target))
    return placement.from_global(flax.serialization.from_state_dict(host_state, restored))


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _set_aside(manager: ocp.CheckpointManager, steps: list[int]) -> None:
    """Moves checkpoints ``steps`` out of the manager's directory (process 0; all wait)."""
    directory = os.fspath(manager.directory)
    aside = os.path.join(os.path.dirname(directory), "unreadable_checkpoints")
    if jax.process_count() > 1:
        # Each process must have fallen back to the same step before any of them moves files.
        multihost_utils.assert_equal(np.asarray(steps), "processes restored different checkpoints")
    if jax.process_index() == 0:
        os.makedirs(aside, exist_ok=True)
        for step in steps:
            destination = os.path.join(aside, str(step))
            suffix = 1
            while os.path.exists(destination):  # The same step may go bad twice.
                destination, suffix = os.path.join(aside, f"{step}.{suffix}"), suffix + 1
            shutil.move(os.path.join(directory, str(step)), destination)
            logging.warning("Moved unreadable checkpoint step %d to %s.", step, destination)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("unreadable checkpoints set aside")
    manager.reload()


def _none_restores(manager: ocp.CheckpointManager, failures: list[tuple[int, str]]) -> str:
    tried = "; ".join(f"step {step}: {line}" for step, line in failures)
    return (
        f"No checkpoint in {manager.directory} restores (tried {tried}). They are left "
        "as they are. To start this run afresh, move that directory away (e.g. append .bad "
        "to its name); to resume, put a readable copy of a checkpoint back into it. A "
        "checkpoint of another config (a different model or optimizer) does not restore "
        "either: use a new workdir for a new config."
    )


def save_checkpoint(
    manager: ocp.CheckpointManager, placement: Placement, state: Any, step: int
) -> None:
    """Saves the device ``state`` as checkpoint ``step`` (asynchronously)."""
    global_state = flax.serialization.to_state_dict(placement.to_global(state))
    manager.save(step, args=ocp.args.StandardSave(global_state))


def kept_checkpoint(manager: ocp.CheckpointManager) -> str:
    """A sentence naming the latest checkpoint, once written, for an error message."""
    manager.wait_until_finished()
    kept = manager.latest_step()
    if kept is None:
        return "No checkpoint had been written yet."
    return f"The last good checkpoint (step {kept}) is kept in {manager.directory}."


class BestValidation:
    """Keeps the state of the step with the best validation accuracy in ``workdir/best``.

    The accuracy and step sit next to the checkpoint in ``best.json``, so a
    resumed run goes on comparing against them.
    """

    def __init__(self, workdir: str, config: ml_collections.ConfigDict):
        self.directory = os.path.join(workdir, "best")
        self.manager = checkpoint_manager(self.directory, config, max_to_keep=1)
        self.record = os.path.join(self.directory, "best.json")
        self.accuracy: float = -1.0
        self.step: int | None = None
        if os.path.exists(self.record):
            with open(self.record) as f:
                saved = json.load(f)
            self.accuracy, self.step = saved["validation_accuracy"], saved["step"]

    def offer(self, placement: Placement, state: Any, step: int, accuracy: float) -> None:
        """Saves ``state`` if ``accuracy`` beats the best so far."""
        if accuracy <= self.accuracy:
            return
        self.accuracy, self.step = accuracy, step
        save_checkpoint(self.manager, placement, state, step)
        self.manager.wait_until_finished()
        if jax.process_index() == 0:
            with open(self.record, "w") as f:
                json.dump({"validation_accuracy": accuracy, "step": step}, f)

    def restore(self, placement: Placement, host_state: Any) -> Any:
        """The best state, on devices."""
        self.manager.wait_until_finished()
        return restore_checkpoint(self.manager, placement, host_state)

    def close(self) -> None:
        self.manager.close()
