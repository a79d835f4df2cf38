"""Any tensorflow-datasets image classification data set: its classes, image shape, statistics.

``config.dataset="tfds:NAME"`` (or a plain tfds name the registry lacks) trains on the tfds
data set ``NAME`` (``NAME`` may carry a config and version, ``"NAME/CONFIG:1.0.0"``). It
needs an ``image`` feature of fixed shape and a ``label`` class feature; the splits are
``config.tfds_train_split`` and ``config.tfds_eval_split``. The per-channel pixel
statistics that normalize its images are computed once from the whole training split
and kept in a small JSON file beside the prepared data (the builder's ``data_dir``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

PREFIX = "tfds:"


def open_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """tfds's builder of ``name`` (not prepared).

    Raises:
      ValueError: tfds has no data set ``name``.
    """
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise ValueError(
            f"tensorflow-datasets has no data set {name!r} ({error}); see "
            "https://www.tensorflow.org/datasets/catalog/overview for the names"
        ) from None


def classes_and_shape(dataset_builder: tfds.core.DatasetBuilder) -> tuple[int, tuple[int, ...]]:
    """``(number of classes, (H, W, C))`` from the builder's features.

    Raises:
      ValueError: no ``image`` feature of fixed shape, or no ``label`` class feature.
    """
    features, name = dataset_builder.info.features, dataset_builder.name
    have = sorted(features.keys()) if isinstance(features, tfds.features.FeaturesDict) else []
    image, label = (features[key] if key in have else None for key in ("image", "label"))
    if not isinstance(image, tfds.features.Image):
        raise ValueError(
            f"tfds data set {name!r} has no 'image' feature of type tfds.features.Image "
            f"(its features: {have}); only image classification data sets can be trained on"
        )
    if not isinstance(label, tfds.features.ClassLabel):
        raise ValueError(
            f"tfds data set {name!r} has no 'label' feature of type tfds.features.ClassLabel "
            f"(its features: {have}); only image classification data sets can be trained on"
        )
    if any(size is None for size in image.shape):
        raise ValueError(
            f"tfds data set {name!r} has images of varying shape {image.shape}; the in-memory "
            "pipeline needs one fixed (H, W, C)"
        )
    return label.num_classes, tuple(int(size) for size in image.shape)


def pixel_statistics(
    dataset_builder: tfds.core.DatasetBuilder, split: str
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of every pixel of ``split``, in pixel units.

    Accumulated in float64 over batches, so the split need not fit in memory.
    """
    count, total, squares = 0, 0.0, 0.0
    ds = dataset_builder.as_dataset(split=split, shuffle_files=False)
    for batch in ds.map(lambda f: f["image"]).batch(4096).as_numpy_iterator():
        pixels = batch.reshape(-1, batch.shape[-1]).astype(np.float64)
        count += len(pixels)
        total = total + pixels.sum(0)
        squares = squares + (pixels**2).sum(0)
    if count == 0:
        raise ValueError(f"split {split!r} of {dataset_builder.name!r} has no images")
    mean = np.asarray(total) / count
    std = np.sqrt(np.maximum(np.asarray(squares) / count - mean**2, 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def statistics_file(dataset_builder: tfds.core.DatasetBuilder, split: str) -> epath.Path:
    """Where :func:`cached_statistics` keeps the statistics of ``split``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", split)
    return epath.Path(dataset_builder.data_dir) / f"sbn_jax_pixel_statistics_{safe}.json"


def cached_statistics(
    dataset_builder: tfds.core.DatasetBuilder,
    split: str,
    prepare: Callable[[], tfds.core.DatasetBuilder],
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """:func:`pixel_statistics` of ``split``, read from :func:`statistics_file` when it exists
    and otherwise computed from ``prepare()`` (the builder, prepared) and written there. A
    cached read touches neither the data nor the network."""
    path = statistics_file(dataset_builder, split)
    if path.exists():
        stored = json.loads(path.read_text())
        return tuple(stored["mean"]), tuple(stored["std"])
    mean, std = pixel_statistics(prepare(), split)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"data_set": dataset_builder.name, "split": split, "mean": mean, "std": std}
    path.write_text(json.dumps(record, indent=2) + "\n")
    return mean, std
