"""linen and NNX modules from one list of options: same fields, same defaults, same numbers.

The NNX modules differ from linen only where NNX must know shapes before the
first call (``num_features``, ``spatial_shape``, ``input_ndim``) and in
``rngs``; ``use_running_average`` defaults to None in linen (it must be given,
at construction or call, as for ``nn.BatchNorm``) and to False in NNX (as
``nnx.BatchNorm``, switched by ``.train()``/``.eval()``).
"""

import dataclasses
import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from sbn_jax import SBNOptions, family, functional
from sbn_jax import linen as sbn_linen
from sbn_jax import nnx as sbn_nnx
from sbn_jax.models.norms import MODEL_SET_OPTIONS, SBN_OPTIONS

NNX_ONLY = {
    "num_features",
    "spatial_shape",
    "input_ndim",
    "rngs",
    "scale_metadata",  # linen annotates through its initializers (nn.with_partitioning)
    "bias_metadata",
}
PAIR_ONLY = {"spectral_scale_init", "redundant_affine"}


def _linen_defaults(cls) -> dict:
    skip = ("parent", "name")
    return {f.name: f.default for f in dataclasses.fields(cls) if f.name not in skip}


def _nnx_defaults(cls) -> dict:
    parameters = inspect.signature(cls.__init__).parameters.values()
    return {
        p.name: p.default
        for p in parameters
        if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }


OPTION_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SBNOptions)}
# A value other than the default for every option, each accepted alone: the other truth value
# for a flag, and these for the rest.
OTHER_VALUES = {
    name: not default for name, default in OPTION_DEFAULTS.items() if isinstance(default, bool)
} | {
    "axis": 1,
    "spatial_axes": (2, 3),
    "fft_norm": "ortho",
    "epsilon": 1e-3,
    "axis_name": "batch",
    "axis_index_groups": ((0, 1),),
    "impl": "fft",
    "dtype": jnp.bfloat16,
    "divide_by": "constant",
}


def test_other_values_cover_every_option():
    assert set(OTHER_VALUES) == set(SBNOptions.names())
    for name, value in OTHER_VALUES.items():
        assert value != OPTION_DEFAULTS[name], name


def test_linen_modules_have_one_attribute_per_option_with_its_default():
    for cls in (sbn_linen.SpectralBatchNorm, sbn_linen.SpatialSpectralBatchNorm):
        linen = _linen_defaults(cls)
        assert {k: linen[k] for k in OPTION_DEFAULTS} == OPTION_DEFAULTS, cls
        for name, value in OTHER_VALUES.items():
            options = cls(**{name: value}).sbn_options()
            assert getattr(options, name) == value, (cls, name)


def test_linen_and_nnx_spectral_batch_norm_have_the_same_own_arguments_and_defaults():
    linen = {k: v for k, v in _linen_defaults(sbn_linen.SpectralBatchNorm).items()}
    own = {k: v for k, v in linen.items() if k not in OPTION_DEFAULTS}
    nnx_own = _nnx_defaults(sbn_nnx.SpectralBatchNorm)
    assert set(nnx_own) - NNX_ONLY == set(own)
    assert (own.pop("use_running_average"), nnx_own.pop("use_running_average")) == (None, False)
    assert {k: v for k, v in nnx_own.items() if k not in NNX_ONLY} == own


@pytest.mark.parametrize("name", sorted(OTHER_VALUES))
def test_nnx_modules_take_every_option_as_a_keyword(name):
    shapes = {"spatial_shape": (4, 4), "input_ndim": 4}
    single = sbn_nnx.SpectralBatchNorm(3, rngs=nnx.Rngs(0), **shapes, **{name: OTHER_VALUES[name]})
    assert getattr(single.options, name) == OTHER_VALUES[name]
    pair = sbn_nnx.SpatialSpectralBatchNorm(
        3, rngs=nnx.Rngs(0), **shapes, **{name: OTHER_VALUES[name]}
    )
    assert getattr(pair.spectral_batch_norm.options, name) == OTHER_VALUES[name]


