"""Any tfds data set by name (``tfds:NAME``): its description, statistics, errors, one run.

tfds's MNIST stands in, mocked by ``tfds.testing.mock_data`` (nothing is downloaded);
the statistics cache and the run through the loop use the local ``sklearn_digits``
builder as a tfds data set, since the mock also intercepts file writes.
"""

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tests.test_train import tiny_config
from train import any_tfds, input_pipeline, train
from train.configs import default


def _config(tmp_path, dataset="tfds:mnist"):
    config = default.get_config()
    config.dataset, config.data_dir = dataset, str(tmp_path / "tfds")
    config.batch_size, config.eval_batch_size = 8, 8
    return config


def _check_statistics(spec, images):
    pixels = images.astype(np.float64)
    np.testing.assert_allclose(spec.mean, [pixels.mean()], rtol=1e-9)
    np.testing.assert_allclose(spec.std, [pixels.std()], rtol=1e-9)


def test_tfds_name_reads_classes_shape_and_statistics(tmp_path):
    with tfds.testing.mock_data(num_examples=24):
        for dataset in ("tfds:mnist", "mnist"):  # "mnist": a tfds name the registry lacks.
            config = _config(tmp_path, dataset)
            spec = input_pipeline.dataset_spec(config)
            images, _ = input_pipeline.load_arrays(config, "train")
            assert input_pipeline.steps_per_epoch(config) == 3
            batch = next(input_pipeline.train_batches(config))
            assert (spec.num_classes, spec.native_shape) == (10, (28, 28, 1))
            assert (spec.tfds_name, spec.train_split, spec.eval_split) == ("mnist", "train", "test")
            _check_statistics(spec, images)
            assert batch["image"].shape == (8, 28, 28, 1)


@pytest.fixture(scope="module")
def digits_as_tfds(tmp_path_factory):
    """``tfds:sklearn_digits`` prepared, its statistics computed and cached: (config, spec)."""
    config = _config(tmp_path_factory.mktemp("digits"), "tfds:sklearn_digits")
    return config, input_pipeline.dataset_spec(config)


def test_statistics_are_cached_beside_the_prepared_data(digits_as_tfds):
    config, spec = digits_as_tfds
    images, _ = input_pipeline.load_arrays(config, "train")
    _check_statistics(spec, images)
    path = any_tfds.statistics_file(input_pipeline.builder(config, spec=spec), "train")
    record = json.loads(path.read_text())
    assert record["mean"] == list(spec.mean) and record["split"] == "train"
    record["mean"] = [1.5]
    path.write_text(json.dumps(record))  # Read back, not computed again.
    assert input_pipeline.dataset_spec(config).mean == (1.5,)
    path.write_text(json.dumps({**record, "mean": list(spec.mean)}))


def test_tfds_splits_and_statistics_come_from_the_config(tmp_path):
    config = _config(tmp_path)
    config.tfds_train_split, config.tfds_eval_split = "test", "train"
    config.image_mean, config.image_std = (33.0,), (78.0,)
    spec = input_pipeline.dataset_spec(config)  # Given statistics: no data is read.
    assert (spec.train_split, spec.eval_split, spec.mean, spec.std) == (
        "test",
        "train",
        (33.0,),
        (78.0,),
    )
    config.image_std = (1.0, 2.0)
    with pytest.raises(ValueError, match=r"1 value\(s\) each"):
        input_pipeline.dataset_spec(config)


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ("tfds:no_such_data", "unknown dataset 'tfds:no_such_data'.*has no data set"),
        ("no_such_data", "unknown dataset 'no_such_data': not one of"),
        ("tfds:imdb_reviews", "no 'image' feature.*only image classification"),
    ],
)
def test_bad_tfds_data_sets_fail_fast(tmp_path, dataset, message):
    with pytest.raises(ValueError, match=message):
        train.validate_config(_config(tmp_path, dataset))


def test_padding_settings_are_checked(tmp_path):
    config = _config(tmp_path)
    config.image_mean, config.image_std = (0.0,), (1.0,)
    config.pad_to, config.image_size = 32, 32
    with pytest.raises(ValueError, match="not both"):
        input_pipeline.check_dataset(config)
    config.pad_to, config.image_size = 24, None
    with pytest.raises(ValueError, match="pad_to=24 is smaller than the 28x28 images"):
        input_pipeline.image_shape(config)
    config.train_examples_per_class = 0
    with pytest.raises(ValueError, match="train_examples_per_class must be a positive integer"):
        input_pipeline.check_dataset(config)


@pytest.mark.slow
def test_a_tfds_data_set_trains_through_the_loop(digits_as_tfds, tmp_path):
    tfds_config, spec = digits_as_tfds
    # tests/test_train.py's one-device run on the same images, so that `make test` compiles its
    # programs once (the suite shares a compilation cache); alone, the compilation dominates.
    config = tiny_config(tfds_config.data_dir, parallelism="jit", num_devices=1)
    config.dataset = tfds_config.dataset
    train.train_and_evaluate(config, str(tmp_path / "run"))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (
        summary["dataset"] == "tfds:sklearn_digits" and summary["steps"] == config.num_train_steps
    )
    assert summary["image_mean"] == list(spec.mean) and summary["image_std"] == list(spec.std)
    assert 0.0 <= summary["test_accuracy"] <= 1.0
