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
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import ClassVar

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from train import tiny_imagenet  # noqa: F401  (registers the "tiny_imagenet" builder)

DATASETS = ("digits", "cifar10", "cifar100", "imagenet2012", "tiny_imagenet", "fake")

# Per-channel statistics of the training images, in the images' own units.
CIFAR_MEAN = (0.4914 * 255, 0.4822 * 255, 0.4465 * 255)
CIFAR_STD = (0.2470 * 255, 0.2435 * 255, 0.2616 * 255)
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
DIGITS_MEAN = (4.884,)
DIGITS_STD = (6.017,)

DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0
IMAGENET_CROP_PADDING = 32


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's bundled handwritten digits (8x8, values 0..16) as a tfds dataset.

    Built locally from ``sklearn.datasets.load_digits`` (no download). The 1797
    images are split 1437 train / 360 test by a permutation with a fixed seed.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar = {"1.0.0": "1437/360 split of sklearn's digits, seed 0."}
    # tfds derives this from the module for checksums and metadata files; setting it keeps tfds
    # from probing package resources (which needs the optional `importlib_resources`).
    code_path = epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="UCI ML hand-written digits, as bundled with scikit-learn.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(8, 8, 1)),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        from sklearn.datasets import load_digits

        del dl_manager  # Nothing to download.
        digits = load_digits()
        order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(digits.target))
        test, train = order[:DIGITS_TEST_SIZE], order[DIGITS_TEST_SIZE:]
        return {
            "train": self._generate_examples(digits, np.sort(train)),
            "test": self._generate_examples(digits, np.sort(test)),
        }

    def _generate_examples(self, digits, indices):
        for index in indices:
            image = digits.images[index].astype(np.uint8)[..., None]
            yield int(index), {"image": image, "label": int(digits.target[index])}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What the model and the loop need to know about a dataset."""

    name: str
    tfds_name: str | None
    num_classes: int
    native_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_split: str = "train"
    eval_split: str = "test"
    in_memory: bool = True


SPECS = {
    "digits": DatasetSpec("digits", "sklearn_digits", 10, (8, 8, 1), DIGITS_MEAN, DIGITS_STD),
    "cifar10": DatasetSpec("cifar10", "cifar10", 10, (32, 32, 3), CIFAR_MEAN, CIFAR_STD),
    "cifar100": DatasetSpec("cifar100", "cifar100", 100, (32, 32, 3), CIFAR_MEAN, CIFAR_STD),
    "imagenet2012": DatasetSpec(
        "imagenet2012",
        "imagenet2012",
        1000,
        (224, 224, 3),
        IMAGENET_MEAN,
        IMAGENET_STD,
        eval_split="validation",
        in_memory=False,
    ),
    # Tiny ImageNet's 64x64 JPEGs go through the ImageNet preprocessing at image_size (the
    # paper: random crop 224 and flip; resize 256 and center crop 224), with ImageNet's statistics.
    "tiny_imagenet": DatasetSpec(
        "tiny_imagenet",
        "tiny_imagenet",
        200,
        (64, 64, 3),
        IMAGENET_MEAN,
        IMAGENET_STD,
        eval_split="validation",
        in_memory=False,
    ),
    "fake": DatasetSpec("fake", None, 1000, (224, 224, 3), (0.0,) * 3, (1.0,) * 3),
}


def dataset_spec(config) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``config.dataset`` with ``num_classes`` from the config."""
    if config.dataset not in SPECS:
        raise ValueError(f"unknown dataset {config.dataset!r}; choose one of {DATASETS}")
    spec = SPECS[config.dataset]
    if config.dataset == "fake":
        spec = dataclasses.replace(spec, num_classes=config.get("num_classes", spec.num_classes))
    return spec


def image_shape(config) -> tuple[int, int, int]:
    """(H, W, C) of the batches: the native size unless ``config.image_size`` is set."""
    height, width, channels = dataset_spec(config).native_shape
    size = config.get("image_size")
    return (size, size, channels) if size else (height, width, channels)


