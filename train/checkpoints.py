"""Orbax checkpoints of the train state, and the best-validation state of the paper's protocol.

Checkpoints hold the state as arrays replicated over all devices
(:meth:`train.placement.Placement.to_global`), so a run may resume under
either placement and on another device count.
"""

from __future__ import annotations

import json
import os
from typing import Any

import flax
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

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


def restore_checkpoint(
    manager: ocp.CheckpointManager, placement: Placement, host_state: Any, step: int | None = None
) -> Any:
    """Checkpoint ``step`` (default: the latest) as device state, or the ``host_state`` placed on
    devices when there is no checkpoint."""
    step = manager.latest_step() if step is None else step
    if step is None:
        return placement.put_state(host_state)
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(
            np.shape(x), np.asarray(x).dtype, sharding=placement.replicated
        ),
        flax.serialization.to_state_dict(host_state),
    )
    restored = manager.restore(step, args=ocp.args.StandardRestore(target))
    return placement.from_global(flax.serialization.from_state_dict(host_state, restored))


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
