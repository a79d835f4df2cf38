"""Input pipelines: mocked ImageNet and CIFAR through the real code; the local digits dataset."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from train import input_pipeline
from train.configs import cifar10_resnet56, default, imagenet_resnet50


def _normalized_range(spec):
    low = min((0 - m) / s for m, s in zip(spec.mean, spec.std, strict=True))
    high = max((255 - m) / s for m, s in zip(spec.mean, spec.std, strict=True))
    return low - 1e-3, high + 1e-3


def _check_batch(batch, batch_size, shape, num_classes, value_range, *, mask):
    assert batch["image"].shape == (batch_size, *shape)
    assert batch["image"].dtype == np.float32
    assert batch["label"].shape == (batch_size,)
    assert batch["label"].dtype == np.int32
    assert batch["label"].min() >= 0 and batch["label"].max() < num_classes
    assert value_range[0] <= batch["image"].min() and batch["image"].max() <= value_range[1]
    assert batch["image"].std() > 0.1
    assert ("mask" in batch) == mask


def test_imagenet_pipeline_on_mock_data(tmp_path):
    config = imagenet_resnet50.get_config()
    config.data_dir = str(tmp_path)
    config.image_size = 64
    config.batch_size = config.eval_batch_size = 4
    spec = input_pipeline.dataset_spec(config)
    with tfds.testing.mock_data(num_examples=10):
        assert input_pipeline.steps_per_epoch(config) == 2
        assert input_pipeline.eval_steps(config) == 3
        train = input_pipeline.train_batches(config)
        batches = [next(train) for _ in range(3)]
        evals = list(input_pipeline.eval_batches(config))
    for batch in batches:
        _check_batch(batch, 4, (64, 64, 3), 1000, _normalized_range(spec), mask=False)
    assert len(evals) == 3
    for batch in evals:
        _check_batch(batch, 4, (64, 64, 3), 1000, _normalized_range(spec), mask=True)
    np.testing.assert_array_equal(np.concatenate([b["mask"] for b in evals]), [1] * 10 + [0] * 2)


def test_cifar_pipeline_on_mock_data(tmp_path):
    config = cifar10_resnet56.get_config()
    config.data_dir = str(tmp_path)
    config.batch_size = 8
    config.eval_batch_size = 6
    spec = input_pipeline.dataset_spec(config)
    with tfds.testing.mock_data(num_examples=20):
        assert input_pipeline.steps_per_epoch(config) == 2
        train = input_pipeline.train_batches(config, start_step=1)
        batches = [next(train) for _ in range(3)]
        evals = list(input_pipeline.eval_batches(config))
        images, _ = input_pipeline.load_arrays(config, "train")
    for batch in batches:
        _check_batch(batch, 8, (32, 32, 3), 10, _normalized_range(spec), mask=False)
    assert len(evals) == 4
    for batch in evals:
        _check_batch(batch, 6, (32, 32, 3), 10, _normalized_range(spec), mask=True)
    # Eval images are the normalized originals; training images are shifted and flipped copies.
    normalized = (images.astype(np.float32) - np.array(spec.mean)) / np.array(spec.std)
    np.testing.assert_allclose(evals[0]["image"], normalized[:6], atol=1e-5)


@pytest.fixture(scope="module")
def digits_config(tmp_path_factory):
    config = default.get_config()
    config.data_dir = str(tmp_path_factory.mktemp("tfds"))
    config.batch_size = 64
    return config


def test_digits_dataset_builds_locally(digits_config):
    train_images, train_labels = input_pipeline.load_arrays(digits_config, "train")
    test_images, test_labels = input_pipeline.load_arrays(digits_config, "test")
    assert train_images.shape == (1437, 8, 8, 1) and test_images.shape == (360, 8, 8, 1)
    assert train_images.dtype == np.uint8 and train_images.max() == 16
    assert set(np.unique(train_labels)) == set(range(10))
    # The split is fixed: rebuilding gives the same test set.
    from sklearn.datasets import load_digits

    digits = load_digits()
    test = np.sort(np.random.default_rng(input_pipeline.DIGITS_SPLIT_SEED).permutation(1797)[:360])

    # tfds stores examples in an order of its own (a hash of their keys): compare as multisets.
    def rows(images, labels):
        return sorted(
            image.astype(np.uint8).tobytes() + bytes([label])
            for image, label in zip(images, labels, strict=True)
        )

    assert rows(test_images[..., 0], test_labels) == rows(digits.images[test], digits.target[test])


def test_train_batches_are_a_function_of_seed_and_step(digits_config):
    steps = input_pipeline.steps_per_epoch(digits_config)
    assert steps == 1437 // 64
    stream = input_pipeline.train_batches(digits_config)
    batches = [next(stream) for _ in range(steps + 2)]
    # Restarting at any step gives what the uninterrupted stream gives, across an epoch boundary.
    restarted = input_pipeline.train_batches(digits_config, start_step=steps - 1)
    for expected in batches[steps - 1 :]:
        got = next(restarted)
        np.testing.assert_array_equal(got["image"], expected["image"])
        np.testing.assert_array_equal(got["label"], expected["label"])
    # Two processes each get half of every global batch.
    halves = [
        next(input_pipeline.train_batches(digits_config, start_step=3, sharding=sharding))
        for sharding in (input_pipeline.Sharding(0, 2), input_pipeline.Sharding(1, 2))
    ]
    np.testing.assert_array_equal(np.concatenate([h["image"] for h in halves]), batches[3]["image"])
    # Epochs are reshuffled; augmentation shifts digits by at most one pixel.
    assert not np.array_equal(batches[0]["label"], batches[steps]["label"])
    assert batches[0]["image"].shape == (64, 8, 8, 1)


def test_digits_upsampled(digits_config):
    config = digits_config.copy_and_resolve_references()
    config.image_size = 16
    batch = next(input_pipeline.train_batches(config))
    assert batch["image"].shape == (64, 16, 16, 1)
    evals = list(input_pipeline.eval_batches(config))
    assert sum(float(b["mask"].sum()) for b in evals) == 360


def test_validation_fraction_holds_out_the_end_of_the_training_split(tmp_path):
    config = default.get_config()
    config.data_dir = str(tmp_path)
    config.validation_fraction = 0.1
    config.batch_size, config.eval_batch_size = 64, 48
    assert input_pipeline.train_split(config) == "train[:90%]"
    assert input_pipeline.eval_split(config, "validation") == "train[90%:]"
    assert input_pipeline.eval_split(config) == "test"
    train_images, _ = input_pipeline.load_arrays(config, "train[:90%]")
    held_out, _ = input_pipeline.load_arrays(config, "train[90%:]")
    everything, _ = input_pipeline.load_arrays(config, "train")
    assert len(train_images) + len(held_out) == len(everything) == 1437
    assert abs(len(held_out) - 144) <= 1
    np.testing.assert_array_equal(np.concatenate([train_images, held_out]), everything)
    assert input_pipeline.steps_per_epoch(config) == len(train_images) // 64
    batches = list(input_pipeline.eval_batches(config, which="validation"))
    assert sum(float(b["mask"].sum()) for b in batches) == len(held_out)
    with pytest.raises(ValueError, match="whole percentage"):
        config.validation_fraction = 0.125
        input_pipeline.train_split(config)


def test_train_examples_keeps_the_first_examples_of_the_training_split(tmp_path):
    config = default.get_config()
    config.data_dir = str(tmp_path)
    config.batch_size = 32
    config.train_examples = 96
    assert input_pipeline.train_split(config) == "train[:96]"
    assert input_pipeline.steps_per_epoch(config) == 3
    images, _ = input_pipeline.load_arrays(config, input_pipeline.train_split(config))
    everything, _ = input_pipeline.load_arrays(config, "train")
    np.testing.assert_array_equal(images, everything[:96])
    config.train_examples = 16
    with pytest.raises(ValueError, match="train_examples must be an integer >= batch_size"):
        input_pipeline.train_split(config)
    config.train_examples, config.validation_fraction = 96, 0.1
    with pytest.raises(ValueError, match="not both"):
        input_pipeline.train_split(config)


def _write_tiny_imagenet(root, per_class=2, validation=3):
    """A tiny-imagenet-200 folder: 200 wnids, `per_class` JPEGs in 3 classes, `validation` more."""
    import tensorflow as tf

    folder = root / "tiny-imagenet-200"
    wnids = [f"n{index:08d}" for index in range(200)]
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    rng = np.random.default_rng(0)

    def jpeg(path):
        pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(tf.io.encode_jpeg(pixels).numpy())

    for wnid in wnids[:3]:  # Classes without images are fine; three have some.
        for index in range(per_class):
            jpeg(folder / "train" / wnid / "images" / f"{wnid}_{index}.JPEG")
    lines = []
    for index in range(validation):
        jpeg(folder / "val" / "images" / f"val_{index}.JPEG")
        lines.append(f"val_{index}.JPEG\t{wnids[index + 1]}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def test_tiny_imagenet_builds_from_the_manual_folder_and_feeds_the_imagenet_pipeline(tmp_path):
    _write_tiny_imagenet(tmp_path / "manual")
    config = default.get_config()
    config.dataset, config.image_size = "tiny_imagenet", 32
    config.data_dir, config.manual_dir = str(tmp_path / "tfds"), str(tmp_path / "manual")
    config.batch_size, config.eval_batch_size = 2, 2
    spec = input_pipeline.dataset_spec(config)
    assert spec.num_classes == 200
    assert input_pipeline.num_examples(config, "train") == 6
    assert input_pipeline.steps_per_epoch(config) == 3
    batches = input_pipeline.train_batches(config)
    for _ in range(4):
        _check_batch(next(batches), 2, (32, 32, 3), 3, _normalized_range(spec), mask=False)
    evals = list(input_pipeline.eval_batches(config))
    assert len(evals) == 2
    labels = np.concatenate([b["label"] for b in evals])
    masks = np.concatenate([b["mask"] for b in evals])
    np.testing.assert_array_equal(masks, [1, 1, 1, 0])
    assert sorted(labels[:3].tolist()) == [1, 2, 3]


def test_tiny_imagenet_without_the_folder_says_where_to_put_it(tmp_path):
    config = default.get_config()
    config.dataset, config.data_dir = "tiny_imagenet", str(tmp_path / "tfds")
    config.manual_dir = str(tmp_path / "nothing")
    with pytest.raises(Exception, match="tiny-imagenet-200"):
        input_pipeline.builder(config)
