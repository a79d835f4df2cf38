"""train/configs/default.py is the one list of settings (issue 23): every key the loop and the
pipeline read is there, none has a fallback in code, each data set brings its own augmentation
unless the config sets one, and cadences can be given in epochs of the loop's steps."""

import ast
import importlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.test_train import TINY_MODEL
from train import cadences, datasets, input_pipeline, preprocessing, train
from train.configs import cifar10_resnet56, default

ROOT = Path(__file__).resolve().parents[1]
# The loop and the pipeline: what reads the settings (train/configs/ writes them).
READERS = sorted((ROOT / "train").glob("*.py"))
RECIPES = sorted(
    p.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
    for p in (ROOT / "train" / "configs").rglob("*.py")
    if not p.name.startswith("_") and p.stem not in ("variants", "common")
)
CONFIG_DICT_METHODS = {"to_dict", "update", "copy_and_resolve_references", "lock", "unlock"}


def test_no_config_get_with_a_fallback_in_train():
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "train").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bconfig\.get\(", line)
    ]
    assert not found, "read settings by attribute, defaults in default.py:\n" + "\n".join(found)


def _keys_read(path: Path) -> set[str]:
    """``config.KEY`` and ``config["KEY"]`` reads in the code of ``path`` (not its docstrings)."""
    keys = set()
    for node in ast.walk(ast.parse(path.read_text())):
        target = node.value if isinstance(node, ast.Attribute | ast.Subscript) else None
        if not (isinstance(target, ast.Name) and target.id == "config"):
            continue
        if isinstance(node, ast.Attribute):
            keys.add(node.attr)
        elif isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
            keys.add(node.slice.value)
    return keys - CONFIG_DICT_METHODS


def test_every_key_the_loop_and_the_pipeline_read_is_in_default_py():
    reads = {key: path.name for path in READERS for key in _keys_read(path)}
    # The scan sees the reads: these modules read at least these keys.
    assert {"crop_padding", "shuffle_buffer_size", "fake_eval_steps", "num_classes"} <= set(reads)
    assert len(reads) > 50
    # And the keys that cadences.py reads through a name.
    reads.update({key: "cadences.py" for pair in cadences.PAIRS.values() for key in pair})
    missing = {key: where for key, where in reads.items() if key not in default.get_config()}
    assert not missing, f"read but not in train/configs/default.py: {missing}"


def _config(dataset, **settings):
    config = default.get_config()
    config.dataset = dataset
    config.update(settings)
    return config


@pytest.mark.parametrize(
    "dataset, settings, expected",
    [
        ("cifar10", {}, (4, True)),  # --config.dataset=cifar10 on the default config.
        ("cifar100", {}, (4, True)),
        ("fashion_mnist", {}, (4, True)),
        ("digits", {}, (1, False)),
        ("imagenet2012", {}, (None, True)),  # Inception-style crops, and flips.
        ("tiny_imagenet", {"random_flip": False}, (None, False)),
        # What the config sets wins, each setting on its own.
        ("cifar10", {"crop_padding": 2, "random_flip": False}, (2, False)),
        ("cifar10", {"crop_padding": 0}, (0, True)),
        ("digits", {"random_flip": True}, (1, True)),
        ("digits", {"crop_padding": 4}, (4, False)),
    ],
)
def test_each_data_set_has_its_augmentation_unless_the_config_sets_one(dataset, settings, expected):
    config = _config(dataset, **settings)
    assert datasets.augmentation(config, input_pipeline.dataset_spec(config)) == expected
    datasets.check_dataset(config)


def test_a_tfds_data_set_keeps_one_pixel_and_no_flip():
    # Given statistics: only the builder's description is read (no download).
    config = _config("tfds:mnist", image_mean=(33.0,), image_std=(78.0,))
    assert datasets.augmentation(config, input_pipeline.dataset_spec(config)) == (1, False)


def test_augmentation_a_data_set_cannot_take_fails_fast():
    with pytest.raises(ValueError, match="crop_padding applies to array images"):
        datasets.check_dataset(_config("imagenet2012", crop_padding=4))
    with pytest.raises(ValueError, match="crop_padding must be >= 0"):
        datasets.check_dataset(_config("cifar10", crop_padding=-1))
    with pytest.raises(ValueError, match="num_classes applies to dataset='fake' only"):
        datasets.check_dataset(_config("cifar10", num_classes=7))