def test_spectral_batch_norm_maps_keywords_onto_the_options():
    parameters = inspect.signature(functional.spectral_batch_norm).parameters
    arrays_and_mode = {"x", "scale", "bias", "running", "use_running_average", "mask"}
    assert set(parameters) == arrays_and_mode | {"options", "option_values"}
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 6, 5, 3)), jnp.float32)
    by_keyword, _ = functional.spectral_batch_norm(x, per_frequency=True, fft_norm="ortho")
    given = SBNOptions(per_frequency=True, fft_norm="ortho")
    by_value, _ = functional.spectral_batch_norm(x, options=given)
    np.testing.assert_array_equal(by_keyword, by_value)
    # Keywords replace the fields of a given value, and keep the others.
    replaced, _ = functional.spectral_batch_norm(x, options=given, fft_norm="backward")
    backward, _ = functional.spectral_batch_norm(x, per_frequency=True)
    np.testing.assert_array_equal(replaced, backward)
    assert not np.allclose(replaced, by_value)


@pytest.mark.parametrize(
    "entry",
    [
        lambda: functional.spectral_batch_norm(jnp.ones((2, 4, 4, 3)), per_frequncy=True),
        lambda: sbn_nnx.SpectralBatchNorm(3, rngs=nnx.Rngs(0), per_frequncy=True),
        lambda: sbn_nnx.SpatialSpectralBatchNorm(3, rngs=nnx.Rngs(0), per_frequncy=True),
    ],
    ids=["functional", "nnx", "nnx-pair"],
)
def test_an_unknown_option_is_refused_with_the_list_of_options(entry):
    with pytest.raises(TypeError, match=r"Unknown SBN option\(s\) \['per_frequncy'\]; the options"):
        entry()


def test_the_models_take_every_option_they_do_not_set_themselves():
    own = set(_linen_defaults(sbn_linen.SpatialSpectralBatchNorm)) - set(OPTION_DEFAULTS)
    assert set(OPTION_DEFAULTS) | own >= SBN_OPTIONS
    assert set(OPTION_DEFAULTS) - SBN_OPTIONS == MODEL_SET_OPTIONS


def test_linen_and_nnx_group_norms_have_the_same_options_and_the_functional_defaults():
    linen = _linen_defaults(sbn_linen.SpectralGroupNorm)
    nnx_options = _nnx_defaults(sbn_nnx.SpectralGroupNorm)
    assert {k: v for k, v in nnx_options.items() if k not in NNX_ONLY} == linen
    functional_defaults = {
        p.name: p.default for p in inspect.signature(family.spectral_group_norm).parameters.values()
    }
    for name in (*family.MODULE_OPTIONS, "num_groups", "group_size"):
        expected = 32 if name == "num_groups" else functional_defaults[name]  # As nn.GroupNorm.
        assert linen[name] == expected, name
    arrays = {"x", "scale", "bias"}
    assert set(functional_defaults) == {*family.MODULE_OPTIONS, "num_groups", "group_size"} | arrays


def test_linen_and_nnx_pairs_have_the_same_options_and_defaults():
    linen_single = _linen_defaults(sbn_linen.SpectralBatchNorm)
    linen_pair = _linen_defaults(sbn_linen.SpatialSpectralBatchNorm)
    assert set(linen_pair) - set(linen_single) == PAIR_ONLY
    nnx_single = _nnx_defaults(sbn_nnx.SpectralBatchNorm)
    nnx_pair = _nnx_defaults(sbn_nnx.SpatialSpectralBatchNorm)
    # The NNX pair names what applies to both layers and passes the rest on to its SBN.
    for name, default in nnx_pair.items():
        if name in PAIR_ONLY:
            assert default == linen_pair[name], name
        else:
            assert default == nnx_single[name], name
    assert set(nnx_pair) >= PAIR_ONLY


OPTION_SETS = [
    {},
    {"per_frequency": True},
    {"fft_norm": "ortho", "use_bias": False},
    {"divide_by": "constant", "use_mean": False},
    {"separate_real_imag": True, "momentum": 0.7},
    {"running_variance": "paper", "epsilon": 1e-3},
    {"spectral_scale_init": jax.nn.initializers.constant(0.5), "redundant_affine": True},
]


