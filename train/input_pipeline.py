"""Input pipelines: tensorflow-datasets + tf.data, deterministic in (seed, step).

Batches are NumPy dicts ``{"image": (B, H, W, C) float32, "label": (B,) int32}``
holding this process's rows of the global batch; eval batches add
``"mask": (B,) float32`` (0 for the padding that completes the last batch).

Two ways to feed several processes:

* In-memory datasets (digits, CIFAR) are read whole by every process. Each epoch
  has one global order (a permutation drawn from ``(seed, epoch)``); process
  ``p`` keeps rows ``[p * B / P, (p + 1) * B / P)`` of every global batch. The
  global batches, and so the training run, are the same for any number of
  processes and devices.
* Streamed datasets (ImageNet) are split between processes with
  ``tfds.split_for_jax_process`` and each process shuffles its part, as in the
  Flax ImageNet example; the order then depends on the number of processes.

Random augmentation uses stateless ops seeded by ``(seed, epoch, position)``,
and every epoch is rebuilt from its seed, so ``train_batches(start_step=s)``
yields exactly what an iterator started at step 0 yields after ``s`` batches:
a restarted run sees the data an uninterrupted run sees.

This module only batches: the dataset registry and readers are in ``train.datasets``,
the per-example transforms in ``train.preprocessing``. Each public function derives the
:class:`DatasetSpec` from the config once and passes it down. The public names of those
two modules are re-exported here (see ``__all__``), so ``input_pipeline.X`` keeps working.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

# Re-exported (listed in __all__): callers address the whole pipeline as `input_pipeline.X`.
from train.datasets import (
    CIFAR_MEAN,
    CIFAR_STD,
    DATASETS,
    DIGITS_MEAN,
    DIGITS_SPLIT_SEED,
    DIGITS_STD,
    DIGITS_TEST_SIZE,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SPECS,
    DatasetSpec,
    SklearnDigits,
    builder,
    check_dataset,
    class_subset,
    dataset_spec,
    eval_split,
    image_shape,
    load_arrays,
    load_train_arrays,
    num_examples,
    num_train_examples,
    train_split,
)
from train.preprocessing import (
    IMAGENET_CROP_PADDING,
    imagenet_eval,
    imagenet_train,
    preprocessor,
    small_image_eval,
    small_image_train,
)

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "DATASETS",
    "DIGITS_MEAN",
    "DIGITS_SPLIT_SEED",
    "DIGITS_STD",
    "DIGITS_TEST_SIZE",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "IMAGENET_CROP_PADDING",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SPECS",
    "DatasetSpec",
    "Sharding",
    "SklearnDigits",
    "builder",
    "check_dataset",
    "class_subset",
    "dataset_spec",
    "eval_batches",
    "eval_split",
    "eval_steps",
    "image_shape",
    "imagenet_eval",
    "imagenet_train",
    "load_arrays",
    "load_train_arrays",
    "num_examples",
    "num_train_examples",
    "small_image_eval",
    "small_image_train",
    "steps_per_epoch",
    "train_batches",
    "train_split",
]


@dataclasses.dataclass(frozen=True)
class Sharding:
    """Process ``index`` of ``count`` gets rows ``[index * B / count, (index + 1) * B / count)``."""

    index: int = 0
    count: int = 1

    def local(self, global_batch_size: int) -> int:
        return global_batch_size // self.count


# --- Steps. -------------------------------------------------------------------------------------


def steps_per_epoch(config) -> int:
    """Global batches per epoch (the last, incomplete batch of every epoch is dropped)."""
    return num_train_examples(config) // config.batch_size


def eval_steps(config, which: str = "test") -> int:
    """Global eval batches that cover the eval split (the last one padded)."""
    spec = dataset_spec(config)
    if spec.name == "fake":
        return _fake_eval_steps(config)
    return _eval_steps(config, spec, eval_split(config, which, spec=spec))


def _eval_steps(config, spec: DatasetSpec, split: str) -> int:
    return math.ceil(num_examples(config, split, spec=spec) / config.eval_batch_size)


def _fake_eval_steps(config) -> int:
    return config.fake_eval_steps


# --- Batches. -----------------------------------------------------------------------------------


def train_batches(config, *, start_step: int = 0, sharding: Sharding = Sharding()) -> Iterator:
    """This process's training batches from global step ``start_step`` on, endlessly."""
    spec = dataset_spec(config)
    if spec.name == "fake":
        return _fake_batches(config, spec, sharding, with_mask=False)
    preprocess = preprocessor(config, spec, image_shape(config, spec=spec), train=True)
    if spec.in_memory:
        images, labels = load_train_arrays(config, spec=spec)
        return _in_memory_train(config, images, labels, preprocess, start_step, sharding)
    split = train_split(config, spec=spec)
    return _streamed_train(config, spec, split, preprocess, start_step, sharding)


def eval_batches(config, *, sharding: Sharding = Sharding(), which: str = "test") -> Iterator:
    """This process's batches of the ``which`` split ("test" or "validation"),
    ``eval_steps(config, which)`` of them, with ``mask`` on the padding."""
    spec = dataset_spec(config)
    if spec.name == "fake":
        return _fake_batches(config, spec, sharding, with_mask=True)
    split = eval_split(config, which, spec=spec)
    preprocess = preprocessor(config, spec, image_shape(config, spec=spec), train=False)
    if spec.in_memory:
        images, labels = load_arrays(config, split, spec=spec)
        return _in_memory_eval(config, images, labels, preprocess, sharding)
    return _streamed_eval(config, spec, split, preprocess, sharding)


def _example_seeds(seed: int, epoch, position):
    """Two independent stateless seeds for the example at ``position`` of ``epoch``."""
    base = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64) * 2**32 + position])
    return tf.random.experimental.stateless_split(base, num=2)


