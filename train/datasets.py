"""The datasets the recipes train on: their registry, tfds builders, splits and raw arrays.

:data:`SPECS` maps each name in :data:`DATASETS` to a :class:`DatasetSpec` (tfds name,
classes, native image shape, normalization statistics, splits). Any other tfds image
classification data set trains as ``"tfds:NAME"`` (or its plain name when the registry
lacks it), described from its builder by :mod:`train.any_tfds`. The functions here
read data as stored (uint8 images, int32 labels); ``train.preprocessing`` transforms
examples and ``train.input_pipeline`` batches them.

The functions that take a ``config`` also take an optional keyword ``spec``: the
caller's ``dataset_spec(config)``, so a pipeline derives it once and passes it down.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

# Importing a builder's module registers it with tfds ("tiny_imagenet", "fashion_mnist_idx").
from train import any_tfds, fashion_mnist, tiny_imagenet  # noqa: F401

DATASETS = (
    "digits",
    "fashion_mnist",
    "cifar10",
    "cifar100",
    "imagenet2012",
    "tiny_imagenet",
    "fake",
)

# Per-channel statistics of the training images, in the images' own units.
CIFAR_MEAN = (0.4914 * 255, 0.4822 * 255, 0.4465 * 255)
CIFAR_STD = (0.2470 * 255, 0.2435 * 255, 0.2616 * 255)
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
DIGITS_MEAN = (4.884,)
DIGITS_STD = (6.017,)
# Computed once by train.any_tfds.pixel_statistics over the 60,000 training images of the
# Debian package's files (fashion_mnist_idx's train split): mean and std of every pixel.
FASHION_MNIST_MEAN = (72.940,)
FASHION_MNIST_STD = (90.021,)
# A stream of its own for the class-stratified training subsets: the epochs' permutations use
# [seed, epoch], and no run reaches this many epochs.
SUBSET_STREAM = 7_331_000_001

DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's bundled handwritten digits (8x8, values 0..16) as a tfds dataset.

    Built locally from ``sklearn.datasets.load_digits`` (no download). The 1797
    images are split 1437 train / 360 test by a permutation with a fixed seed.
    """

    # tfds would derive this name from the class name; spelled out so that renaming or moving
    # the class cannot orphan data already prepared under <data_dir>/sklearn_digits/1.0.0.
    name = "sklearn_digits"
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
    # Where the builder reads manually provided files when config.manual_dir is None; None:
    # tfds's <data_dir>/downloads/manual.
    manual_dir: str | None = None
    # The training augmentation unless the config sets it (:func:`augmentation`): translation by
    # up to crop_padding pixels (None: JPEGs, Inception-style crops instead), horizontal flips.
    crop_padding: int | None = 4
    random_flip: bool = True


SPECS = {
    "digits": DatasetSpec(  # Not mirror-symmetric; 1 pixel of 8 is CIFAR's 4 of 32.
        "digits",
        "sklearn_digits",
        10,
        (8, 8, 1),
        DIGITS_MEAN,
        DIGITS_STD,
        crop_padding=1,
        random_flip=False,
    ),
    "fashion_mnist": DatasetSpec(
        "fashion_mnist",
        fashion_mnist.FashionMnistIdx.name,
        10,
        (28, 28, 1),
        FASHION_MNIST_MEAN,
        FASHION_MNIST_STD,
        manual_dir=fashion_mnist.DEBIAN_FOLDER,
    ),
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
        crop_padding=None,
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
        crop_padding=None,
    ),
    "fake": DatasetSpec("fake", None, 1000, (224, 224, 3), (0.0,) * 3, (1.0,) * 3),
}


def tfds_name(dataset: str) -> str | None:
    """The tfds data set that ``config.dataset`` names outside the registry: ``"tfds:NAME"``
    and a plain name not in :data:`DATASETS` give ``NAME``; a registry name gives None."""
    if dataset.startswith(any_tfds.PREFIX):
        return dataset[len(any_tfds.PREFIX) :]
    return None if dataset in SPECS else dataset


