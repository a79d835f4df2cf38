"""A run's evaluations: passes over a split, the paper's protocol, and their optional outputs.

:class:`Evaluation` scores the test split (or the validation split, with
``validation_fraction``) at each evaluation and gives the test scores that
``summary.json`` reports. Two opt-in outputs, for comparing runs per image and per block:

* ``save_test_predictions``: the reported test pass also writes
  ``<workdir>/test_predictions.npz`` (:data:`PREDICTIONS_FILE`), the argmax class
  and the label of every test image in the split's order.
* ``record_block_norms``: :class:`train.block_norms.BlockNorms` at step 0 and
  at every evaluation.

The eval step itself (:func:`train.train.eval_step`) is passed in, next to the
train step it shares the loss with.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from train import input_pipeline
from train.block_norms import BlockNorms
from train.checkpoints import BestValidation
from train.placement import Placement
from train.progress import Progress

PREDICTIONS_FILE = "test_predictions.npz"


def _pass(
    config: ml_collections.ConfigDict,
    placement: Placement,
    eval_fn: Callable,
    state: Any,
    sharding: input_pipeline.Sharding,
    which: str,
    predict: bool,
) -> tuple[dict[str, float], dict[str, np.ndarray] | None]:
    """``(scores, rows)`` of one pass over ``which``; ``rows`` only with ``predict``."""
    state = placement.prepare_eval(state)
    totals, gathered = None, []
    for batch in input_pipeline.eval_batches(config, sharding=sharding, which=which):
        outputs = eval_fn(state, placement.put_batch(batch))
        sums = outputs[0] if predict else outputs
        if predict:
            gathered.append(outputs[1])
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    # After the loop, so that the steps are dispatched without waiting for the host.
    gathered = [placement.gather_rows(rows) for rows in gathered]
    totals = placement.first(totals)
    count = max(float(totals["count"]), 1.0)
    scores = {"loss": float(totals["loss"]) / count, "accuracy": float(totals["correct"]) / count}
    if not predict:
        return scores, None
    rows = {key: np.concatenate([r[key] for r in gathered]) for key in gathered[0]}
    keep = rows.pop("mask") > 0  # The padding that completes the last batch.
    return scores, {key: value[keep] for key, value in rows.items()}


def evaluate(
    config: ml_collections.ConfigDict,
    placement: Placement,
    eval_fn: Callable,
    state: Any,
    sharding: input_pipeline.Sharding,
    which: str = "test",
) -> dict[str, float]:
    """Loss and accuracy over the whole ``which`` split ("test" or "validation")."""
    return _pass(config, placement, eval_fn, state, sharding, which, predict=False)[0]


def predict(
    config: ml_collections.ConfigDict,
    placement: Placement,
    predict_fn: Callable,
    state: Any,
    sharding: input_pipeline.Sharding,
    which: str = "test",
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """:func:`evaluate` with the predicting step (``eval_step(..., predict=True)``), and the
    rows of the same pass: ``{"prediction", "label"}``, (N,) int32 over the N examples of
    ``which`` (padding dropped), the whole split on every process.

    Rows come in the split's order for data sets read whole; a streamed split read by several
    processes comes in blocks of each process's part (its labels alongside, as ever).
    """
    scores, rows = _pass(config, placement, predict_fn, state, sharding, which, predict=True)
    assert rows is not None
    return scores, rows


def save_predictions(path: str, rows: dict[str, np.ndarray], num_classes: int) -> None:
    """``rows`` of :func:`predict` to ``path`` (.npz), as uint8 (int16 above 256 classes)."""
    dtype = np.uint8 if num_classes <= 256 else np.int16
    np.savez(path, prediction=rows["prediction"].astype(dtype), label=rows["label"].astype(dtype))


class Evaluation:
    """A run's evaluations: the test split, or the validation split and the paper's protocol.

    With ``validation_fraction`` every evaluation scores the validation split and
    offers the state to :class:`BestValidation`; the final score is the test
    score of the best validation step.

    Args:
      config, workdir, placement, sharding, progress: the run's.
      step: the eval step, ``step(state, batch, *, axis_name, predict=False)``; returns the
        sums over the batch, with ``predict`` also its per-example rows (prediction, label,
        mask), see :func:`train.train.eval_step`.
      start_step: the step the run resumes after (0: a fresh run).
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        workdir: str,
        placement: Placement,
        sharding: input_pipeline.Sharding,
        progress: Progress,
        step: Callable,
        start_step: int,
    ):
        self.config, self.workdir, self.placement = config, workdir, placement
        self.sharding, self.progress, self.start_step = sharding, progress, start_step
        self.eval_fn = placement.compile(step, donate=False)
        # A second program, compiled (on its first call) only when predictions are asked for and
        # used for the reported test pass only: its sums give the scores, so they and the saved
        # predictions come from one pass.
        self.predict_fn = None
        if config.save_test_predictions:
            self.predict_fn = placement.compile(functools.partial(step, predict=True), donate=False)
        self.best = BestValidation(workdir, config) if config.validation_fraction else None
        self.which = "test" if self.best is None else "validation"
        self.norms = None
        if config.record_block_norms:
            self.norms = BlockNorms(config, workdir, self.which, start_step)

    def begin(self, state: Any) -> None:
        """Records the block norms of the initial ``state`` (a fresh run, when asked)."""
        if self.norms is not None and self.start_step == 0:
            self.norms.record(self.placement, state, 0)

    def at(self, state: Any, step: int, *, last: bool = False) -> dict[str, float]:
        """Scores ``state`` after ``step`` (and offers it to the best-validation record, and
        records its block norms). ``last``: the run's final evaluation, whose test pass (no
        validation) is the one reported."""
        if last and self.best is None:
            scores = self.test(state)
        else:
            scores = evaluate(
                self.config, self.placement, self.eval_fn, state, self.sharding, self.which
            )
        if self.best is not None:
            self.best.offer(self.placement, state, step, scores["accuracy"])
        if self.norms is not None:
            self.norms.record(self.placement, state, step)
        self.progress.scalars(self.which, scores, step)
        return scores

    def test(self, state: Any) -> dict[str, float]:
        """The test scores of ``state`` that the run reports; with ``save_test_predictions``
        from the predicting step, its predictions written to :data:`PREDICTIONS_FILE`."""
        if self.predict_fn is None:
            return evaluate(self.config, self.placement, self.eval_fn, state, self.sharding)
        scores, rows = predict(self.config, self.placement, self.predict_fn, state, self.sharding)
        if jax.process_index() == 0:
            num_classes = input_pipeline.dataset_spec(self.config).num_classes
            save_predictions(os.path.join(self.workdir, PREDICTIONS_FILE), rows, num_classes)
        return scores

    def final(self, state: Any, host_state: Any, step: int) -> tuple[Any, dict[str, float], dict]:
        """``(state, test scores, summary fields)`` of the run: the last state, or the best
        validation one; the fields name the selection and the predictions file."""
        scores = self.at(state, step, last=True)
        fields: dict[str, Any] = {}
        if self.best is not None:
            state = self.best.restore(self.placement, host_state)
            scores = self.test(state)
            self.progress.scalars("test", scores, self.best.step or step)
            fields.update(best_validation_accuracy=self.best.accuracy, selected_step=self.best.step)
            self.best.close()
        if self.predict_fn is not None:
            fields["test_predictions"] = PREDICTIONS_FILE
        return state, scores, fields
