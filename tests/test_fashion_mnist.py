"""Fashion-MNIST: the IDX reader and builder on small files the tests write, and the recipe.

The real files (Debian's dataset-fashion-mnist) are not needed: every test writes
its own IDX files, gzipped and plain.
"""

import gzip

import numpy as np
import pytest
from etils import epath

from tests.fake_fashion_mnist import idx as _idx
from tests.fake_fashion_mnist import write_files as _write_files
from tests.fake_fashion_mnist import write_split as _write_split
from train import fashion_mnist, input_pipeline, train
from train.configs import default, fashion_mnist_resnet18
from train.configs.variants import VARIANTS as NORM_VARIANTS


def _rows(images, labels):
    # tfds stores examples in an order of its own: compare as multisets.
    return sorted(i.tobytes() + bytes([int(lab)]) for i, lab in zip(images, labels, strict=True))


def test_read_idx_reads_gzipped_and_plain_files(tmp_path):
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28).astype(np.uint8)
    plain, zipped = tmp_path / "plain", tmp_path / "zipped"
    plain.write_bytes(_idx(2051, images))
    zipped.write_bytes(gzip.compress(_idx(2051, images)))
    for path in (plain, zipped):
        np.testing.assert_array_equal(fashion_mnist.read_idx(epath.Path(path), 2051), images)
    labels = tmp_path / "labels"
    labels.write_bytes(_idx(2049, np.array([3, 9], np.uint8)))
    np.testing.assert_array_equal(fashion_mnist.read_idx(epath.Path(labels), 2049), [3, 9])


@pytest.mark.parametrize(
    ("data", "magic", "message"),
    [
        (_idx(2049, np.zeros(3, np.uint8)), 2051, "magic number 2049, expected 2051"),
        (_idx(2051, np.zeros((2, 28, 28), np.uint8))[:-5], 2051, r"2 x 28 x 28 = 1568 .*truncated"),
        (_idx(2049, np.zeros(3, np.uint8)) + b"\0", 2049, r"= 3 bytes of labels, but 4 .*extra"),
        (b"\0\0\x08", 2049, "shorter than the 8-byte header"),
        (b"\x1f\x8bnot gzip", 2049, "not a valid gzip file"),
    ],
    ids=["magic", "truncated", "extra", "header", "gzip"],
)
def test_read_idx_refuses_bad_files_naming_them(tmp_path, data, magic, message):
    path = tmp_path / "bad-idx-ubyte"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=message) as error:
        fashion_mnist.read_idx(epath.Path(path), magic)
    assert str(path) in str(error.value)


def test_read_split_checks_counts_shapes_and_labels(tmp_path):
    images = np.zeros((3, 28, 28), np.uint8)
    _write_split(tmp_path, "train", images, np.zeros(2, np.uint8), gzipped=False)
    with pytest.raises(ValueError, match=r"holds 3 images but .*train-labels-idx1-ubyte holds 2"):
        fashion_mnist.read_split(epath.Path(tmp_path), "train")
    _write_split(tmp_path, "train", images, np.array([0, 1, 10], np.uint8), gzipped=False)
    with pytest.raises(ValueError, match=r"label 10, expected 0\.\.9"):
        fashion_mnist.read_split(epath.Path(tmp_path), "train")
    _write_split(tmp_path, "t10k", np.zeros((1, 8, 8)), np.zeros(1), gzipped=True)
    with pytest.raises(ValueError, match="images of 8x8, expected 28x28"):
        fashion_mnist.read_split(epath.Path(tmp_path), "t10k")


def _config(tmp_path, manual):
    config = default.get_config()
    config.dataset = "fashion_mnist"
    config.data_dir, config.manual_dir = str(tmp_path / "tfds"), str(manual)
    config.batch_size, config.eval_batch_size = 4, 4
    return config


def test_fashion_mnist_builds_from_the_manual_folder_and_feeds_the_pipeline(tmp_path):
    arrays = _write_files(tmp_path / "manual")
    config = _config(tmp_path, tmp_path / "manual")
    config.pad_to = 32
    spec = input_pipeline.dataset_spec(config)
    assert (spec.num_classes, spec.native_shape) == (10, (28, 28, 1))
    assert spec.mean == input_pipeline.FASHION_MNIST_MEAN
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = input_pipeline.load_arrays(config, split)
        assert _rows(images[..., 0], labels) == _rows(*arrays[prefix])
    assert input_pipeline.steps_per_epoch(config) == 5
    batch = next(input_pipeline.train_batches(config))
    assert batch["image"].shape == (4, 32, 32, 1)
    (first, *_) = list(input_pipeline.eval_batches(config))
    # pad_to: a 2-pixel black border around the normalized 28x28 image.
    black = (0 - spec.mean[0]) / spec.std[0]
    np.testing.assert_allclose(first["image"][:, :2], black, rtol=1e-6)
    np.testing.assert_allclose(first["image"][:, :, -2:], black, rtol=1e-6)
    test_images, _ = input_pipeline.load_arrays(config, "test")
    expected = (test_images[:4].astype(np.float32) - spec.mean[0]) / spec.std[0]
    np.testing.assert_allclose(first["image"][:, 2:30, 2:30], expected, atol=1e-5)


