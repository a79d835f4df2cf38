"""Training and evaluation loop for image classifiers with SBN/BN, on one or many hosts.

``parallelism="pmap"`` replicates the state over the local devices and names the
device axis ``"batch"``; the models' BatchNorm/SBN layers average their batch
statistics over it. ``parallelism="jit"`` places a replicated state and a batch
sharded along the ``"data"`` axis of a :class:`jax.sharding.Mesh`; the models
compute plain means over the global batch and XLA inserts the collectives.
Both compute the same function as one device with the whole batch.

Checkpoints (orbax) hold the state as arrays replicated over all devices, so a
run may resume under either parallelism.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from sbn_jax import models
from train import input_pipeline

PARALLELISMS = ("pmap", "jit")
PMAP_AXIS = "batch"


class TrainState(train_state.TrainState):
    batch_stats: Any


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError on a config that cannot run, before any data or compilation work."""

    def choose(key, choices):
        if config[key] not in choices:
            raise ValueError(f"unknown {key} {config[key]!r}; choose one of {choices}")

    choose("model", tuple(models.MODELS))
    choose("dataset", input_pipeline.DATASETS)
    try:  # The model checks norm, modules, activation and sbn_options.
        create_model(config, num_classes=2)
    except ValueError as error:
        raise ValueError(f"bad model settings: {error}") from None
    choose("parallelism", PARALLELISMS)
    num_devices = config.get("num_devices", -1)
    if num_devices > jax.device_count():
        raise ValueError(f"num_devices={num_devices} but only {jax.device_count()} are available")
    if num_devices > 0 and jax.process_count() > 1:
        raise ValueError("num_devices must be -1 (all devices) in a multi-process run")
    devices = num_devices if num_devices > 0 else jax.device_count()
    for key in ("batch_size", "eval_batch_size"):
        if config[key] <= 0 or config[key] % devices:
            raise ValueError(
                f"{key}={config[key]} must be a positive multiple of the {devices} devices"
            )
    choose("lr_schedule", ("cosine", "step"))
    choose("weight_decay_on", ("kernels", "all"))
    if config.lr_schedule == "step" and not config.get("lr_boundaries_epochs"):
        raise ValueError('lr_schedule="step" needs lr_boundaries_epochs, e.g. (90, 136)')
    if config.get("validation_fraction", 0.0):
        input_pipeline.train_split(config)  # Raises on a fraction that is no whole percentage.
        if not config.get("eval_every_steps", 0):
            raise ValueError("validation_fraction > 0 needs eval_every_steps > 0 to select a step")
    for key in ("log_every_steps", "checkpoint_every_steps"):
        if config[key] <= 0:
            raise ValueError(f"{key} must be positive, got {config[key]}")
    if config.num_train_steps <= 0 and config.num_epochs <= 0:
        raise ValueError("set num_epochs or num_train_steps to a positive value")


def create_model(config, *, axis_name: str | None = None, num_classes: int | None = None):
    """The classifier of ``config.model`` for the dataset's classes (or ``num_classes``)."""
    if num_classes is None:
        num_classes = input_pipeline.dataset_spec(config).num_classes
    return models.create_model(
        config.model,
        num_classes=num_classes,
        norm=config.norm,
        modules=None if config.get("modules") is None else tuple(config.modules),
        sbn_options=dict(config.get("sbn_options") or {}),
        zero_init_residual=config.get("zero_init_residual", False),
        activation=config.get("activation", "relu"),
        dtype=jnp.bfloat16 if config.half_precision else jnp.float32,
        axis_name=axis_name,
        **({} if config.get("base_width") is None else {"base_width": config.base_width}),
    )


def num_train_steps(config, steps_per_epoch: int) -> int:
    """``config.num_train_steps`` if positive, else ``num_epochs`` epochs."""
    if config.num_train_steps > 0:
        return config.num_train_steps
    return max(1, round(config.num_epochs * steps_per_epoch))


