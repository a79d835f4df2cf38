"""Training and evaluation of image classifiers with SBN/BN, on one or many hosts.

Read top to bottom: the config is completed with the defaults of
``train/configs/default.py`` and checked; the model, learning-rate schedule,
optimizer and state are built (``create_*``); :func:`train_step` and
:func:`eval_step` are compiled for the placement (:mod:`train.placement`: pmap
replicas or one mesh under jit, the same function as one device with the
whole batch); :func:`train_and_evaluate` runs them, with checkpoints
(:mod:`train.checkpoints`), evaluations and their optional outputs
(:mod:`train.evaluation`) and reports (:mod:`train.progress`).
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from sbn_jax import models
from train import cadences, input_pipeline
from train.checkpoints import (
    CheckpointRestoreError,
    checkpoint_manager,
    kept_checkpoint,
    restore_checkpoint,
    restore_latest,
    save_checkpoint,
)
from train.configs import default
from train.evaluation import Evaluation
from train.placement import PLACEMENTS, make_placement
from train.preemption import PreemptionWatch
from train.progress import NonFiniteLossError, Progress

__all__ = [
    "CheckpointRestoreError",
    "NonFiniteLossError",
    "TrainState",
    "checkpoint_manager",
    "create_learning_rate_fn",
    "create_model",
    "create_optimizer",
    "create_train_state",
    "cross_entropy_loss",
    "eval_step",
    "example_outputs",
    "make_placement",
    "restore_checkpoint",
    "restore_latest",
    "train_and_evaluate",
    "train_step",
    "validate_config",
    "with_defaults",
]


class TrainState(train_state.TrainState):
    batch_stats: Any


def with_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``config`` over the defaults of ``train/configs/default.py``, the one list of settings.

    Every key the loop reads is then present; keys the defaults lack (e.g. a
    paper recipe's ``paper`` record) are kept.
    """
    return ml_collections.ConfigDict({**default.get_config().to_dict(), **config.to_dict()})


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError on a config that cannot run, before any data or compilation work."""
    config = with_defaults(config)

    def choose(key: str, choices: tuple[str, ...]) -> None:
        if config[key] not in choices:
            raise ValueError(f"unknown {key} {config[key]!r}; choose one of {choices}")

    choose("model", tuple(models.MODELS))
    input_pipeline.check_dataset(config)  # A known data set, and its subset and padding.
    try:  # The model checks norm, modules, activation and sbn_options.
        create_model(config, num_classes=2)
    except ValueError as error:
        raise ValueError(f"bad model settings: {error}") from None
    choose("parallelism", tuple(PLACEMENTS))
    if config.num_devices > jax.device_count():
        raise ValueError(
            f"num_devices={config.num_devices} but only {jax.device_count()} are available"
        )
    if config.num_devices > 0 and jax.process_count() > 1:
        raise ValueError("num_devices must be -1 (all devices) in a multi-process run")
    devices = config.num_devices if config.num_devices > 0 else jax.device_count()
    for key in ("batch_size", "eval_batch_size"):
        if config[key] <= 0 or config[key] % devices:
            raise ValueError(
                f"{key}={config[key]} must be a positive multiple of the {devices} devices"
            )
    choose("lr_schedule", ("cosine", "step"))
    choose("weight_decay_on", ("kernels", "all"))
    if config.lr_schedule == "step" and not config.lr_boundaries_epochs:
        raise ValueError('lr_schedule="step" needs lr_boundaries_epochs, e.g. (90, 136)')
    if config.validation_fraction:
        input_pipeline.train_split(config)  # Raises on a fraction that is no whole percentage.
    cadences.check(config)  # Each cadence in steps or in epochs, and one to select a step by.
    if config.num_train_steps <= 0 and config.num_epochs <= 0:
        raise ValueError("set num_epochs or num_train_steps to a positive value")


def create_model(
    config: ml_collections.ConfigDict,
    *,
    axis_name: str | None = None,
    num_classes: int | None = None,
) -> Any:
    """The classifier of ``config.model`` for the dataset's classes (or ``num_classes``)."""
    if num_classes is None:
        num_classes = input_pipeline.dataset_spec(config).num_classes
    return models.create_model(
        config.model,
        num_classes=num_classes,
        norm=config.norm,
        modules=None if config.modules is None else tuple(config.modules),
        sbn_options=dict(config.sbn_options or {}),
        zero_init_residual=config.zero_init_residual,
        shrink_init_modules=tuple(config.shrink_init_modules),
        logit_scale=config.logit_scale,
        activation=config.activation,
        dtype=jnp.bfloat16 if config.half_precision else jnp.float32,
        axis_name=axis_name,
        **({} if config.base_width is None else {"base_width": config.base_width}),
    )


