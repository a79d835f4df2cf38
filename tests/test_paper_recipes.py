"""The paper's recipes (train/configs/paper): every row is one command that runs.

The loop's code is the same for every recipe; what a recipe brings is its config,
its model, its data pipeline and its schedule. So every recipe gets its config
validated, its input pipeline run on tensorflow-datasets' mock data (small
batches; ImageNet at 64x64) and its whole train and eval step traced with those
batches (``jax.eval_shape``: every shape, dtype, option and parameter tree, no
compilation). Three recipes, which between them take every path of the loop
(the CIFAR validation protocol with a basic-block ResNet, dropout in VGG's
classifier, the ImageNet-style pipeline), also run two compiled training steps
through the loop, with an evaluation after each step, so the CIFAR protocol (the
best validation step scored on test) runs too. Those runs narrow the model
(``base_width``, every layer scaled, as for the CPU proxies): no path of the loop
depends on a channel count, and the full-width models are traced here and compiled
and run in tests/test_models.py.
"""

import functools
import importlib
import json
import pathlib

import jax
import pytest
import tensorflow_datasets as tfds

from sbn_jax import models
from train import input_pipeline, train

PAPER = pathlib.Path(__file__).resolve().parents[1] / "train" / "configs" / "paper"
RECIPES = sorted(p.stem for p in PAPER.glob("*_*.py") if not p.stem.startswith("_"))


def _module(name):
    return importlib.import_module(f"train.configs.paper.{name}")


def test_one_recipe_per_row_of_tables_1_to_4():
    rows = {(name, variant) for name in RECIPES for variant in _module(name).ROWS}
    assert len(RECIPES) == 13 and len(rows) == 39
    prefixes = {name.split("_", 1)[0] for name in RECIPES}
    assert prefixes == {"cifar10", "cifar100", "tinyimagenet", "imagenet"}


@pytest.mark.parametrize("name", RECIPES)
def test_every_variant_builds_the_model_it_names(name):
    module = _module(name)
    for variant, accuracy in module.ROWS.items():
        config = module.get_config(variant)
        assert config.norm == variant and config.paper.accuracy == accuracy
        model = train.create_model(config, num_classes=10)
        kind, modules = model.placement()
        assert kind == {"bn": "bn", "2bn": "2bn", "sbn": "bn+sbn"}[variant.rstrip("0123456789")]
        assert modules == (
            None if variant == "bn" else tuple(int(d) for d in variant[-2:] if d.isdigit())
        )
        assert config.model in models.MODELS
    assert module.get_config().norm == list(module.ROWS)[-1]  # The paper's SBN row by default.
    with pytest.raises(ValueError, match="has the variants"):
        module.get_config("sbn5")


def test_recipes_follow_the_paper():
    resnet = _module("cifar10_resnet18").get_config("sbn34")
    assert (resnet.learning_rate, resnet.batch_size, resnet.momentum) == (0.1, 128, 0.9)
    assert not resnet.nesterov and not resnet.scale_learning_rate
    assert resnet.lr_boundaries_epochs == (90, 136) and resnet.lr_decay_factor == 0.1
    assert resnet.weight_decay == 1e-4 and resnet.weight_decay_on == "all"
    assert resnet.validation_fraction == 0.1 and resnet.num_epochs == 200
    vgg = _module("cifar10_vgg16_bn").get_config("sbn4")
    assert vgg.lr_boundaries_epochs == (60, 120, 160) and vgg.lr_decay_factor == 0.2
    assert vgg.weight_decay == 5e-4
    cifar100 = _module("cifar100_resnet50").get_config("bn")
    assert cifar100.lr_boundaries_epochs == (60, 120, 160) and cifar100.weight_decay == 5e-4
    tiny = _module("tinyimagenet_resnet18").get_config("sbn34")
    assert (tiny.num_epochs, tiny.batch_size, tiny.image_size) == (300, 128, 224)
    assert tiny.lr_boundaries_epochs == (75, 150, 225) and tiny.weight_decay == 1e-4
    imagenet = _module("imagenet_resnet50").get_config("sbn4")
    assert imagenet.num_epochs == 400 and imagenet.batch_size == 256
    assert imagenet.lr_boundaries_epochs == (75, 150, 225, 300, 375)
    # The step schedule: 0.1, then x0.1 after 90 epochs of 351 steps.
    schedule = train.create_learning_rate_fn(resnet, 351)
    assert float(schedule(0)) == pytest.approx(0.1)
    assert float(schedule(90 * 351 + 1)) == pytest.approx(0.01)
    assert float(schedule(136 * 351 + 1)) == pytest.approx(0.001)