def create_learning_rate_fn(config, steps_per_epoch: int) -> optax.Schedule:
    """Linear warm-up from 0 to the base rate, then its decay.

    The base rate is ``learning_rate``, times ``batch_size / 256`` when
    ``scale_learning_rate`` (the Flax examples' rule; the paper's recipes state
    the rate itself). ``lr_schedule="cosine"`` decays to 0 at the last step;
    ``"step"`` multiplies by ``lr_decay_factor`` at each of ``lr_boundaries_epochs``
    (counted from the end of the warm-up).
    """
    base = config.learning_rate
    if config.get("scale_learning_rate", True):
        base *= config.batch_size / 256
    total = num_train_steps(config, steps_per_epoch)
    warmup = min(round(config.warmup_epochs * steps_per_epoch), total - 1)
    if config.get("lr_schedule", "cosine") == "step":
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


def kernel_mask(params):
    """True for conv/dense kernels, the weights that get weight decay (not biases or norms)."""
    return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key == "kernel", params)


def create_optimizer(config, learning_rate_fn: optax.Schedule) -> optax.GradientTransformation:
    """SGD with momentum (Nesterov if ``nesterov``) and L2 weight decay ``wd * w`` added to the
    gradients of the kernels (``weight_decay_on="kernels"``, the Flax examples) or of every
    parameter (``"all"``, PyTorch's SGD ``weight_decay`` as the paper used it)."""
    mask = None if config.get("weight_decay_on", "kernels") == "all" else kernel_mask
    return optax.chain(
        optax.add_decayed_weights(config.weight_decay, mask=mask),
        optax.sgd(learning_rate_fn, momentum=config.momentum, nesterov=config.nesterov),
    )


def create_train_state(rng, config, model, image_shape, learning_rate_fn) -> TrainState:
    """Initial state (host arrays) for images of ``image_shape`` (H, W, C)."""
    init = jax.jit(functools.partial(model.init, train=False))
    variables = jax.device_get(init(rng, jnp.zeros((1, *image_shape), jnp.float32)))
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables.get("batch_stats", {}),
        tx=create_optimizer(config, learning_rate_fn),
    )


def cross_entropy_loss(logits, labels, label_smoothing: float = 0.0):
    """Per-example cross-entropy (B,) of float32 ``logits`` (B, K) against int ``labels`` (B,)."""
    targets = jax.nn.one_hot(labels, logits.shape[-1])
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def train_step(
    state, batch, *, learning_rate_fn, label_smoothing: float, axis_name=None, dropout_key=None
):
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

    def loss_fn(params):
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


def eval_step(state, batch, *, axis_name=None):
    """Sums of loss, correct predictions and examples over the unmasked global batch."""
    logits = state.apply_fn(
        {"params": state.params, "batch_stats": state.batch_stats}, batch["image"], train=False
    )
    mask = batch["mask"]
    sums = {
        "loss": jnp.sum(cross_entropy_loss(logits, batch["label"]) * mask),
        "correct": jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * mask),
        "count": jnp.sum(mask),
    }
    return sums if axis_name is None else jax.lax.psum(sums, axis_name)


@functools.partial(jax.pmap, axis_name="devices")
def _cross_replica_mean(tree):
    return jax.lax.pmean(tree, "devices")


def sync_batch_stats(state: TrainState) -> TrainState:
    """Averages a pmap-replicated state's batch statistics over devices.

    With ``axis_name`` set in the models they already agree; this removes any
    floating-point drift before evaluation and checkpoints.
    """
    if not jax.tree.leaves(state.batch_stats):
        return state
    return state.replace(batch_stats=_cross_replica_mean(state.batch_stats))


# --- Placement of state and batches. ------------------------------------------------------------


