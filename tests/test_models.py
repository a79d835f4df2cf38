"""sbn_jax.models: published parameter counts, the norm switch, placements and errors."""

import functools
from collections.abc import Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbn_jax import family, models


def _abstract_variables(model, size):
    return jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False)
    )


def _num_params(variables):
    return sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))


# Published counts: torchvision's ResNets (1000 classes), He et al. (2016) Table 6 for the CIFAR
# ResNets (0.27M, 0.46M, 0.66M, 0.85M, 1.7M), Zagoruyko & Komodakis (2016) for WRN-28-10 (36.5M).
# The paper's CIFAR models, as their public PyTorch code counts them: ResNet-18/34/50 with a 3x3
# stem 11,173,962 / 21,282,122 / 23,520,842; VGG16-BN / VGG19-BN with the 512-512 classifier
# 15,253,578 / 20,565,834, of which 4,224 / 5,504 are convolution biases (one per channel) that
# these models leave out because a BatchNorm follows.
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
        ("cifar_resnet18", 10, 32, 11_173_962, 0),
        ("cifar_resnet34", 10, 32, 21_282_122, 0),
        ("cifar_resnet50", 10, 32, 23_520_842, 0),
        ("vgg16_bn", 10, 32, 15_253_578 - 4_224, 0),
        ("vgg19_bn", 10, 32, 20_565_834 - 5_504, 0),
    ],
)
def test_parameter_counts_equal_published(name, num_classes, size, expected, tolerance):
    model = models.create_model(name, num_classes=num_classes, norm="bn")
    assert abs(_num_params(_abstract_variables(model, size)) - expected) <= tolerance


@pytest.mark.parametrize(
    "name, published", [("cifar_resnet18", 11_173_962), ("vgg16_bn", 15_253_578 - 4_224)]
)
def test_base_width_scales_every_layer(name, published):
    """64 is the published model; at width w every layer has w/64 of its channels, so the
    parameter count (kernels quadratic in the width; vectors, head linear) drops ~16x at 16."""

    def count(**kwargs):
        model = models.create_model(name, num_classes=10, norm="bn", **kwargs)
        return _num_params(_abstract_variables(model, 32))

    assert count(base_width=64) == count() == published
    narrow = count(base_width=16)
    assert published / 17 < narrow < published / 15
    variables = _abstract_variables(models.create_model(name, num_classes=10, base_width=16), 32)
    kernels = [
        leaf.shape[-1]
        for path, leaf in flax.traverse_util.flatten_dict(variables["params"]).items()
        if path[-1] == "kernel" and leaf.ndim == 4
    ]
    assert (min(kernels), max(kernels)) == (16, 128)


def test_base_width_is_refused_where_it_means_nothing():
    with pytest.raises(ValueError, match=r"cifar_resnet20 has no field\(s\) \['base_width'\]"):
        models.create_model("cifar_resnet20", num_classes=10, base_width=16)
    with pytest.raises(ValueError, match="base_width must be a positive integer"):
        _abstract_variables(models.create_model("vgg16_bn", num_classes=10, base_width=0), 32)


def _norm_layers(variables):
    """Names of the norm submodules: those with statistics, and the group norms (with none)."""
    flat = flax.traverse_util.flatten_dict(variables.get("batch_stats", {}))
    layers = {"/".join(path[:-1]) for path in flat if path[-1] in ("var", "mean")}
    params = flax.traverse_util.flatten_dict(variables["params"])
    return layers | {"/".join(path[:-1]) for path in params if path[-2].endswith("GroupNorm")}


LAYER_SUFFIXES = {
    "none": (),
    "bn": ("/BatchNorm",),
    "sbn": ("/SpectralBatchNorm",),
    "bn+sbn": (
        "/SpatialSpectralBatchNorm/BatchNorm_0",
        "/SpatialSpectralBatchNorm/SpectralBatchNorm_0",
    ),
    "2bn": ("/BatchNorm", "/SecondBatchNorm"),
    "gn": ("/GroupNorm",),
    "sgn": ("/SpectralGroupNorm",),
    "gn+sgn": ("/GroupNorm", "/SpectralGroupNorm"),
}