def _finish(ds: tf.data.Dataset, batch_size: int) -> Iterator[dict]:
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.as_numpy_iterator()


def _batch_dict(image, label):
    return {"image": tf.cast(image, tf.float32), "label": tf.cast(label, tf.int32)}


def _in_memory_train(config, images, labels, preprocess, start_step, sharding) -> Iterator:
    global_batch, local_batch = config.batch_size, sharding.local(config.batch_size)
    num_batches = len(labels) // global_batch
    if num_batches == 0:
        raise ValueError(f"batch_size {global_batch} exceeds the {len(labels)} training examples")
    images_t, labels_t = tf.constant(images), tf.constant(labels)
    epoch, skip = divmod(start_step, num_batches)
    while True:
        order = np.random.default_rng([config.seed, epoch]).permutation(len(labels))
        rows = np.arange(num_batches * global_batch).reshape(num_batches, global_batch)
        mine = slice(sharding.index * local_batch, (sharding.index + 1) * local_batch)
        positions = rows[skip:, mine].reshape(-1)

        def example(index, position, epoch=epoch):
            image = preprocess(
                tf.gather(images_t, index), _example_seeds(config.seed, epoch, position)
            )
            return _batch_dict(image, tf.gather(labels_t, index))

        ds = tf.data.Dataset.from_tensor_slices((order[positions], positions))
        ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE)
        yield from _finish(ds, local_batch)
        epoch, skip = epoch + 1, 0


def _in_memory_eval(config, images, labels, preprocess, sharding) -> Iterator:
    global_batch, local_batch = config.eval_batch_size, sharding.local(config.eval_batch_size)
    steps = math.ceil(len(labels) / global_batch)
    rows = np.arange(steps * global_batch).reshape(steps, global_batch)
    mine = rows[:, sharding.index * local_batch : (sharding.index + 1) * local_batch].reshape(-1)
    mask = (mine < len(labels)).astype(np.float32)
    index = np.where(mask > 0, mine, 0)

    def example(image, label, mask):
        return {**_batch_dict(preprocess(image, None), label), "mask": mask}

    ds = tf.data.Dataset.from_tensor_slices((images[index], labels[index], mask))
    return _finish(ds.map(example, num_parallel_calls=tf.data.AUTOTUNE), local_batch)


def _streamed_read(config, spec: DatasetSpec, split: str, sharding: Sharding, *, shuffle_seed=None):
    """This process's part of ``split``, images left as encoded bytes (decoded when cropped)."""
    dataset_builder = builder(config, spec=spec)
    process_split = tfds.split_for_jax_process(
        split, process_index=sharding.index, process_count=sharding.count
    )
    read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed, interleave_cycle_length=16)
    return dataset_builder.as_dataset(
        split=process_split,
        shuffle_files=shuffle_seed is not None,
        decoders={"image": tfds.decode.SkipDecoding()},
        read_config=read_config,
    )


def _streamed_train(
    config, spec: DatasetSpec, split: str, preprocess, start_step, sharding
) -> Iterator:
    local_batch = sharding.local(config.batch_size)
    # Raises on a per-class subset, which a streamed data set does not support.
    num_batches = num_train_examples(config, spec=spec) // config.batch_size
    epoch, skip = divmod(start_step, num_batches)
    while True:
        epoch_seed = config.seed * 1_000_003 + epoch
        ds = _streamed_read(config, spec, split, sharding, shuffle_seed=epoch_seed)
        ds = ds.shuffle(config.shuffle_buffer_size or 16 * local_batch, seed=epoch_seed)
        ds = ds.take(num_batches * local_batch).enumerate().skip(skip * local_batch)

        def example(position, features, epoch=epoch):
            position = position + sharding.index * num_batches * local_batch
            image = preprocess(features["image"], _example_seeds(config.seed, epoch, position))
            return _batch_dict(image, features["label"])

        yield from _finish(ds.map(example, num_parallel_calls=tf.data.AUTOTUNE), local_batch)
        epoch, skip = epoch + 1, 0


def _streamed_eval(config, spec: DatasetSpec, split: str, preprocess, sharding) -> Iterator:
    local_batch = sharding.local(config.eval_batch_size)
    ds = _streamed_read(config, spec, split, sharding)
    ds = ds.map(
        lambda f: {**_batch_dict(preprocess(f["image"], None), f["label"]), "mask": 1.0},
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    # Zero images with mask 0 complete the last batch, so every process runs the same steps.
    height, width, channels = image_shape(config, spec=spec)
    padding = tf.data.Dataset.from_tensors(
        {
            "image": tf.zeros((height, width, channels), tf.float32),
            "label": tf.constant(0, tf.int32),
            "mask": tf.constant(0.0),
        }
    ).repeat()
    ds = ds.concatenate(padding).take(_eval_steps(config, spec, split) * local_batch)
    return _finish(ds, local_batch)


def _fake_batches(config, spec: DatasetSpec, sharding: Sharding, *, with_mask: bool) -> Iterator:
    """One fixed random batch, repeated: measures the model, not the input pipeline."""
    batch_size = sharding.local(config.eval_batch_size if with_mask else config.batch_size)
    rng = np.random.default_rng(config.seed)
    batch = {
        "image": rng.standard_normal(
            (batch_size, *image_shape(config, spec=spec)), dtype=np.float32
        ),
        "label": rng.integers(0, spec.num_classes, batch_size, dtype=np.int32),
    }
    if with_mask:
        batch["mask"] = np.ones(batch_size, np.float32)
        for _ in range(_fake_eval_steps(config)):
            yield batch
        return
    while True:
        yield batch