@dataclasses.dataclass
class Parallel:
    """Compiles the steps and moves state and batches for one ``parallelism``."""

    parallelism: str
    devices: list

    def __post_init__(self):
        self.mesh = Mesh(np.asarray(self.devices), ("data",))
        self.replicated = NamedSharding(self.mesh, P())
        self.sharded = NamedSharding(self.mesh, P("data"))
        self.local_devices = [d for d in self.devices if d.process_index == jax.process_index()]

    @property
    def axis_name(self) -> str | None:
        return PMAP_AXIS if self.parallelism == "pmap" else None

    def compile(self, step: Callable, *, donate: bool) -> Callable:
        """``step(state, batch)`` compiled for this parallelism."""
        step = functools.partial(step, axis_name=self.axis_name)
        donate_argnums = (0,) if donate else ()
        if self.parallelism == "pmap":
            return jax.pmap(
                step,
                axis_name=PMAP_AXIS,
                devices=self._pmap_devices(),
                donate_argnums=donate_argnums,
            )
        return jax.jit(
            step,
            in_shardings=(self.replicated, self.sharded),
            out_shardings=self.replicated,
            donate_argnums=donate_argnums,
        )

    def _pmap_devices(self):
        return None if len(self.devices) == jax.device_count() else self.devices

    def put_state(self, state):
        """Host state → device state (replicated per device, or one replicated global array)."""
        if self.parallelism == "pmap":
            return flax.jax_utils.replicate(state, devices=self.local_devices)
        return jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(self.replicated, np.asarray(x)), state
        )

    def put_batch(self, batch):
        """This process's rows of the global batch → the step's input."""
        if self.parallelism == "pmap":
            count = len(self.local_devices)
            return jax.tree.map(lambda x: x.reshape(count, -1, *x.shape[1:]), batch)
        return jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(self.sharded, x), batch
        )

    def first(self, tree):
        """One replica's values, as host arrays."""
        if self.parallelism == "pmap":
            return jax.device_get(jax.tree.map(lambda x: x.addressable_data(0)[0], tree))
        return jax.device_get(jax.tree.map(lambda x: x.addressable_data(0), tree))

    def to_global(self, state):
        """Device state → arrays replicated over the mesh (the checkpoint format)."""
        if self.parallelism == "jit":
            return state

        def merge(x):
            replicas = [shard.data.reshape(x.shape[1:]) for shard in x.addressable_shards]
            return jax.make_array_from_single_device_arrays(x.shape[1:], self.replicated, replicas)

        return jax.tree.map(merge, state)

    def from_global(self, state):
        """Checkpoint format → device state."""
        if self.parallelism == "jit":
            return state
        return self.put_state(jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), state))


def make_parallel(config) -> Parallel:
    num_devices = config.get("num_devices", -1)
    devices = jax.devices()[:num_devices] if num_devices > 0 else jax.devices()
    return Parallel(config.parallelism, devices)


# --- Checkpoints. -------------------------------------------------------------------------------


def checkpoint_manager(
    workdir: str, config, max_to_keep: int | None = None
) -> ocp.CheckpointManager:
    """Checkpoints in ``workdir/checkpoints``, the last ``max_to_keep`` (default: the config's)."""
    if max_to_keep is None:
        max_to_keep = config.get("max_checkpoints_to_keep", 3)
    return ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
    )


def _state_dict(state):
    return flax.serialization.to_state_dict(state)


def restore_checkpoint(
    manager, parallel: Parallel, host_state: TrainState, step: int | None = None
):
    """Checkpoint ``step`` (default: the latest) as device state, or the ``host_state`` placed on
    devices when there is no checkpoint."""
    step = manager.latest_step() if step is None else step
    if step is None:
        return parallel.put_state(host_state)
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(
            np.shape(x), np.asarray(x).dtype, sharding=parallel.replicated
        ),
        _state_dict(host_state),
    )
    restored = manager.restore(step, args=ocp.args.StandardRestore(target))
    return parallel.from_global(flax.serialization.from_state_dict(host_state, restored))


def save_checkpoint(manager, parallel: Parallel, state, step: int) -> None:
    manager.save(step, args=ocp.args.StandardSave(_state_dict(parallel.to_global(state))))


# --- The loop. ----------------------------------------------------------------------------------