@pytest.mark.parametrize("norm", models.NORMS)
def test_norm_switch_builds_the_named_layers(norm):
    # ResNet-20's 16 channels take no 32 groups (nn.GroupNorm's default).
    options = {"num_groups": 8} if norm in models.GROUP_KINDS else {}
    model = models.create_model("cifar_resnet20", num_classes=10, norm=norm, sbn_options=options)
    variables = _abstract_variables(model, 8)
    layers = _norm_layers(variables)
    # ResNet-20: the stem and 9 blocks x 2 convolutions, 19 norms, each of the named kind(s).
    for suffix in LAYER_SUFFIXES[norm]:
        assert len([layer for layer in layers if layer.endswith(suffix)]) == 19
    assert len(layers) == 19 * len(LAYER_SUFFIXES[norm])
    if norm in ("none", *models.GROUP_KINDS):
        assert "batch_stats" not in variables
    if norm == "none":
        # Without norms the convolutions carry biases.
        assert "bias" in variables["params"]["stem"]
    else:
        assert "bias" not in variables["params"]["stem"]


def test_group_kinds_take_the_group_options_and_use_groupnorm_outside_their_modules(monkeypatch):
    calls = []
    spectral_group_norm = family.spectral_group_norm

    def recording(x, **kwargs):
        calls.append(kwargs)
        return spectral_group_norm(x, **kwargs)

    monkeypatch.setattr(family, "spectral_group_norm", recording)
    options = {"num_groups": 4, "impl": "fft", "fft_norm": "ortho"}
    model = models.create_model(
        "cifar_resnet20", num_classes=10, norm="gn+sgn", modules=(3,), sbn_options=options
    )
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 3)), jnp.float32)
    layers = _norm_layers(model.init(jax.random.key(0), x, train=False))
    # Module 3 = blocks 6-8 (identity shortcuts), 6 norms, each GroupNorm then SGN; the stem and
    # modules 1-2 (13 norms) GroupNorm alone.
    spectral = {layer for layer in layers if layer.endswith("/SpectralGroupNorm")}
    assert len(spectral) == 6
    assert all(
        layer.startswith(("BasicBlock_6/", "BasicBlock_7/", "BasicBlock_8/")) for layer in spectral
    )
    assert len([layer for layer in layers if layer.endswith("/GroupNorm")]) == 19
    assert len(calls) == 6
    assert all(
        (c["num_groups"], c["group_size"], c["impl"], c["fft_norm"]) == (4, None, "fft", "ortho")
        for c in calls
    )


def test_modules_restrict_sbn_and_use_batchnorm_elsewhere():
    model = models.create_model("cifar_resnet20", num_classes=10, norm="bn+sbn", modules=(1,))
    layers = _norm_layers(_abstract_variables(model, 8))
    spectral = {layer for layer in layers if "SpectralBatchNorm_0" in layer}
    # Module 1: blocks 0-2, two norms each: 6 SBN layers; the stem and modules 2, 3 plain BN.
    assert len(spectral) == 6
    assert all(
        layer.startswith(("BasicBlock_0/", "BasicBlock_1/", "BasicBlock_2/")) for layer in spectral
    )
    plain = {layer for layer in layers if layer.endswith("/BatchNorm")}
    assert len(plain) == 13