def num_train_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    """``config.num_train_steps`` if positive, else ``num_epochs`` epochs."""
    if config.num_train_steps > 0:
        return config.num_train_steps
    return max(1, round(config.num_epochs * steps_per_epoch))


def create_learning_rate_fn(
    config: ml_collections.ConfigDict, steps_per_epoch: int
) -> optax.Schedule:
    """Linear warm-up from 0 to the base rate, then its decay.

    The base rate is ``learning_rate``, times ``batch_size / 256`` when
    ``scale_learning_rate`` (the Flax examples' rule; the paper's recipes state
    the rate itself). ``lr_schedule="cosine"`` decays to 0 at the last step;
    ``"step"`` multiplies by ``lr_decay_factor`` at each of ``lr_boundaries_epochs``
    (counted from the end of the warm-up).
    """
    base = config.learning_rate
    if config.scale_learning_rate:
        base *= config.batch_size / 256
    total = num_train_steps(config, steps_per_epoch)
    warmup = min(round(config.warmup_epochs * steps_per_epoch), total - 1)
    if config.lr_schedule == "step":
        decay = optax.piecewise_constant_schedule(
            base,
            {
                round(epoch * steps_per_epoch): config.lr_decay_factor
                for epoch in config.lr_boundaries_epochs
            },
        )
    else:
        decay = optax.cosine_decay_schedule(base, max(total - warmup, 1))
    return optax.join_schedules(
        [optax.linear_schedule(0.0, base, max(warmup, 1)), decay], boundaries=[warmup]
    )


def kernel_mask(params: Any) -> Any:
    """True for conv/dense kernels, the weights that get weight decay (not biases or norms)."""
    return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key == "kernel", params)


def create_optimizer(
    config: ml_collections.ConfigDict, learning_rate_fn: optax.Schedule
) -> optax.GradientTransformation:
    """SGD with momentum (Nesterov if ``nesterov``) and L2 weight decay ``wd * w`` added to the
    gradients of the kernels (``weight_decay_on="kernels"``, the Flax examples) or of every
    parameter (``"all"``, PyTorch's SGD ``weight_decay`` as the paper used it)."""
    mask = None if config.weight_decay_on == "all" else kernel_mask
    return optax.chain(
        optax.add_decayed_weights(config.weight_decay, mask=mask),
        optax.sgd(learning_rate_fn, momentum=config.momentum, nesterov=config.nesterov),
    )


def create_train_state(
    rng: jax.Array,
    config: ml_collections.ConfigDict,
    model: Any,
    image_shape: tuple[int, ...],
    learning_rate_fn: optax.Schedule,
) -> TrainState:
    """Initial state (host arrays) for images of ``image_shape`` (H, W, C).

    The model's and the optimizer's initialization run as one compiled program:
    run op by op, the optimizer's zeros alone compile one small program per shape.
    """
    init = functools.partial(
        initial_state,
        config=config,
        model=model,
        image_shape=image_shape,
        learning_rate_fn=learning_rate_fn,
    )
    return jax.device_get(jax.jit(init)(rng))


def initial_state(
    rng: jax.Array,
    *,
    config: ml_collections.ConfigDict,
    model: Any,
    image_shape: tuple[int, ...],
    learning_rate_fn: optax.Schedule,
) -> TrainState:
    """The traceable part of :func:`create_train_state` (also what ``jax.eval_shape`` takes)."""
    variables = model.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables.get("batch_stats", {}),
        tx=create_optimizer(config, learning_rate_fn),
    )


