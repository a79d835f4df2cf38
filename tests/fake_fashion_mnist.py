"""Small Fashion-MNIST IDX files written by the tests, in the four standard files' format."""

import gzip

import numpy as np

from train import fashion_mnist


def idx(magic, array):
    header = np.array([magic, *array.shape], dtype=">i4").tobytes()
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_split(folder, prefix, images, labels, *, gzipped):
    suffix = ".gz" if gzipped else ""
    contents = {
        f"{prefix}-images-idx3-ubyte": idx(fashion_mnist.IMAGES_MAGIC, images),
        f"{prefix}-labels-idx1-ubyte": idx(fashion_mnist.LABELS_MAGIC, labels),
    }
    for name, data in contents.items():
        (folder / f"{name}{suffix}").write_bytes(gzip.compress(data) if gzipped else data)


def write_files(folder, train_count=20, test_count=10):
    """Train files gzipped, test files plain; labels cycle through the 10 classes."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, count, gzipped in (("train", train_count, True), ("t10k", test_count, False)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = (np.arange(count) % 10).astype(np.uint8)
        write_split(folder, prefix, images, labels, gzipped=gzipped)
        arrays[prefix] = images, labels
    return arrays
