"""Fashion-MNIST (10 classes, 28x28 grey) as a tensorflow-datasets builder over the four IDX files.

tensorflow-datasets' own ``fashion_mnist`` downloads at build time; this builder,
``fashion_mnist_idx``, reads the standard files from the manual directory and needs
no network:

    train-images-idx3-ubyte   60,000 training images      (IDX magic 2051)
    train-labels-idx1-ubyte   their labels, 0..9          (IDX magic 2049)
    t10k-images-idx3-ubyte    10,000 test images
    t10k-labels-idx1-ubyte    their labels

each gzipped (``.gz``, as published and as Debian ships them) or not. The Debian
package ``dataset-fashion-mnist`` installs them in :data:`DEBIAN_FOLDER`, the
manual directory the registry uses by default (``make fashion-mnist``).

IDX: a big-endian int32 magic number (2051 for images, 2049 for labels), the
big-endian int32 count of items (and for images their rows and columns), then one
unsigned byte per pixel or label.
"""

from __future__ import annotations

import gzip
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_FOLDER = "/usr/share/datasets/fashion-mnist"
PUBLIC_PAGE = "https://github.com/zalandoresearch/fashion-mnist"
SPLITS = {"train": "train", "test": "t10k"}  # Split: prefix of its files.
FILES = tuple(
    f"{prefix}-{kind}"
    for prefix in SPLITS.values()
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")
)
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
IMAGE_SIZE = 28
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
INSTRUCTIONS = (
    f"Fashion-MNIST needs the files {', '.join(FILES)} (each gzipped as .gz or not) in the "
    f"manual directory (config.manual_dir; default {DEBIAN_FOLDER}). The Debian package "
    f"{DEBIAN_PACKAGE} installs them there (`make fashion-mnist`, or `apt-get install "
    f"{DEBIAN_PACKAGE}`); they are also on the data set's public page, {PUBLIC_PAGE}."
)


def find_file(folder: epath.Path, name: str) -> epath.Path:
    """``folder/name``, or ``folder/name.gz`` when only that exists.

    Raises:
      FileNotFoundError: neither exists (the message names the four files, the folder
        and where to get them).
    """
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{name} (or {name}.gz) not found in {folder}. {INSTRUCTIONS}")


def read_idx(path: epath.Path, magic: int) -> np.ndarray:
    """The uint8 array of the IDX file at ``path``: ``(N, rows, cols)`` for magic 2051
    (images), ``(N,)`` for 2049 (labels). Gzipped files (by their first bytes) are inflated.

    Raises:
      ValueError: a gzip stream that does not inflate, a header shorter than its format's,
        another magic number, or data that is not exactly the size the header's counts give.
    """
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # The gzip signature.
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise ValueError(f"{path}: not a valid gzip file ({error})") from None
    kind = {IMAGES_MAGIC: "images", LABELS_MAGIC: "labels"}[magic]
    header_ints = 4 if magic == IMAGES_MAGIC else 2  # Magic, count (, rows, cols).
    found = int(np.frombuffer(raw, dtype=">i4", count=1)[0]) if len(raw) >= 4 else None
    if found is not None and found != magic:
        raise ValueError(
            f"{path}: magic number {found}, expected {magic} (IDX {kind}: unsigned bytes, "
            f"{header_ints - 1} dimension(s))"
        )
    if len(raw) < 4 * header_ints:
        raise ValueError(
            f"{path}: {len(raw)} bytes, shorter than the {4 * header_ints}-byte header of an "
            f"IDX {kind} file"
        )
    header = np.frombuffer(raw, dtype=">i4", count=header_ints)
    shape = tuple(int(n) for n in header[1:])
    expected, data = int(np.prod(shape)), raw[4 * header_ints :]
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "extra bytes"
        raise ValueError(
            f"{path}: the header gives {' x '.join(map(str, shape))} = {expected} bytes of "
            f"{kind}, but {len(data)} follow it ({problem})"
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def read_split(folder: epath.Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 28, 28) uint8, labels (N,) uint8)`` of the files ``prefix-*`` in ``folder``.

    Raises:
      FileNotFoundError: a missing file.
      ValueError: a bad file (:func:`read_idx`), images that are not 28x28, labels outside
        0..9, or a different number of images and labels.
    """
    images_file = find_file(folder, f"{prefix}-images-idx3-ubyte")
    labels_file = find_file(folder, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(images_file, IMAGES_MAGIC), read_idx(labels_file, LABELS_MAGIC)
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"{images_file}: images of {images.shape[1]}x{images.shape[2]}, expected "
            f"{IMAGE_SIZE}x{IMAGE_SIZE}"
        )
    if len(images) != len(labels):
        raise ValueError(
            f"{images_file} holds {len(images)} images but {labels_file} holds {len(labels)} "
            "labels; expected one label per image"
        )
    if len(labels) and labels.max() >= len(CLASS_NAMES):
        raise ValueError(f"{labels_file}: label {labels.max()}, expected 0..{len(CLASS_NAMES) - 1}")
    return images, labels


class FashionMnistIdx(tfds.core.GeneratorBasedBuilder):
    """The four Fashion-MNIST IDX files of the manual directory, as ``train`` and ``test``."""

    # Not "fashion_mnist": that name is tfds's own builder, which downloads.
    name = "fashion_mnist_idx"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar = {"1.0.0": "train (60,000) and test (10,000) from the IDX files."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS
    code_path = epath.Path(__file__)  # As for the digits: no package-resource probing.

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Fashion-MNIST (Xiao, Rasul and Vollgraf 2017), Zalando article images.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 1)),
                    "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
                }
            ),
            supervised_keys=("image", "label"),
            homepage=PUBLIC_PAGE,
        )

    def _split_generators(self, dl_manager):
        folder = epath.Path(dl_manager.manual_dir)
        # Every file is read and checked before tfds writes anything.
        arrays = {split: read_split(folder, prefix) for split, prefix in SPLITS.items()}
        return {split: self._generate_examples(*arrays[split]) for split in SPLITS}

    def _generate_examples(self, images, labels):
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            yield index, {"image": image[..., None], "label": int(label)}