def _shifts_and_flips(config, image, count=40):
    """The (dy, dx, flipped) of ``count`` augmented copies of ``image``, found by matching
    every translation by up to 6 pixels (zero padding) with and without a flip."""
    spec = input_pipeline.dataset_spec(config)
    shape = input_pipeline.image_shape(config, spec=spec)
    preprocess = preprocessing.preprocessor(config, spec, shape, train=True)
    height, width, _ = image.shape
    padded = np.pad(image.astype(np.float32), [(6, 6), (6, 6), (0, 0)])
    found = []
    for index in range(count):
        seeds = tf.random.experimental.stateless_split(tf.constant([3, index], tf.int64), 2)
        out = preprocess(tf.constant(image), seeds).numpy() * spec.std + np.array(spec.mean)
        matches = [
            (dy, dx, flip)
            for dy in range(-6, 7)
            for dx in range(-6, 7)
            for flip in (False, True)
            if np.allclose(
                (lambda c: c[:, ::-1] if flip else c)(
                    padded[6 + dy : 6 + dy + height, 6 + dx : 6 + dx + width]
                ),
                out,
                atol=1e-3,
            )
        ]
        assert len(matches) == 1, matches
        found.append(matches[0])
    return found


def test_cifar10_on_the_default_config_trains_with_4_pixel_crops_and_flips():
    image = np.random.default_rng(0).integers(1, 256, (32, 32, 3), dtype=np.uint8)
    found = _shifts_and_flips(_config("cifar10"), image)
    assert max(max(abs(dy), abs(dx)) for dy, dx, _ in found) == 4
    assert {flip for _, _, flip in found} == {False, True}


def test_digits_on_the_default_config_train_with_1_pixel_shifts_and_no_flips():
    image = np.random.default_rng(0).integers(1, 17, (8, 8, 1), dtype=np.uint8)
    found = _shifts_and_flips(_config("digits"), image)
    assert max(max(abs(dy), abs(dx)) for dy, dx, _ in found) == 1
    assert {flip for _, _, flip in found} == {False}


def _cadence_config(**settings):
    return train.with_defaults(_config("digits", **settings))


def test_cadences_in_epochs_become_the_loops_steps():
    assert cadences.steps(_cadence_config(), 22) == (20, 0, default.CHECKPOINT_EVERY_STEPS)
    config = _cadence_config(eval_every_epochs=5.0, checkpoint_every_epochs=0.5)
    assert cadences.steps(config, 390) == (20, 1950, 195)
    assert cadences.steps(config, 3) == (20, 15, 2)  # Rounded to the nearest step.
    assert cadences.steps(_cadence_config(checkpoint_every_epochs=0.01), 3).checkpoint == 1
    config = _cadence_config(eval_every_steps=7, checkpoint_every_steps=9)
    assert cadences.steps(config, 390) == (20, 7, 9)  # Step counts keep working.
    # cifar10_resnet56's "every 5 epochs": 5 * 390 steps at batch 128, 5 * 781 at batch 64.
    recipe = cifar10_resnet56.get_config()
    assert cadences.steps(recipe, 50_000 // 128).eval == 1950
    recipe.batch_size = 64
    assert cadences.steps(recipe, 50_000 // 64)[1:] == (3905, 3905)


@pytest.mark.parametrize(
    "settings, message",
    [
        (
            {"eval_every_steps": 100, "eval_every_epochs": 1.0},
            "eval_every_steps=100 and eval_every_epochs=1.0 both set the eval cadence",
        ),
        (
            {"checkpoint_every_steps": 100, "checkpoint_every_epochs": 2.0},
            "checkpoint_every_steps=100 and checkpoint_every_epochs=2.0 both set the checkpoint",
        ),
        ({"eval_every_epochs": -1.0}, "eval_every_epochs must be >= 0"),
        ({"checkpoint_every_steps": 0}, "checkpoint_every_steps must be positive"),
        ({"log_every_steps": 0}, "log_every_steps must be positive"),
        ({"validation_fraction": 0.1}, "needs eval_every_steps or eval_every_epochs > 0"),
    ],
)
def test_bad_cadences_fail_once_at_the_start(settings, message):
    with pytest.raises(ValueError, match=message):
        train.validate_config(_config("digits", **settings))


def test_validation_selects_by_an_epoch_cadence_too():
    train.validate_config(_config("digits", validation_fraction=0.1, eval_every_epochs=1.0))


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_gives_each_cadence_once(name):
    config = train.with_defaults(importlib.import_module(name).get_config())
    cadences.check(config)
    datasets.check_dataset(config)  # Its augmentation too.


@pytest.mark.slow
def test_the_loop_checkpoints_and_evaluates_every_epoch(tmp_path, data_dir):
    config = _config(
        "digits",
        data_dir=data_dir,
        train_examples=64,  # 2 steps per epoch at batch 32.
        batch_size=32,
        eval_batch_size=360,
        num_train_steps=6,
        warmup_epochs=0.0,
        checkpoint_every_epochs=1.0,
        eval_every_epochs=2.0,
        record_block_norms=True,
        progress_bar=False,
        num_devices=1,
        model=TINY_MODEL,
    )
    train.train_and_evaluate(config, str(tmp_path))
    assert sorted(os.listdir(tmp_path / "checkpoints"), key=int) == ["2", "4", "6"]
    # Block norms at step 0 and at every evaluation: after 2 epochs of 2 steps, and the last.
    lines = (tmp_path / "block_norms.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 4, 6]
