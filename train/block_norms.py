"""The residual blocks' output norms during training (``config.record_block_norms``).

At step 0 and at every evaluation, :class:`BlockNorms` measures the output of
every residual block (the modules of :data:`sbn_jax.models.BLOCK_TYPES`) in
eval mode (running statistics) on fixed images and appends one JSON line to
``<workdir>/block_norms.jsonl``::

    {"step": 200, "norms": {"BasicBlock_0": 7.9, ..., "BasicBlock_8": 31.2}}

A norm is the mean over the images of the L2 (Frobenius) norm of one image's
block output (:func:`sbn_jax.diagnostics.feature_norm`), keys in call order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from sbn_jax import diagnostics, models
from train import input_pipeline
from train.placement import Placement

FILE = "block_norms.jsonl"


def block_norms_fn(apply_fn: Callable) -> Callable[[Any, Any], dict[str, float]]:
    """``norms(variables, images (N, H, W, C)) -> {block path: mean_n ||block output_n||_2}``.

    One compiled program (per image shape) for the flax ``apply_fn`` of a
    classifier, run with ``train=False`` on the default device.
    """
    keep = diagnostics.block_filter(*models.BLOCK_TYPES)
    # jit returns dicts with sorted keys; the call order travels beside them as a list of names.
    names: list[str] = []

    @jax.jit
    def norms(variables: Any, images: jax.Array) -> list[jax.Array]:
        _, state = apply_fn(
            variables, images, train=False, capture_intermediates=keep, mutable=["intermediates"]
        )
        outputs = diagnostics.flatten_collection(state["intermediates"])
        names[:] = list(outputs)
        return [diagnostics.feature_norm(x) for x in outputs.values()]

    def run(variables: Any, images: Any) -> dict[str, float]:
        values = jax.device_get(norms(variables, images))
        return {name: float(value) for name, value in zip(names, values, strict=True)}

    return run


def first_images(config: ml_collections.ConfigDict, which: str) -> np.ndarray:
    """The first ``eval_batch_size`` preprocessed images of the ``which`` split (fewer if the
    split is smaller), (N, H, W, C) float32, the same on every process."""
    # The default Sharding (one process) yields the whole global batch.
    batch = next(input_pipeline.eval_batches(config, which=which))
    return batch["image"][batch["mask"] > 0]


class BlockNorms:
    """Appends a run's block norms to ``workdir/block_norms.jsonl`` (process 0 writes).

    Args:
      config: the run's config (data and ``eval_batch_size``).
      workdir: the run's directory.
      which: the split whose first images are measured ("validation" or "test").
      start_step: the step the run resumes after (0: a fresh run). Records of
        later steps, written before the run was interrupted, are dropped: the
        resumed run writes them again.
    """

    def __init__(
        self, config: ml_collections.ConfigDict, workdir: str, which: str, start_step: int
    ):
        self.path = os.path.join(workdir, FILE)
        self.images = first_images(config, which)
        self.is_chief = jax.process_index() == 0
        self.steps: set[int] = set()
        self.norms: Callable[[Any, Any], dict[str, float]] | None = None
        if self.is_chief and os.path.exists(self.path):
            with open(self.path) as f:
                records = [json.loads(line) for line in f if line.strip()]
            kept = [record for record in records if record["step"] <= start_step]
            with open(self.path, "w") as f:
                f.writelines(json.dumps(record) + "\n" for record in kept)
            self.steps = {record["step"] for record in kept}

    def record(self, placement: Placement, state: Any, step: int) -> None:
        """Measures the device ``state`` after ``step`` and appends its line, unless the file
        has one for ``step`` already (a resumed run's restored step). Every process calls it."""
        # Every process: under pmap the replicas' mean is a collective.
        host = placement.first(placement.prepare_eval(state))
        if not self.is_chief or step in self.steps:
            return
        if self.norms is None:
            self.norms = block_norms_fn(host.apply_fn)
        variables = {"params": host.params, "batch_stats": host.batch_stats}
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, "norms": self.norms(variables, self.images)}) + "\n")
        self.steps.add(step)
