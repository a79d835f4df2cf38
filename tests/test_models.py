"""sbn_jax.models: published parameter counts, the norm switch, sbn_stages and errors."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbn_jax import models


def _abstract_variables(model, size):
    return jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False)
    )


def _num_params(variables):
    return sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))


# Published counts: torchvision's ResNets (1000 classes), He et al. (2016) Table 6 for the CIFAR
# ResNets (0.27M, 0.46M, 0.66M, 0.85M, 1.7M), Zagoruyko & Komodakis (2016) for WRN-28-10 (36.5M).
@pytest.mark.parametrize(
    "name, num_classes, size, expected, tolerance",
    [
        ("resnet18", 1000, 224, 11_689_512, 0),
        ("resnet34", 1000, 224, 21_797_672, 0),
        ("resnet50", 1000, 224, 25_557_032, 0),
        ("resnet101", 1000, 224, 44_549_160, 0),
        ("resnet152", 1000, 224, 60_192_808, 0),
        ("cifar_resnet20", 10, 32, 0.27e6, 0.005e6),
        ("cifar_resnet32", 10, 32, 0.46e6, 0.005e6),
        ("cifar_resnet44", 10, 32, 0.66e6, 0.005e6),
        ("cifar_resnet56", 10, 32, 0.85e6, 0.005e6),
        ("cifar_resnet110", 10, 32, 1.7e6, 0.05e6),
        ("wrn28_10", 10, 32, 36.5e6, 0.05e6),
        ("vgg16", 10, 32, 14.72e6, 0.01e6),
    ],
)
def test_parameter_counts_equal_published(name, num_classes, size, expected, tolerance):
    model = models.create_model(name, num_classes=num_classes, norm="bn")
    assert abs(_num_params(_abstract_variables(model, size)) - expected) <= tolerance


def _norm_layers(variables):
    """Names of the norm submodules, from the statistics they keep."""
    flat = flax.traverse_util.flatten_dict(variables.get("batch_stats", {}))
    return {"/".join(path[:-1]) for path in flat if path[-1] in ("var", "mean")}


LAYER_SUFFIXES = {
    "none": (),
    "bn": ("/BatchNorm",),
    "sbn": ("/SpectralBatchNorm",),
    "bn+sbn": (
        "/SpatialSpectralBatchNorm/BatchNorm_0",
        "/SpatialSpectralBatchNorm/SpectralBatchNorm_0",
    ),
}


@pytest.mark.parametrize("norm", models.NORMS)
def test_norm_switch_builds_the_named_layers(norm):
    model = models.create_model("cifar_resnet20", num_classes=10, norm=norm)
    variables = _abstract_variables(model, 8)
    layers = _norm_layers(variables)
    # ResNet-20: the stem and 9 blocks x 2 convolutions, 19 norms, each of the named kind(s).
    for suffix in LAYER_SUFFIXES[norm]:
        assert len([layer for layer in layers if layer.endswith(suffix)]) == 19
    assert len(layers) == 19 * len(LAYER_SUFFIXES[norm])
    if norm == "none":
        assert "batch_stats" not in variables
        # Without norms the convolutions carry biases.
        assert "bias" in variables["params"]["stem"]
    else:
        assert "bias" not in variables["params"]["stem"]


def test_sbn_stages_restrict_sbn_and_use_batchnorm_elsewhere():
    model = models.create_model("cifar_resnet20", num_classes=10, norm="bn+sbn", sbn_stages=(0,))
    layers = _norm_layers(_abstract_variables(model, 8))
    spectral = {layer for layer in layers if "SpectralBatchNorm_0" in layer}
    # Stage 0: the stem and blocks 0-2 (two norms each): 7 SBN layers; stages 1 and 2 plain BN.
    assert len(spectral) == 7
    assert all(
        layer.startswith(("stem_norm", "BasicBlock_0/", "BasicBlock_1/", "BasicBlock_2/"))
        for layer in spectral
    )
    plain = {layer for layer in layers if layer.endswith("/BatchNorm")}
    assert len(plain) == 12


def test_stage_norm_rules():
    assert models.stage_norm("bn+sbn", None, 2) == "bn+sbn"
    assert models.stage_norm("bn+sbn", (0,), 2) == "bn"
    assert models.stage_norm("sbn", (1,), 1) == "sbn"
    assert models.stage_norm("bn", (0,), 0) == "bn"


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "cifar_resnet20", "wrn28_10", "vgg11"])
def test_every_model_runs_train_and_eval_and_updates_batch_stats(name):
    kwargs = {"width": 1} if name == "wrn28_10" else {}
    model = models.create_model(name, num_classes=7, norm="bn+sbn", **kwargs)
    x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
    variables = model.init(jax.random.key(0), x, train=False)
    logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert logits.shape == (4, 7) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))
    changed = jax.tree_util.tree_map_with_path(
        lambda path, a, b: bool(jnp.any(a != b)) or path[-1].key == "mean_imag",
        variables["batch_stats"],
        updates["batch_stats"],
    )
    # mean_imag may stay 0: on a 1x1 map (the last stage here) the spectrum is real.
    assert all(jax.tree.leaves(changed)), "every running mean and variance moves in a step"
    eval_logits = model.apply(variables, x, train=False)
    assert eval_logits.shape == (4, 7)


def test_bfloat16_computation_keeps_float32_params_and_logits():
    model = models.create_model("cifar_resnet20", num_classes=10, norm="bn+sbn", dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
    variables = model.init(jax.random.key(0), x, train=False)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables["params"]))
    logits, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert logits.dtype == jnp.float32 and np.all(np.isfinite(logits))


def test_zero_init_residual_makes_blocks_identity_at_init():
    """With zero-initialized last scales every basic block starts as relu(x + 0) = x for x >= 0."""
    model = models.create_model(
        "cifar_resnet20", num_classes=10, norm="bn+sbn", zero_init_residual=True
    )
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
    variables = model.init(jax.random.key(0), x, train=False)
    _, state = model.apply(
        variables,
        x,
        train=True,
        mutable=["batch_stats", "intermediates"],
        capture_intermediates=lambda m, name: isinstance(m, models.BasicBlock),
    )
    first, second = (state["intermediates"][f"BasicBlock_{i}"]["__call__"][0] for i in (0, 1))
    np.testing.assert_allclose(second, first, atol=1e-6)
    last = variables["params"]["BasicBlock_0"]["Norm_1"]["SpatialSpectralBatchNorm"]
    # SBN's scale is zero; the BatchNorm before it has no scale (SBN makes it redundant).
    assert np.all(last["SpectralBatchNorm_0"]["scale"] == 0)
    assert set(last["BatchNorm_0"]) == {"bias"}


def test_per_frequency_options_pass_through():
    model = models.create_model(
        "cifar_resnet20", num_classes=10, norm="sbn", sbn_options={"per_frequency": True}
    )
    variables = _abstract_variables(model, 8)
    stats = variables["batch_stats"]["stem_norm"]["SpectralBatchNorm"]
    assert stats["var"].shape == (8, 5, 16)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "resnet51"}, "model must be one of"),
        ({"norm": "layernorm"}, "norm must be one of"),
        ({"num_classes": 0}, "num_classes must be a positive integer"),
        ({"sbn_options": {"momentum": 0.5}}, "unknown keys"),
        ({"activation": "swish"}, "activation must be one of"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    arguments = {"name": "cifar_resnet20", "num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        models.create_model(**arguments)


def test_bad_stages_and_inputs_raise_clear_errors():
    model = models.create_model("cifar_resnet20", num_classes=10, norm="sbn", sbn_stages=(3,))
    with pytest.raises(
        ValueError, match=r"sbn_stages of CifarResNet must be stage indices in \[0, 3\)"
    ):
        _abstract_variables(model, 8)
    model = models.create_model("cifar_resnet20", num_classes=10)
    with pytest.raises(ValueError, match=r"expects NHWC images"):
        model.init(jax.random.key(0), jnp.zeros((8, 8, 3)), train=False)


@pytest.mark.parametrize("activation", ["relu", "gelu", "silu"])
def test_activation_follows_every_norm_and_residual_sum(activation):
    model = models.create_model("cifar_resnet20", num_classes=10, norm="bn", activation=activation)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 8, 8, 1)), jnp.float32)
    variables = model.init(jax.random.key(0), x, train=False)
    _, state = model.apply(
        variables,
        x,
        train=False,
        capture_intermediates=lambda m, name: isinstance(m, models.BasicBlock),
        mutable=["intermediates"],
    )
    out = state["intermediates"]["BasicBlock_0"]["__call__"][0]
    # ReLU outputs are never negative; GELU and SiLU outputs are, somewhere.
    assert bool(jnp.all(out >= 0)) == (activation == "relu")