@pytest.mark.parametrize("folder", ["missing", "without_the_files"])
def test_fashion_mnist_without_the_files_says_what_and_where(tmp_path, folder):
    manual = tmp_path / folder
    if folder == "without_the_files":
        manual.mkdir()
        (manual / "README").write_text("not the data")
    with pytest.raises(FileNotFoundError) as error:
        input_pipeline.builder(_config(tmp_path, manual))
    message = str(error.value)
    for needed in (*fashion_mnist.FILES, str(manual), "dataset-fashion-mnist", "zalandoresearch"):
        assert needed in message


def test_class_subset_is_stratified_and_fixed_by_the_seed(tmp_path):
    _write_files(tmp_path / "manual", train_count=100)
    config = _config(tmp_path, tmp_path / "manual")
    config.validation_fraction, config.train_examples_per_class = 0.5, 2
    images, labels = input_pipeline.load_train_arrays(config)
    held_in, held_in_labels = input_pipeline.load_arrays(config, "train[:50%]")
    assert np.bincount(labels).tolist() == [2] * 10 and input_pipeline.steps_per_epoch(config) == 5
    assert set(_rows(images[..., 0], labels)) <= set(_rows(held_in[..., 0], held_in_labels))
    again = input_pipeline.class_subset(held_in_labels, 2, config.seed)
    np.testing.assert_array_equal(images, held_in[again])
    other = input_pipeline.class_subset(np.repeat(np.arange(10), 50), 2, seed=1)
    assert not np.array_equal(
        other, input_pipeline.class_subset(np.repeat(np.arange(10), 50), 2, 0)
    )
    with pytest.raises(ValueError, match="class 0 has only 1 training examples"):
        input_pipeline.class_subset(np.array([0, 1, 1]), 2, seed=0)


def test_fashion_mnist_reads_debians_folder_by_default():
    config = default.get_config()
    config.dataset = "fashion_mnist"
    spec = input_pipeline.dataset_spec(config)
    assert spec.manual_dir == fashion_mnist.DEBIAN_FOLDER == "/usr/share/datasets/fashion-mnist"
    assert spec.tfds_name == "fashion_mnist_idx"  # Not tfds's own fashion_mnist, which downloads.


@pytest.mark.parametrize("variant", sorted(fashion_mnist_resnet18.VARIANTS))
def test_every_recipe_variant_builds_its_norm_placement(variant):
    config = fashion_mnist_resnet18.get_config(variant)
    norm, options, model_options = NORM_VARIANTS[fashion_mnist_resnet18.VARIANTS[variant]]
    assert config.norm == norm and config.model == "cifar_resnet18"
    for key, value in options.items():
        assert config.sbn_options[key] == value
    model = train.create_model(config)
    kind, modules = model.placement()
    kinds = {"sbn34": "bn+sbn", "2bn34": "2bn", "rescale34": "bn+sbn"}
    assert kind == kinds.get(variant, "bn")
    assert modules == ((3, 4) if variant in kinds else None)
    assert tuple(model.shrink_init_modules) == ((3, 4) if variant == "shrunk_init34" else ())
    assert model.logit_scale == (0.25 if variant == "temperature" else 1.0)
    assert dict(model_options) == {
        "shrunk_init34": {"shrink_init_modules": (3, 4)},
        "temperature": {"logit_scale": 0.25},
    }.get(variant, {})
    assert model.num_classes == 10 and model.base_width == 64
    # The paper's CIFAR protocol, with the 28x28 images padded to 32x32.
    assert (config.pad_to, config.image_size, config.crop_padding) == (32, None, 4)
    assert config.random_flip and config.validation_fraction == 0.1
    assert (config.momentum, config.nesterov, config.learning_rate) == (0.9, False, 0.1)
    assert config.lr_boundaries_epochs == (90, 136) and config.weight_decay_on == "all"
    # Validation and checkpoints once per epoch (54_000 // 128 steps, by the loop's count).
    assert config.eval_every_epochs == config.checkpoint_every_epochs == 1.0
    assert config.train_examples_per_class is None
    train.validate_config(config)


def test_recipe_epochs_argument_keeps_the_decays_at_the_same_fractions():
    config = fashion_mnist_resnet18.get_config("bn,600,15")
    assert (config.num_epochs, config.lr_boundaries_epochs) == (15.0, (7, 10))
    assert config.train_examples_per_class == 600 and config.eval_every_epochs == 1.0
    config = fashion_mnist_resnet18.get_config("sbn34,,40")
    assert (config.num_epochs, config.lr_boundaries_epochs) == (40.0, (18, 27))
    assert config.train_examples_per_class is None


def test_recipe_takes_images_per_class_and_refuses_bad_arguments():
    config = fashion_mnist_resnet18.get_config("rescale34,100")
    assert config.train_examples_per_class == 100 and config.eval_every_epochs == 1.0
    assert config.sbn_options.divide_by == "constant" and not config.sbn_options.use_mean
    assert fashion_mnist_resnet18.get_config().norm == "sbn34"
    with pytest.raises(ValueError, match="variants are"):
        fashion_mnist_resnet18.get_config("sbn5")
    with pytest.raises(ValueError, match="positive integer"):
        fashion_mnist_resnet18.get_config("bn,0")
    with pytest.raises(ValueError, match="epochs E must be a positive integer, got 'x'"):
        fashion_mnist_resnet18.get_config("bn,10,x")
    with pytest.raises(ValueError, match=r"expected VARIANT\[,N\[,E\]\], got 'bn,1,2,3'"):
        fashion_mnist_resnet18.get_config("bn,1,2,3")