# Recipes that also run the compiled loop (the others are traced; see the module docstring).
LOOP_RUNS = ("cifar10_resnet18", "cifar10_vgg16_bn", "tinyimagenet_resnet18")
# The loop runs' channels in module 1 (the recipes': 64). At full width the three runs took 46 s
# here (2-core Xeon, the tests' fast-compile flags), at 8 15 s: the steps, evaluations and
# checkpoints of 11-15M parameters, not the compiles, were most of it.
LOOP_RUN_WIDTH = 8


def _small_config(name, tmp_path):
    """The recipe with small batches, one device, and a step count the mock data can feed."""
    config = _module(name).get_config()
    config.data_dir = str(tmp_path / "tfds")
    config.batch_size = config.eval_batch_size = 8
    config.num_train_steps = 2
    config.eval_every_epochs = config.checkpoint_every_epochs = 0.0  # In steps instead:
    config.eval_every_steps = config.checkpoint_every_steps = config.log_every_steps = 1
    config.parallelism, config.num_devices = "jit", 1
    config.progress_bar = False
    config.half_precision = False
    if config.dataset in ("imagenet2012", "tiny_imagenet"):
        config.image_size = 64
    return config


def _mock_batches(config):
    """(steps per epoch, two training batches, the evaluation batches of each split used)."""
    # Mock data ignores split slicing; the 9/1 split is checked on digits in test_train_data.py.
    splits = ("test", "validation") if config.validation_fraction else ("test",)
    with tfds.testing.mock_data(num_examples=40):
        steps = input_pipeline.steps_per_epoch(config)
        stream = input_pipeline.train_batches(config)
        batches = [next(stream) for _ in range(2)]
        evals = {which: list(input_pipeline.eval_batches(config, which=which)) for which in splits}
    return steps, batches, evals


@pytest.mark.slow
@pytest.mark.parametrize("name", RECIPES)
def test_recipe_pipeline_and_steps_trace_on_mock_data(name, tmp_path):
    config = train.with_defaults(_small_config(name, tmp_path))
    train.validate_config(config)
    steps, batches, evals = _mock_batches(config)
    image_shape = input_pipeline.image_shape(config)
    assert batches[0]["image"].shape == (8, *image_shape)
    learning_rate_fn = train.create_learning_rate_fn(config, steps)
    model = train.create_model(config)
    state = jax.eval_shape(
        functools.partial(
            train.initial_state,
            config=config,
            model=model,
            image_shape=image_shape,
            learning_rate_fn=learning_rate_fn,
        ),
        jax.random.key(0),
    )
    step = functools.partial(
        train.train_step,
        learning_rate_fn=learning_rate_fn,
        label_smoothing=config.label_smoothing,
        dropout_key=jax.random.key(1),
    )
    new_state, metrics = jax.eval_shape(step, state, batches[0])
    shapes = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)  # noqa: E731
    assert shapes(new_state.params) == shapes(state.params)
    assert shapes(new_state.batch_stats) == shapes(state.batch_stats)
    assert shapes(new_state.opt_state) == shapes(state.opt_state)
    assert {k: v.shape for k, v in metrics.items()} == dict.fromkeys(
        ("loss", "accuracy", "grad_norm", "learning_rate"), ()
    )
    for which, eval_batches in evals.items():
        assert eval_batches, which
        sums = jax.eval_shape(train.eval_step, state, eval_batches[0])
        assert set(sums) == {"loss", "correct", "count"}


@pytest.mark.slow
@pytest.mark.parametrize("name", LOOP_RUNS)
def test_recipe_runs_two_steps_on_mock_data(name, tmp_path, monkeypatch):
    config = _small_config(name, tmp_path)
    config.base_width = LOOP_RUN_WIDTH
    workdir = tmp_path / "run"
    # The pipeline runs on mock data first; the loop then runs outside the mock, which would
    # also intercept orbax's file writes.
    steps, batches, evals = _mock_batches(config)
    monkeypatch.setattr(input_pipeline, "steps_per_epoch", lambda config: steps)
    monkeypatch.setattr(
        input_pipeline,
        "train_batches",
        lambda config, start_step=0, **_: iter(batches[start_step:]),
    )
    monkeypatch.setattr(
        input_pipeline, "eval_batches", lambda config, which="test", **_: iter(evals[which])
    )
    train.train_and_evaluate(config, str(workdir))
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["norm"] == config.norm
    if config.validation_fraction:
        assert summary["selected_step"] in (1, 2)
        assert 0.0 <= summary["best_validation_accuracy"] <= 1.0


def test_the_loop_runs_cover_each_kind_of_recipe():
    configs = [_module(name).get_config() for name in LOOP_RUNS]
    assert any(c.validation_fraction and c.model.startswith("cifar_resnet") for c in configs)
    assert any(c.model.startswith("vgg") for c in configs)
    assert {c.dataset for c in configs} >= {"cifar10", "tiny_imagenet"}