def cross_entropy_loss(
    logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0
) -> jax.Array:
    """Per-example cross-entropy (B,) of float32 ``logits`` (B, K) against int ``labels`` (B,)."""
    targets = jax.nn.one_hot(labels, logits.shape[-1])
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    learning_rate_fn: optax.Schedule,
    label_smoothing: float,
    axis_name: str | None = None,
    dropout_key: jax.Array | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One SGD step on ``batch``; metrics are means over the global batch.

    Under pmap (``axis_name``) the gradients are averaged over devices; under jit
    the batch is the global one already. Dropout masks come from ``dropout_key``
    folded with the step (and, under pmap, the device), so a resumed run draws
    the masks an uninterrupted run draws.
    """
    rngs = {}
    if dropout_key is not None:
        key = jax.random.fold_in(dropout_key, state.step)
        if axis_name is not None:
            key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
        rngs["dropout"] = key

    def loss_fn(params: Any) -> tuple[jax.Array, Any]:
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            batch["image"],
            train=True,
            mutable=["batch_stats"],
            rngs=rngs,
        )
        loss = cross_entropy_loss(logits, batch["label"], label_smoothing).mean()
        return loss, (logits, updates)

    (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    metrics = {
        "loss": loss,
        "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
    }
    if axis_name is not None:
        grads = jax.lax.pmean(grads, axis_name)
        metrics = jax.lax.pmean(metrics, axis_name)
    # NaN/Inf inputs can leave the loss finite (XLA's max(NaN, 0) may be 0 on CPU, so ReLUs hide
    # them) but not the gradients: the NaN check looks at both.
    metrics["grad_norm"] = optax.tree.norm(grads)
    metrics["learning_rate"] = learning_rate_fn(state.step)
    state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", {}))
    return state, metrics


def example_outputs(logits: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
    """Per-example ``loss`` (B,) float32 and ``prediction`` (B,) int32, the argmax class, of
    ``logits`` (B, K) against int ``labels`` (B,): what eval scores and saved predictions use."""
    return {"loss": cross_entropy_loss(logits, labels), "prediction": jnp.argmax(logits, -1)}


def eval_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    axis_name: str | None = None,
    predict: bool = False,
) -> Any:
    """Sums of loss, correct predictions and examples over the unmasked global batch.

    With ``predict``, ``(sums, rows)``: ``rows`` holds the per-example
    ``prediction``, ``label`` and ``mask``, (B,) over the step's batch (under pmap,
    this device's part), for :meth:`train.placement.Placement.gather_rows`.
    """
    logits = state.apply_fn(
        {"params": state.params, "batch_stats": state.batch_stats}, batch["image"], train=False
    )
    outputs, mask = example_outputs(logits, batch["label"]), batch["mask"]
    sums = {
        "loss": jnp.sum(outputs["loss"] * mask),
        "correct": jnp.sum((outputs["prediction"] == batch["label"]) * mask),
        "count": jnp.sum(mask),
    }
    if axis_name is not None:
        sums = jax.lax.psum(sums, axis_name)
    if not predict:
        return sums
    return sums, {"prediction": outputs["prediction"], "label": batch["label"], "mask": mask}


def _due(step: int, every: int) -> bool:
    return bool(every) and step % every == 0


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Trains ``config`` in ``workdir`` (resuming from its newest readable checkpoint), evaluates.

    Writes TensorBoard events and ``summary.json`` to ``workdir`` (process 0); returns the final
    state as host arrays (with ``validation_fraction``: the best validation step's state).

    Opt-in outputs, also in ``workdir`` (process 0; see :mod:`train.evaluation`):
    ``save_test_predictions``: ``test_predictions.npz`` from the reported test pass,
    ``prediction`` and ``label`` of every test image in the split's order, named in
    ``summary.json``; ``record_block_norms``: ``block_norms.jsonl``, a line ``{"step": s,
    "norms": {block path: mean L2 norm of its output}}`` at step 0 and at every evaluation
    (:mod:`train.block_norms`; a resumed run drops those after its checkpoint's step).

    Raises:
      ValueError: a bad config value, before any work.
      NonFiniteLossError: the loss became NaN/Inf; the last good checkpoint is kept.
      CheckpointRestoreError: ``workdir`` has checkpoints and none restores (one that does
        not is skipped with a warning and set aside: :func:`train.checkpoints.restore_latest`).
    """
    start_time = time.perf_counter()
    config = with_defaults(config)
    validate_config(config)
    workdir = os.path.abspath(workdir)
    placement = make_placement(config)
    sharding = input_pipeline.Sharding(jax.process_index(), jax.process_count())
    steps_per_epoch = input_pipeline.steps_per_epoch(config)
    total_steps = num_train_steps(config, steps_per_epoch)
    every = cadences.steps(config, steps_per_epoch)
    learning_rate_fn = create_learning_rate_fn(config, steps_per_epoch)
    model = create_model(config, axis_name=placement.axis_name)
    image_shape = input_pipeline.image_shape(config)
    host_state = create_train_state(
        jax.random.key(config.seed), config, model, image_shape, learning_rate_fn
    )
    manager = checkpoint_manager(workdir, config)
    state, start_step = restore_latest(manager, placement, host_state)
    train_fn = placement.compile(
        functools.partial(
            train_step,
            learning_rate_fn=learning_rate_fn,
            label_smoothing=config.label_smoothing,
            dropout_key=jax.random.fold_in(jax.random.key(config.seed), 1),
        ),
        donate=True,
    )
    progress = Progress(config, workdir, total_steps, start_step, placement.first)
    evaluation = Evaluation(config, workdir, placement, sharding, progress, eval_step, start_step)
    evaluation.begin(state)

    batches = input_pipeline.train_batches(config, start_step=start_step, sharding=sharding)
    with PreemptionWatch(manager) as preemption:
        for step in range(start_step + 1, total_steps + 1):
            state, metrics = train_fn(state, placement.put_batch(next(batches)))
            progress.add(step, metrics)
            last, preempted = step == total_steps, preemption.reached(step)
            log_now = _due(step, every.log) or last or preempted
            checkpoint_now = _due(step, every.checkpoint) or last or preempted
            eval_now = _due(step, every.eval) and not last and not preempted
            if progress.fetch_due() or log_now or checkpoint_now or eval_now:
                try:
                    fetched = progress.fetch()
                except NonFiniteLossError as error:
                    raise NonFiniteLossError(f"{error} {kept_checkpoint(manager)}") from None
                if log_now:
                    progress.log_train(fetched, step)
                if checkpoint_now:
                    save_checkpoint(manager, placement, state, step)
                if eval_now:
                    evaluation.at(state, step)
                progress.restart_timer()
            if preempted:
                _close(manager, progress)
                raise preemption.stopped(step, str(manager.directory))

    state, final, fields = evaluation.final(state, host_state, total_steps)
    _close(manager, progress)
    if jax.process_index() == 0:
        run = {"steps": total_steps, "wall_seconds": time.perf_counter() - start_time}
        _write_summary(config, progress, len(placement.devices), final, {**fields, **run})
    return placement.first(state)


def _close(manager: Any, progress: Progress) -> None:
    """Waits for the checkpoint writes, then closes the manager and the metric writers."""
    manager.wait_until_finished()
    manager.close()
    progress.close()


def _write_summary(
    config: ml_collections.ConfigDict,
    progress: Progress,
    devices: int,
    final: Any,
    fields: dict[str, Any],
) -> None:
    """``summary.json``: the final metrics, ``fields`` and the input's normalization."""
    spec = input_pipeline.dataset_spec(config)
    fields = {**fields, "image_mean": list(spec.mean), "image_std": list(spec.std)}
    progress.write_summary(config, devices, final, fields)