@dataclasses.dataclass(frozen=True)
class Sharding:
    """Process ``index`` of ``count`` gets rows ``[index * B / count, (index + 1) * B / count)``."""

    index: int = 0
    count: int = 1

    def local(self, global_batch_size: int) -> int:
        return global_batch_size // self.count


# --- Preprocessing: one example, float32 in, float32 out. -------------------------------------


def _normalize(image, spec: DatasetSpec):
    image = tf.cast(image, tf.float32)
    return (image - tf.constant(spec.mean)) / tf.constant(spec.std)


def _resize(image, shape):
    if tuple(image.shape[:2]) == tuple(shape[:2]):
        return image
    return tf.image.resize(image, shape[:2], method="bilinear")


def _resize_bicubic(image, shape):
    # Bicubic interpolation overshoots; clip back to the pixel range.
    return tf.clip_by_value(tf.image.resize(image, shape[:2], method="bicubic"), 0.0, 255.0)


def _pad_crop(image, seed, pad: int):
    """Zero-pads by ``pad`` pixels and crops back to the original size at a random offset."""
    height, width, channels = image.shape
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    return tf.image.stateless_random_crop(padded, (height, width, channels), seed=seed)


def small_image_train(spec: DatasetSpec, shape, pad: int, flip: bool) -> Callable:
    """Digits/CIFAR training augmentation: normalize, resize, pad-and-crop, optional flip."""

    def preprocess(image, seeds):
        # Pads with black (raw zeros), as torchvision's RandomCrop(padding=...) does.
        image = _resize(tf.cast(image, tf.float32), shape)
        if pad:
            image = _pad_crop(image, seeds[0], pad)
        if flip:
            image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
        return _normalize(image, spec)

    return preprocess


def small_image_eval(spec: DatasetSpec, shape) -> Callable:
    """Digits/CIFAR evaluation: normalize and resize."""

    def preprocess(image, seeds):
        del seeds
        return _resize(_normalize(image, spec), shape)

    return preprocess


def imagenet_train(spec: DatasetSpec, shape) -> Callable:
    """Inception-style random resized crop (area 8-100%, ratio 3/4-4/3) and flip of a JPEG."""

    def preprocess(image_bytes, seeds):
        jpeg_shape = tf.image.extract_jpeg_shape(image_bytes)
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            jpeg_shape,
            bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=(1, 1, 4)),
            seed=seeds[0],
            min_object_covered=0.1,
            aspect_ratio_range=(3 / 4, 4 / 3),
            area_range=(0.08, 1.0),
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        window = tf.stack([begin[0], begin[1], size[0], size[1]])
        image = tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)
        image = _resize_bicubic(image, shape)
        image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
        return _normalize(image, spec)

    return preprocess


def imagenet_eval(spec: DatasetSpec, shape) -> Callable:
    """Center crop of ``size / (size + 32)`` of the shorter side, resized to ``size``."""
    size = shape[0]

    def preprocess(image_bytes, seeds):
        del seeds
        jpeg_shape = tf.image.extract_jpeg_shape(image_bytes)
        height, width = jpeg_shape[0], jpeg_shape[1]
        crop = tf.cast(
            size / (size + IMAGENET_CROP_PADDING) * tf.cast(tf.minimum(height, width), tf.float32),
            tf.int32,
        )
        window = tf.stack([(height - crop + 1) // 2, (width - crop + 1) // 2, crop, crop])
        image = tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)
        image = _resize_bicubic(image, shape)
        return _normalize(image, spec)

    return preprocess


def _preprocessors(config) -> tuple[Callable, Callable]:
    spec, shape = dataset_spec(config), image_shape(config)
    if spec.name in ("imagenet2012", "tiny_imagenet"):
        return imagenet_train(spec, shape), imagenet_eval(spec, shape)
    pad = config.get("crop_padding", 1 if spec.name == "digits" else 4)
    flip = config.get("random_flip", spec.name != "digits")
    return small_image_train(spec, shape, pad, flip), small_image_eval(spec, shape)


def _example_seeds(seed: int, epoch, position):
    """Two independent stateless seeds for the example at ``position`` of ``epoch``."""
    base = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64) * 2**32 + position])
    return tf.random.experimental.stateless_split(base, num=2)