@pytest.mark.parametrize(
    "name, norm, spectral_prefixes, count",
    [
        # ResNet-18 module 4 = BasicBlock_6, _7: 2 + 2 norms and the projection's norm.
        ("cifar_resnet18", "sbn4", ("BasicBlock_6/", "BasicBlock_7/"), 5),
        # Modules 3 and 4 = BasicBlock_4 .. _7, each with a projection in its first block.
        ("cifar_resnet18", "sbn34", tuple(f"BasicBlock_{i}/" for i in range(4, 8)), 10),
        # ResNet-50 module 4 = BottleneckBlock_13 .. _15: 3 x 3 norms and one projection norm.
        ("resnet50", "sbn4", tuple(f"BottleneckBlock_{i}/" for i in (13, 14, 15)), 10),
        # VGG16 module 4 = the three convolutions after the third pool: ConvBlock_7 .. _9.
        ("vgg16_bn", "sbn4", tuple(f"ConvBlock_{i}/" for i in (7, 8, 9)), 3),
    ],
)
def test_paper_notation_places_sbn_after_every_norm_of_the_named_modules(
    name, norm, spectral_prefixes, count
):
    model = models.create_model(name, num_classes=10, norm=norm)
    layers = _norm_layers(_abstract_variables(model, 32))
    spectral = {layer for layer in layers if layer.endswith("SpectralBatchNorm_0")}
    assert len(spectral) == count
    assert all(layer.startswith(spectral_prefixes) for layer in spectral), sorted(spectral)
    assert not any(layer.startswith("stem") for layer in spectral)
    same = models.create_model(
        name, num_classes=10, norm="bn+sbn", modules=tuple(int(d) for d in norm[3:])
    )
    assert _norm_layers(_abstract_variables(same, 32)) == layers


def test_2bn_control_puts_a_second_batch_norm_after_each_norm_of_the_modules():
    model = models.create_model("cifar_resnet18", num_classes=10, norm="2bn34")
    variables = _abstract_variables(model, 32)
    layers = _norm_layers(variables)
    second = {layer for layer in layers if layer.endswith("/SecondBatchNorm")}
    assert len(second) == 10
    assert all(layer.startswith(tuple(f"BasicBlock_{i}/" for i in range(4, 8))) for layer in second)
    # The first BatchNorm of a pair has no parameters (the second ignores its affine map).
    first = variables["params"]["BasicBlock_7"]["Norm_0"]
    assert set(first) == {"SecondBatchNorm"}
    assert set(variables["batch_stats"]["BasicBlock_7"]["Norm_0"]) == {
        "BatchNorm",
        "SecondBatchNorm",
    }
    x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
    real = model.init(jax.random.key(0), x, train=False)
    logits, _ = model.apply(real, x, train=True, mutable=["batch_stats"])
    assert logits.shape == (4, 10)


def test_layer_kind_rules():
    assert models.layer_kind("bn+sbn", None, None) == "bn+sbn"
    assert models.layer_kind("bn+sbn", (3, 4), None) == "bn"
    assert models.layer_kind("bn+sbn", (3, 4), 3) == "bn+sbn"
    assert models.layer_kind("2bn", (4,), 2) == "bn"
    assert models.layer_kind("bn", (1,), 2) == "bn"
    assert models.resolve_placement("sbn34", None, 4, "ResNet") == ("bn+sbn", (3, 4))
    assert models.resolve_placement("2bn4", None, 4, "ResNet") == ("2bn", (4,))
    assert models.resolve_placement("sbn", (2, 1), 3, "CifarResNet") == ("sbn", (1, 2))