@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: ",".join(o) or "defaults")
def test_linen_and_nnx_pairs_compute_the_same_outputs_and_statistics(options):
    rng = np.random.default_rng(0)
    batches = [jnp.asarray(rng.normal(size=(4, 6, 5, 3)) + i, jnp.float32) for i in range(3)]
    linen = sbn_linen.SpatialSpectralBatchNorm(**options)
    variables = linen.init(jax.random.key(0), batches[0], use_running_average=False)
    shapes = {"spatial_shape": (6, 5)} if options.get("per_frequency") else {}
    model = sbn_nnx.SpatialSpectralBatchNorm(3, rngs=nnx.Rngs(0), **options, **shapes)
    for x in batches:
        y_linen, updates = linen.apply(
            variables, x, use_running_average=False, mutable=["batch_stats"]
        )
        variables = {**variables, **updates}
        np.testing.assert_allclose(model(x), y_linen, atol=1e-6)
    stats = variables["batch_stats"]["SpectralBatchNorm_0"]
    sbn = model.spectral_batch_norm
    assert set(stats) == {
        n for n in ("mean_real", "mean_imag", "var", "var_imag") if getattr(sbn, n) is not None
    }
    for name, value in stats.items():
        np.testing.assert_allclose(getattr(sbn, name)[...], value, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        model.batch_norm.mean[...], variables["batch_stats"]["BatchNorm_0"]["mean"], rtol=1e-6
    )
    model.eval()
    np.testing.assert_allclose(
        model(batches[0]), linen.apply(variables, batches[0], use_running_average=True), atol=1e-6
    )


# Arguments of flax's BatchNorm (linen and NNX) that SBN's modules do not take, and why. A flax
# release that adds an argument fails the tests below until it is taken or listed here.
NOT_APPLICABLE = {
    "use_fast_variance": "the closed form's variance is E|X|^2 - |E X|^2 by construction and the "
    "transforms' is two-pass; there is no choice between the two to offer",
    "force_float32_reductions": "spectra and statistics are float32 (float64 for float64 inputs) "
    "whatever dtype is",
    "promote_dtype": "SBN computes in float32 or float64 and casts only its output (dtype)",
}


def test_linen_modules_take_every_argument_of_nn_batch_norm_that_applies():
    flax_fields = set(_linen_defaults(nn.BatchNorm))
    for cls in (sbn_linen.SpectralBatchNorm, sbn_linen.SpatialSpectralBatchNorm):
        missing = flax_fields - set(_linen_defaults(cls)) - set(NOT_APPLICABLE)
        assert not missing, (cls.__name__, sorted(missing))


def test_nnx_modules_take_every_argument_of_nnx_batch_norm_that_applies():
    flax_arguments = set(_nnx_defaults(nnx.BatchNorm)) | {"num_features", "rngs"}
    for cls in (sbn_nnx.SpectralBatchNorm, sbn_nnx.SpatialSpectralBatchNorm):
        taken = set(_nnx_defaults(cls)) | {"num_features", "rngs"} | set(OPTION_DEFAULTS)
        missing = flax_arguments - taken - set(NOT_APPLICABLE)
        assert not missing, (cls.__name__, sorted(missing))


METADATA_MODULES = {
    "sbn": (lambda **kw: sbn_nnx.SpectralBatchNorm(4, complex_affine=True, **kw), True),
    "pair": (lambda **kw: sbn_nnx.SpatialSpectralBatchNorm(4, redundant_affine=True, **kw), False),
    "group": (
        lambda **kw: sbn_nnx.SpectralGroupNorm(4, num_groups=2, complex_affine=True, **kw),
        True,
    ),
}


@pytest.mark.parametrize("make,complex_affine", METADATA_MODULES.values(), ids=METADATA_MODULES)
def test_nnx_param_metadata_gives_the_partition_spec(make, complex_affine):
    """Every scale (real, imaginary, the pair's BatchNorm's) gets scale_metadata, every bias
    bias_metadata: nnx.get_partition_spec reads them, as for nnx.BatchNorm."""
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:4]), ("model",))
    with jax.set_mesh(mesh):
        module = make(
            scale_metadata={"out_sharding": ("model",)},
            bias_metadata={"out_sharding": (None,)},
            rngs=nnx.Rngs(0),
        )
        specs = nnx.to_pure_dict(nnx.get_partition_spec(nnx.state(module, nnx.Param)))
    flat = {"/".join(map(str, path)): spec for path, spec in _flatten(specs)}
    names = {path.split("/")[-1] for path in flat}
    assert names == (
        {"scale", "bias", "scale_imag", "bias_imag"} if complex_affine else {"scale", "bias"}
    )
    for path, spec in flat.items():
        expected = P("model") if path.split("/")[-1].startswith("scale") else P(None)
        assert spec == expected, (path, spec)


def _flatten(tree, prefix=()):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _flatten(value, (*prefix, key))
    else:
        yield prefix, tree
