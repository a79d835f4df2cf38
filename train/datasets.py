"""The datasets the recipes train on: their registry, tfds builders, splits and raw arrays.

:data:`SPECS` maps each name in :data:`DATASETS` to a :class:`DatasetSpec` (tfds name,
classes, native image shape, normalization statistics, splits). The functions here
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


def _given(config, spec: DatasetSpec | None) -> DatasetSpec:
    return dataset_spec(config) if spec is None else spec


def image_shape(config, *, spec: DatasetSpec | None = None) -> tuple[int, int, int]:
    """(H, W, C) of the batches: the native size unless ``config.image_size`` is set."""
    height, width, channels = _given(config, spec).native_shape
    size = config.get("image_size")
    return (size, size, channels) if size else (height, width, channels)


# --- Reading. -----------------------------------------------------------------------------------


def builder(config, *, spec: DatasetSpec | None = None) -> tfds.core.DatasetBuilder:
    """The tfds builder of ``config.dataset``, prepared (the digits are built here on first use)."""
    spec = _given(config, spec)
    dataset_builder = tfds.builder(spec.tfds_name, data_dir=config.get("data_dir"))
    if spec.name in ("digits", "cifar10", "cifar100"):
        # Digits: built from scikit-learn's copy, no network. CIFAR: downloads when missing.
        dataset_builder.download_and_prepare()
    elif spec.name == "tiny_imagenet":  # Built once from the folder in the manual directory.
        dataset_builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=config.get("manual_dir"))
        )
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


def num_examples(config, split: str, *, spec: DatasetSpec | None = None) -> int:
    """Examples in ``split`` (counted when tfds's metadata does not know, as under mock data)."""
    spec = _given(config, spec)
    if spec.name == "fake":
        return config.batch_size * config.get("fake_steps_per_epoch", 100)
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
    split, fraction = _given(config, spec).train_split, config.get("validation_fraction", 0.0)
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


def eval_split(config, which: str = "test", *, spec: DatasetSpec | None = None) -> str:
    """``which="test"``: the dataset's eval split; ``"validation"``: the training split's
    last ``validation_fraction`` (the paper's 9/1 split of CIFAR's training set)."""
    if which == "test":
        return _given(config, spec).eval_split
    if which != "validation":
        raise ValueError(f"which must be 'test' or 'validation', got {which!r}")
    fraction = config.get("validation_fraction", 0.0)
    if not fraction:
        raise ValueError("a validation split needs config.validation_fraction > 0")
    return f"{_given(config, spec).train_split}[{100 - _percent(fraction)}%:]"