class BestValidation:
    """Keeps the state of the step with the best validation accuracy in ``workdir/best``.

    The accuracy and step sit next to the checkpoint in ``best.json``, so a
    resumed run goes on comparing against them.
    """

    def __init__(self, workdir: str, config):
        self.directory = os.path.join(workdir, "best")
        self.manager = checkpoint_manager(self.directory, config, max_to_keep=1)
        self.record = os.path.join(self.directory, "best.json")
        self.accuracy, self.step = -1.0, None
        if os.path.exists(self.record):
            with open(self.record) as f:
                saved = json.load(f)
            self.accuracy, self.step = saved["validation_accuracy"], saved["step"]

    def offer(self, parallel: Parallel, state, step: int, accuracy: float) -> None:
        """Saves ``state`` if ``accuracy`` beats the best so far."""
        if accuracy <= self.accuracy:
            return
        self.accuracy, self.step = accuracy, step
        save_checkpoint(self.manager, parallel, state, step)
        self.manager.wait_until_finished()
        if jax.process_index() == 0:
            with open(self.record, "w") as f:
                json.dump({"validation_accuracy": accuracy, "step": step}, f)

    def restore(self, parallel: Parallel, host_state):
        self.manager.wait_until_finished()
        return restore_checkpoint(self.manager, parallel, host_state)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or Inf."""


def evaluate(
    config, parallel: Parallel, eval_fn, state, sharding, which: str = "test"
) -> dict[str, float]:
    """Loss and accuracy over the whole ``which`` split ("test" or "validation")."""
    if parallel.parallelism == "pmap":
        state = sync_batch_stats(state)
    totals = None
    for batch in input_pipeline.eval_batches(config, sharding=sharding, which=which):
        sums = eval_fn(state, parallel.put_batch(batch))
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    totals = parallel.first(totals)
    count = max(float(totals["count"]), 1.0)
    return {"loss": float(totals["loss"]) / count, "accuracy": float(totals["correct"]) / count}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Trains ``config`` in ``workdir`` (resuming from its latest checkpoint) and evaluates.

    Writes TensorBoard events and ``summary.json`` to ``workdir`` (process 0) and
    returns the final state as host arrays (with ``validation_fraction``: the
    state of the best validation step, the one whose test score is reported).

    Raises:
      ValueError: a bad config value, before any work.
      NonFiniteLossError: the loss became NaN/Inf; the last good checkpoint is kept.
    """
    from tensorboardX import SummaryWriter
    from tqdm import tqdm

    start_time = time.perf_counter()
    validate_config(config)
    workdir = os.path.abspath(workdir)
    is_chief = jax.process_index() == 0
    parallel = make_parallel(config)
    sharding = input_pipeline.Sharding(jax.process_index(), jax.process_count())

    steps_per_epoch = input_pipeline.steps_per_epoch(config)
    total_steps = num_train_steps(config, steps_per_epoch)
    learning_rate_fn = create_learning_rate_fn(config, steps_per_epoch)
    model = create_model(config, axis_name=parallel.axis_name)
    host_state = create_train_state(
        jax.random.key(config.seed),
        config,
        model,
        input_pipeline.image_shape(config),
        learning_rate_fn,
    )
    manager = checkpoint_manager(workdir, config)
    state = restore_checkpoint(manager, parallel, host_state)
    start_step = manager.latest_step() or 0

    train_fn = parallel.compile(
        functools.partial(
            train_step,
            learning_rate_fn=learning_rate_fn,
            label_smoothing=config.label_smoothing,
            dropout_key=jax.random.fold_in(jax.random.key(config.seed), 1),
        ),
        donate=True,
    )
    eval_fn = parallel.compile(eval_step, donate=False)
    writer = SummaryWriter(workdir) if is_chief else None
    progress = tqdm(
        total=total_steps,
        initial=start_step,
        disable=not (is_chief and config.get("progress_bar", True)),
        desc=f"{config.model} {config.norm}",
        unit="step",
    )

    pending: list[tuple[int, Any]] = []
    train_loss = math.nan

    def check_pending():
        """Fetches the metrics of the steps run since the last check; stops on NaN/Inf."""
        nonlocal train_loss
        fetched = [(step, parallel.first(metrics)) for step, metrics in pending]
        pending.clear()
        for step, metrics in fetched:
            if not (np.isfinite(metrics["loss"]) and np.isfinite(metrics["grad_norm"])):
                manager.wait_until_finished()
                kept = manager.latest_step()
                where = os.path.join(workdir, "checkpoints")
                raise NonFiniteLossError(
                    f"non-finite training loss ({metrics['loss']}) or gradient norm "
                    f"({metrics['grad_norm']}) at step {step}; stopping. "
                    + (
                        f"The last good checkpoint (step {kept}) is kept in {where}."
                        if kept is not None
                        else "No checkpoint had been written yet."
                    )
                )
        if fetched:
            train_loss = float(fetched[-1][1]["loss"])
        return fetched

    best = BestValidation(workdir, config) if config.get("validation_fraction", 0.0) else None

    def evaluate_step(state, step):
        """Scores the validation split (offering the state to ``best``) or the test split."""
        which = "test" if best is None else "validation"
        scores = evaluate(config, parallel, eval_fn, state, sharding, which)
        if best is not None:
            best.offer(parallel, state, step, scores["accuracy"])
        if is_chief:
            for key, value in scores.items():
                writer.add_scalar(f"{which}/{key}", value, step)
        return scores

    train_iter = input_pipeline.train_batches(config, start_step=start_step, sharding=sharding)
    timed_steps, timed_seconds, tick = 0, 0.0, None
    for step in range(start_step + 1, total_steps + 1):
        batch = next(train_iter)
        state, metrics = train_fn(state, parallel.put_batch(batch))
        pending.append((step, metrics))
        log_now = step % config.log_every_steps == 0 or step == total_steps
        checkpoint_now = step % config.checkpoint_every_steps == 0 or step == total_steps
        eval_now = config.get("eval_every_steps", 0) and step % config.eval_every_steps == 0
        if tick is None or log_now or checkpoint_now or eval_now:
            steps_done = len(pending)
            fetched = check_pending()
            now = time.perf_counter()
            if tick is not None:  # The first step compiles; it is not timed.
                timed_steps += steps_done
                timed_seconds += now - tick
            tick = now
            progress.update(steps_done)
            if log_now and is_chief:
                means = {k: float(np.mean([m[k] for _, m in fetched])) for k in fetched[0][1]}
                rate = config.batch_size * timed_steps / timed_seconds if timed_seconds else 0.0
                progress.set_postfix(
                    loss=f"{means['loss']:.4f}",
                    acc=f"{means['accuracy']:.3f}",
                    lr=f"{means['learning_rate']:.4g}",
                    ex_s=f"{rate:.0f}",
                )
                for key, value in means.items():
                    writer.add_scalar(f"train/{key}", value, step)
                writer.add_scalar("train/examples_per_sec", rate, step)
            if checkpoint_now:
                save_checkpoint(manager, parallel, state, step)
            if eval_now and step != total_steps:
                evaluate_step(state, step)
            tick = time.perf_counter()
    progress.close()
    check_pending()

    final = evaluate_step(state, total_steps)
    selected = {}
    if best is not None:
        # The paper's protocol: the test score of the best validation step.
        state = best.restore(parallel, host_state)
        final = evaluate(config, parallel, eval_fn, state, sharding)
        selected = {"best_validation_accuracy": best.accuracy, "selected_step": best.step}
        best.manager.close()
    results = final
    manager.wait_until_finished()
    manager.close()
    wall_seconds = time.perf_counter() - start_time
    summary = {
        "test_accuracy": results["accuracy"],
        "test_loss": results["loss"],
        **selected,
        "train_loss": train_loss,
        "steps": total_steps,
        "train_examples_per_sec": (
            config.batch_size * timed_steps / timed_seconds if timed_seconds else None
        ),
        "wall_seconds": wall_seconds,
        "model": config.model,
        "norm": config.norm,
        "dataset": config.dataset,
        "parallelism": config.parallelism,
        "devices": len(parallel.devices),
        "processes": jax.process_count(),
        "batch_size": config.batch_size,
    }
    if is_chief:
        if best is not None:
            for key in ("loss", "accuracy"):
                writer.add_scalar(f"test/{key}", results[key], best.step)
        writer.close()
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        rate = summary["train_examples_per_sec"]
        print(
            f"{config.model} ({config.norm}) on {config.dataset}: "
            f"test accuracy {results['accuracy']:.2%}, test loss {results['loss']:.4f}, "
            f"{total_steps} steps, "
            + (f"{rate:.0f} examples/s, " if rate else "")
            + f"{wall_seconds:.0f} s wall, {len(parallel.devices)} devices ({config.parallelism})",
            flush=True,
        )
    return parallel.first(state)