def dataset_spec(config) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``config.dataset`` (``num_classes`` of "fake" from the config),
    with ``config.image_mean`` / ``image_std`` in place of its statistics when set.

    A tfds data set outside the registry takes its classes and image shape from its builder,
    its splits from ``config.tfds_train_split`` / ``tfds_eval_split`` and, unless the config
    gives them, the statistics of its training split (prepared and computed on first use).

    Raises:
      ValueError: an unknown data set, a tfds data set that is no image classification one
        (:func:`train.any_tfds.classes_and_shape`), or statistics of the wrong length.
    """
    given = config.image_mean is not None and config.image_std is not None
    name = tfds_name(config.dataset)
    if name is not None:
        spec = _tfds_spec(config, name, with_statistics=not given)
    else:
        spec = SPECS[config.dataset]
    if config.dataset == "fake":
        classes = spec.num_classes if config.num_classes is None else config.num_classes
        spec = dataclasses.replace(spec, num_classes=classes)
    if config.image_mean is not None or config.image_std is not None:
        spec = _given_statistics(config, spec)
    return spec


def _tfds_spec(config, name: str, *, with_statistics: bool) -> DatasetSpec:
    try:
        dataset_builder = any_tfds.open_builder(name, config.data_dir)
    except ValueError as error:
        raise ValueError(
            f"unknown dataset {config.dataset!r}: not one of {DATASETS}, and {error}"
        ) from None
    num_classes, shape = any_tfds.classes_and_shape(dataset_builder)
    spec = DatasetSpec(
        config.dataset,
        name,
        num_classes,
        (shape[0], shape[1], shape[2]),
        (0.0,) * shape[2],
        (1.0,) * shape[2],
        train_split=config.tfds_train_split,
        eval_split=config.tfds_eval_split,
        # What the default config gave every data set before the data sets had their own.
        crop_padding=1,
        random_flip=False,
    )
    if not with_statistics:
        return spec
    mean, std = any_tfds.cached_statistics(
        dataset_builder, spec.train_split, prepare=lambda: builder(config, spec=spec)
    )
    return dataclasses.replace(spec, mean=mean, std=std)


def _given_statistics(config, spec: DatasetSpec) -> DatasetSpec:
    channels = spec.native_shape[2]
    mean, std = config.image_mean, config.image_std
    if mean is None or std is None or len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"image_mean and image_std must both be set, {channels} value(s) each (one per "
            f"channel of {config.dataset!r}); got {mean!r} and {std!r}"
        )
    if min(std) <= 0:
        raise ValueError(f"image_std must be positive, got {std!r}")
    return dataclasses.replace(spec, mean=tuple(map(float, mean)), std=tuple(map(float, std)))


def check_dataset(config) -> None:
    """Raises ValueError on data settings that cannot run, reading no data (of a tfds data set,
    its builder's description): an unknown data set, a bad :func:`augmentation`, ``num_classes``
    but for "fake", ``image_size`` with ``pad_to``, or a bad ``train_examples_per_class``."""
    name = tfds_name(config.dataset)
    spec = (
        SPECS[config.dataset] if name is None else _tfds_spec(config, name, with_statistics=False)
    )
    augmentation(config, spec)
    if config.num_classes is not None and config.dataset != "fake":
        raise ValueError(f"num_classes applies to dataset='fake' only, not {config.dataset!r}")
    if config.image_size and config.pad_to:
        raise ValueError("set image_size (resize) or pad_to (zero-pad), not both")
    per_class = config.train_examples_per_class
    if per_class is not None:
        if not isinstance(per_class, int) or per_class < 1:
            raise ValueError(
                f"train_examples_per_class must be a positive integer, got {per_class!r}"
            )
        if config.train_examples is not None:
            raise ValueError("set train_examples or train_examples_per_class, not both")


def augmentation(config, spec: DatasetSpec) -> tuple[int | None, bool]:
    """``(crop_padding, random_flip)`` of the training augmentation: the config's where set,
    else ``spec``'s own (``dataset="cifar10"`` on the default config: 4-pixel crops and flips);
    ``crop_padding`` None: a JPEG data set's Inception-style crops.

    Raises:
      ValueError: a negative ``crop_padding``, or one for a JPEG data set.
    """
    pad, flip = config.crop_padding, config.random_flip
    if pad is not None and spec.crop_padding is None:
        message = "take Inception-style random resized crops; leave crop_padding None"
        raise ValueError(f"crop_padding applies to array images: {spec.name!r}'s JPEGs {message}")
    if pad is not None and pad < 0:
        raise ValueError(f"crop_padding must be >= 0, got {pad}")
    return (spec.crop_padding if pad is None else pad), (spec.random_flip if flip is None else flip)


def _given(config, spec: DatasetSpec | None) -> DatasetSpec:
    return dataset_spec(config) if spec is None else spec


def image_shape(config, *, spec: DatasetSpec | None = None) -> tuple[int, int, int]:
    """(H, W, C) of the batches: the native size unless ``config.image_size`` (resized to) or
    ``config.pad_to`` (zero-padded to) is set.

    Raises:
      ValueError: ``pad_to`` smaller than the native height or width.
    """
    height, width, channels = _given(config, spec).native_shape
    size = config.image_size
    if config.pad_to:
        if config.pad_to < max(height, width):
            raise ValueError(
                f"pad_to={config.pad_to} is smaller than the {height}x{width} images of "
                f"{config.dataset!r}"
            )
        size = config.pad_to
    return (size, size, channels) if size else (height, width, channels)


# --- Reading. -----------------------------------------------------------------------------------


def builder(config, *, spec: DatasetSpec | None = None) -> tfds.core.DatasetBuilder:
    """The tfds builder of ``config.dataset``, prepared (built here on first use, but ImageNet).

    Raises:
      FileNotFoundError: a data set built from a manual directory that lacks its files.
    """
    spec = _given(config, spec)
    dataset_builder = tfds.builder(spec.tfds_name, data_dir=config.data_dir)
    if spec.name != "imagenet2012":  # ImageNet is prepared beforehand (docs/training.md).
        # Digits: built from scikit-learn's copy, no network. Fashion-MNIST and Tiny ImageNet:
        # built once from the files in the manual directory. CIFAR and other tfds data sets:
        # downloaded when missing.
        manual_dir = config.manual_dir or spec.manual_dir
        try:
            dataset_builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
            )
        except AssertionError as error:  # tfds's "manual directory does not exist or is empty".
            raise FileNotFoundError(str(error)) from None
    return dataset_builder


def load_arrays(
    config, split: str, *, spec: DatasetSpec | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A whole split as ``(images uint8 (N, H, W, C), labels int32 (N,))``."""
    dataset_builder = builder(config, spec=spec)
    ds = dataset_builder.as_dataset(split=split, shuffle_files=False)
    images, labels = [], []
    for batch in ds.batch(4096).as_numpy_iterator():
        images.append(batch["image"])
        labels.append(batch["label"].astype(np.int32))
    return np.concatenate(images), np.concatenate(labels)


def class_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of ``per_class`` examples of every class present in ``labels``, drawn
    without replacement by a generator of ``seed`` alone, so that every variant trained with
    a seed sees the same examples.

    Raises:
      ValueError: a class with fewer than ``per_class`` examples.
    """
    rng = np.random.default_rng([seed, SUBSET_STREAM])
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < per_class:
            raise ValueError(
                f"train_examples_per_class={per_class}, but class {label} has only "
                f"{len(members)} training examples"
            )
        chosen.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def load_train_arrays(config, *, spec: DatasetSpec | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The training examples as arrays: :func:`train_split`'s, or with
    ``config.train_examples_per_class`` its :func:`class_subset` for ``config.seed``."""
    images, labels = load_arrays(config, train_split(config, spec=spec), spec=spec)
    if config.train_examples_per_class is None:
        return images, labels
    keep = class_subset(labels, config.train_examples_per_class, config.seed)
    return images[keep], labels[keep]


def num_train_examples(config, *, spec: DatasetSpec | None = None) -> int:
    """Examples of the training set (:func:`load_train_arrays`).

    Raises:
      ValueError: ``train_examples_per_class`` on a streamed (not in-memory) data set.
    """
    spec = _given(config, spec)
    if config.train_examples_per_class is None:
        return num_examples(config, train_split(config, spec=spec), spec=spec)
    if not spec.in_memory:
        raise ValueError(f"train_examples_per_class needs an in-memory data set, not {spec.name!r}")
    return len(load_train_arrays(config, spec=spec)[1])


def num_examples(config, split: str, *, spec: DatasetSpec | None = None) -> int:
    """Examples in ``split`` (counted when tfds's metadata does not know, as under mock data)."""
    spec = _given(config, spec)
    if spec.name == "fake":
        return config.batch_size * config.fake_steps_per_epoch
    dataset_builder = builder(config, spec=spec)
    known = dataset_builder.info.splits
    if split in known and known[split].num_examples:
        return known[split].num_examples
    return int(dataset_builder.as_dataset(split=split).reduce(0, lambda n, _: n + 1))


# --- Splits. ------------------------------------------------------------------------------------


def _percent(fraction: float) -> int:
    if not 0 < fraction < 1 or round(100 * fraction) != 100 * fraction:
        raise ValueError(
            f"validation_fraction must be a whole percentage in (0, 1), e.g. 0.1; got {fraction}"
        )
    return round(100 * fraction)


def train_split(config, *, spec: DatasetSpec | None = None) -> str:
    """The training split: the dataset's, less its last ``validation_fraction`` if set, or
    only its first ``train_examples`` examples if set (a harder task from the same data)."""
    split, fraction = _given(config, spec).train_split, config.validation_fraction
    examples = config.train_examples
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


def eval_split(config, which: str = "test", *, spec: DatasetSpec | None = None) -> str:
    """``which="test"``: the dataset's eval split; ``"validation"``: the training split's
    last ``validation_fraction`` (the paper's 9/1 split of CIFAR's training set)."""
    if which == "test":
        return _given(config, spec).eval_split
    if which != "validation":
        raise ValueError(f"which must be 'test' or 'validation', got {which!r}")
    fraction = config.validation_fraction
    if not fraction:
        raise ValueError("a validation split needs config.validation_fraction > 0")
    return f"{_given(config, spec).train_split}[{100 - _percent(fraction)}%:]"