@pytest.mark.parametrize(
    "name", ["resnet18", "resnet50", "cifar_resnet20", "cifar_resnet18", "wrn28_10", "vgg11"]
)
def test_every_model_runs_train_and_eval_and_updates_batch_stats(name):
    kwargs = {"width": 1} if name == "wrn28_10" else {}
    model = models.create_model(name, num_classes=7, norm="bn+sbn", **kwargs)
    x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
    # Jitted: eager dispatch of the larger models' many operations is slower than compiling.
    variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), x)
    logits, updates = jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))(
        variables, x
    )
    assert logits.shape == (4, 7) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))
    changed = jax.tree_util.tree_map_with_path(
        lambda path, a, b: bool(jnp.any(a != b)) or path[-1].key == "mean_imag",
        variables["batch_stats"],
        updates["batch_stats"],
    )
    # mean_imag may stay 0: on a 1x1 map (the last stage here) the spectrum is real.
    assert all(jax.tree.leaves(changed)), "every running mean and variance moves in a step"
    eval_logits = jax.jit(functools.partial(model.apply, train=False))(variables, x)
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
        ({"sbn_options": {"momentum": 0.5}}, r"kind 'bn' may set .*; got \['momentum'\]"),
        ({"norm": "sbn3", "sbn_options": {"num_groups": 4}}, r"got \['num_groups'\]"),
        ({"norm": "gn+sgn", "sbn_options": {"per_frequency": True}}, r"got \['per_frequency'\]"),
        ({"activation": "swish"}, "activation must be one of"),
        ({"norm": "sbn5"}, r"cifar_resnet20: CifarResNet has modules 1..3; got modules \(5,\)"),
        (
            {"name": "resnet18", "norm": "2bn45"},
            r"resnet18: ResNet has modules 1..4; got modules \(4, 5\)",
        ),
        ({"norm": "sbn34", "modules": (3,)}, "names its modules already"),
        ({"norm": "bn+sbn", "modules": (0,)}, "has modules 1..3"),
        ({"norm": "sbn3x"}, "paper's notation"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    arguments = {"name": "cifar_resnet20", "num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        models.create_model(**arguments)


def test_bad_inputs_raise_clear_errors():
    model = models.CifarResNet(num_classes=10, norm="sbn", modules=(4,))
    with pytest.raises(ValueError, match=r"CifarResNet has modules 1..3; got modules \(4,\)"):
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


def _norm_scales(params, path=()):
    """``{path: scale}`` of every norm layer's scale in a params tree."""
    found = {}
    for key, value in params.items():
        if key == "scale":
            found[path] = np.asarray(value)
        elif isinstance(value, Mapping):
            found.update(_norm_scales(value, (*path, key)))
    return found


def test_shrink_init_modules_start_those_norm_scales_at_one_over_sqrt_size():
    """ResNet-18 on 32x32: modules 3 and 4 run at 8x8 and 4x4, so their BatchNorm scales start at
    1/8 and 1/4 (the shortcut norms too), every other scale at 1; the zero-initialized last
    scale of each block stays zero."""
    for zero in (False, True):
        model = models.create_model(
            "cifar_resnet18", num_classes=10, norm="bn", base_width=2,
            shrink_init_modules=(3, 4), zero_init_residual=zero,
        )  # fmt: skip
        params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)), train=False)["params"]
        scales = _norm_scales(params)
        expected_by_block = {f"BasicBlock_{i}": (1.0, 1.0, 0.125, 0.25)[i // 2] for i in range(8)}
        assert len(scales) == 1 + 8 * 2 + 3  # The stem, two per block, three projection norms.
        for path, scale in scales.items():
            expected = expected_by_block.get(path[0], 1.0)
            if zero and path[1] == "Norm_1":
                expected = 0.0
            np.testing.assert_array_equal(scale, np.full(scale.shape, expected, np.float32))


def test_logit_scale_multiplies_the_logits_of_the_same_weights():
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
    for name in ("cifar_resnet20", "vgg16_bn"):
        extra = {"base_width": 8} if name.startswith("vgg") else {}
        plain = models.create_model(name, num_classes=10, **extra)
        scaled = models.create_model(name, num_classes=10, logit_scale=0.25, **extra)
        variables = plain.init(jax.random.key(0), x, train=False)
        z = plain.apply(variables, x, train=False)
        np.testing.assert_allclose(scaled.apply(variables, x, train=False), 0.25 * z, rtol=1e-6)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"logit_scale": 0.0}, "logit_scale must be a positive number, got 0.0"),
        ({"logit_scale": -1}, "logit_scale must be a positive number, got -1"),
        ({"logit_scale": True}, "logit_scale must be a positive number, got True"),
        ({"shrink_init_modules": (4,)}, r"modules 1..3; got shrink_init_modules \(4,\)"),
        ({"shrink_init_modules": (3,), "norm": "none"}, "shrink_init_modules needs norm layers"),
    ],
)
def test_bad_controls_are_refused(options, message):
    options = {"norm": "bn", **options}
    with pytest.raises(ValueError, match=message):
        model = models.create_model("cifar_resnet20", num_classes=10, **options)
        model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)