def _finish(ds: tf.data.Dataset, batch_size: int) -> Iterator[dict]:
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.as_numpy_iterator()


def _batch_dict(image, label):
    return {"image": tf.cast(image, tf.float32), "label": tf.cast(label, tf.int32)}


# --- Reading. -----------------------------------------------------------------------------------


def builder(config) -> tfds.core.DatasetBuilder:
    """The tfds builder of ``config.dataset``, prepared (the digits are built here on first use)."""
    spec = dataset_spec(config)
    dataset_builder = tfds.builder(spec.tfds_name, data_dir=config.get("data_dir"))
    if spec.name in ("digits", "cifar10", "cifar100"):
        # Digits: built from scikit-learn's copy, no network. CIFAR: downloads when missing.
        dataset_builder.download_and_prepare()
    elif spec.name == "tiny_imagenet":  # Built once from the folder in the manual directory.
        dataset_builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=config.get("manual_dir"))
        )
    return dataset_builder


def load_arrays(config, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A whole split as ``(images uint8 (N, H, W, C), labels int32 (N,))``."""
    dataset_builder = builder(config)
    ds = dataset_builder.as_dataset(split=split, shuffle_files=False)
    images, labels = [], []
    for batch in ds.batch(4096).as_numpy_iterator():
        images.append(batch["image"])
        labels.append(batch["label"].astype(np.int32))
    return np.concatenate(images), np.concatenate(labels)


def num_examples(config, split: str) -> int:
    """Examples in ``split`` (counted when tfds's metadata does not know, as under mock data)."""
    spec = dataset_spec(config)
    if spec.name == "fake":
        return config.batch_size * config.get("fake_steps_per_epoch", 100)
    dataset_builder = builder(config)
    known = dataset_builder.info.splits
    if split in known and known[split].num_examples:
        return known[split].num_examples
    return int(dataset_builder.as_dataset(split=split).reduce(0, lambda n, _: n + 1))


def _percent(fraction: float) -> int:
    if not 0 < fraction < 1 or round(100 * fraction) != 100 * fraction:
        raise ValueError(
            f"validation_fraction must be a whole percentage in (0, 1), e.g. 0.1; got {fraction}"
        )
    return round(100 * fraction)


def train_split(config) -> str:
    """The training split: the dataset's, less its last ``validation_fraction`` if set, or
    only its first ``train_examples`` examples if set (a harder task from the same data)."""
    split, fraction = dataset_spec(config).train_split, config.get("validation_fraction", 0.0)
    examples = config.get("train_examples")
    if examples is not None:
        if fraction:
            raise ValueError("set train_examples or validation_fraction, not both")
        if not isinstance(examples, int) or examples < config.batch_size:
            raise ValueError(
                f"train_examples must be an integer >= batch_size ({config.batch_size}), "
                f"got {examples!r}"
            )
        return f"{split}[:{examples}]"
    return f"{split}[:{100 - _percent(fraction)}%]" if fraction else split


def eval_split(config, which: str = "test") -> str:
    """``which="test"``: the dataset's eval split; ``"validation"``: the training split's
    last ``validation_fraction`` (the paper's 9/1 split of CIFAR's training set)."""
    if which == "test":
        return dataset_spec(config).eval_split
    if which != "validation":
        raise ValueError(f"which must be 'test' or 'validation', got {which!r}")
    fraction = config.get("validation_fraction", 0.0)
    if not fraction:
        raise ValueError("a validation split needs config.validation_fraction > 0")
    return f"{dataset_spec(config).train_split}[{100 - _percent(fraction)}%:]"


def steps_per_epoch(config) -> int:
    """Global batches per epoch (the last, incomplete batch of every epoch is dropped)."""
    return num_examples(config, train_split(config)) // config.batch_size


def eval_steps(config, which: str = "test") -> int:
    """Global eval batches that cover the eval split (the last one padded)."""
    if config.dataset == "fake":
        return config.get("fake_eval_steps", 2)
    return math.ceil(num_examples(config, eval_split(config, which)) / config.eval_batch_size)


def train_batches(config, *, start_step: int = 0, sharding: Sharding = Sharding()) -> Iterator:
    """This process's training batches from global step ``start_step`` on, endlessly."""
    spec = dataset_spec(config)
    preprocess, _ = _preprocessors(config)
    if spec.name == "fake":
        return _fake_batches(config, sharding, with_mask=False)
    if spec.in_memory:
        images, labels = load_arrays(config, train_split(config))
        return _in_memory_train(config, images, labels, preprocess, start_step, sharding)
    return _streamed_train(config, preprocess, start_step, sharding)


def eval_batches(config, *, sharding: Sharding = Sharding(), which: str = "test") -> Iterator:
    """This process's batches of the ``which`` split ("test" or "validation"),
    ``eval_steps(config, which)`` of them, with ``mask`` on the padding."""
    spec = dataset_spec(config)
    _, preprocess = _preprocessors(config)
    if spec.name == "fake":
        return _fake_batches(config, sharding, with_mask=True)
    if spec.in_memory:
        images, labels = load_arrays(config, eval_split(config, which))
        return _in_memory_eval(config, images, labels, preprocess, sharding)
    return _streamed_eval(config, preprocess, sharding, which)


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


def _streamed_read(config, split: str, sharding: Sharding, *, shuffle_seed=None):
    dataset_builder = builder(config)
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


def _streamed_train(config, preprocess, start_step, sharding) -> Iterator:
    local_batch = sharding.local(config.batch_size)
    num_batches = steps_per_epoch(config)
    epoch, skip = divmod(start_step, num_batches)
    while True:
        epoch_seed = config.seed * 1_000_003 + epoch
        ds = _streamed_read(config, train_split(config), sharding, shuffle_seed=epoch_seed)
        ds = ds.shuffle(config.get("shuffle_buffer_size", 16 * local_batch), seed=epoch_seed)
        ds = ds.take(num_batches * local_batch).enumerate().skip(skip * local_batch)

        def example(position, features, epoch=epoch):
            position = position + sharding.index * num_batches * local_batch
            image = preprocess(features["image"], _example_seeds(config.seed, epoch, position))
            return _batch_dict(image, features["label"])

        yield from _finish(ds.map(example, num_parallel_calls=tf.data.AUTOTUNE), local_batch)
        epoch, skip = epoch + 1, 0


def _streamed_eval(config, preprocess, sharding, which: str) -> Iterator:
    local_batch = sharding.local(config.eval_batch_size)
    ds = _streamed_read(config, eval_split(config, which), sharding)
    ds = ds.map(
        lambda f: {**_batch_dict(preprocess(f["image"], None), f["label"]), "mask": 1.0},
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    height, width, channels = image_shape(config)
    padding = tf.data.Dataset.from_tensors(
        {
            "image": tf.zeros((height, width, channels), tf.float32),
            "label": tf.constant(0, tf.int32),
            "mask": tf.constant(0.0),
        }
    ).repeat()
    ds = ds.concatenate(padding).take(eval_steps(config, which) * local_batch)
    return _finish(ds, local_batch)


def _fake_batches(config, sharding: Sharding, *, with_mask: bool) -> Iterator:
    """One fixed random batch, repeated: measures the model, not the input pipeline."""
    batch_size = sharding.local(config.eval_batch_size if with_mask else config.batch_size)
    rng = np.random.default_rng(config.seed)
    batch = {
        "image": rng.standard_normal((batch_size, *image_shape(config)), dtype=np.float32),
        "label": rng.integers(0, dataset_spec(config).num_classes, batch_size, dtype=np.int32),
    }
    if with_mask:
        batch["mask"] = np.ones(batch_size, np.float32)
        for _ in range(eval_steps(config)):
            yield batch
        return
    while True:
        yield batch
