"""Every bad input gets a clear error naming what was expected."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import sbn_jax
from sbn_jax import family
from sbn_jax import functional as F
from sbn_jax import nnx as sbn_nnx


def _sbn(x, **kwargs):
    return F.spectral_batch_norm(x, **kwargs)[0]


def _normal(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _linen_train(module, x):
    variables = module.init(jax.random.key(0), x, use_running_average=True)
    return module.apply(variables, x, use_running_average=False, mutable=["batch_stats"])[0]


def _nnx_sbn(num_features, **options):
    if options.get("per_frequency"):
        options.setdefault("spatial_shape", (8, 8))
    return sbn_nnx.SpectralBatchNorm(num_features, rngs=nnx.Rngs(0), **options)


def _nnx_pair(num_features, **options):
    return sbn_nnx.SpatialSpectralBatchNorm(num_features, rngs=nnx.Rngs(0), **options)


def test_rank_two_input_has_no_spatial_axis():
    with pytest.raises(ValueError, match=r"at least one spatial axis.*rank 2"):
        _sbn(jnp.ones((4, 3)))


def test_spatial_axis_equal_to_feature_axis():
    with pytest.raises(ValueError, match="include the feature axis"):
        _sbn(jnp.ones((2, 4, 4, 3)), spatial_axes=(1, 3))


def test_spatial_axis_out_of_range_or_repeated_or_empty():
    with pytest.raises(
        ValueError,
        match=r"Spatial axis 7 is out of range.*rank 4: every entry of spatial_axes=\(1, 7\) "
        r"must be in \[-4, 3\]",
    ):
        _sbn(jnp.ones((2, 4, 4, 3)), spatial_axes=(1, 7))
    with pytest.raises(ValueError, match="must not repeat"):
        _sbn(jnp.ones((2, 4, 4, 3)), spatial_axes=(1, -3))
    with pytest.raises(ValueError, match="at least one axis"):
        _sbn(jnp.ones((2, 4, 4, 3)), spatial_axes=())


def test_feature_axis_out_of_range():
    with pytest.raises(
        ValueError, match=r"Feature axis 5 is out of range.*rank 4: axis must be in \[-4, 3\]"
    ):
        _sbn(jnp.ones((2, 4, 4, 3)), axis=5)


def test_integer_input_is_refused():
    with pytest.raises(TypeError, match=r"floating-point input x .*; got int32"):
        _sbn(jnp.ones((2, 4, 4, 3), jnp.int32))


def test_complex_input_is_refused():
    with pytest.raises(TypeError, match="real floating-point input x; got complex"):
        _sbn(jnp.ones((2, 4, 4, 3), jnp.complex64))


def test_unknown_fft_norm_lists_the_choices():
    with pytest.raises(
        ValueError, match=r"fft_norm must be one of \('ortho', 'backward', 'forward'\)"
    ):
        _sbn(jnp.ones((2, 4, 4, 3)), fft_norm="unitary")


def test_unknown_impl_and_closed_form_with_per_frequency():
    with pytest.raises(ValueError, match="impl must be one of"):
        _sbn(jnp.ones((2, 4, 4, 3)), impl="fast")
    with pytest.raises(ValueError, match="channel statistics only"):
        _sbn(jnp.ones((2, 4, 4, 3)), impl="closed_form", per_frequency=True)


def test_single_example_per_frequency_training_is_refused():
    with pytest.raises(
        ValueError,
        match=r"more than one value per statistic.*x of shape \(1, 4, 4, 3\).*one example",
    ):
        _sbn(jnp.ones((1, 4, 4, 3)), per_frequency=True)


def test_single_example_single_bin_channel_training_is_refused():
    with pytest.raises(ValueError, match="more than one value per statistic"):
        _sbn(jnp.ones((1, 1, 1, 3)))
    # One example with several bins is fine for channel statistics.
    _sbn(jnp.asarray(np.random.default_rng(0).normal(size=(1, 4, 4, 3)), jnp.float32))


def test_single_example_per_device_is_fine_when_the_global_batch_is_larger():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 1, 4, 4, 3)), jnp.float32)
    y = jax.pmap(lambda x: _sbn(x, per_frequency=True, axis_name="i"), axis_name="i")(x)
    assert y.shape == x.shape
    with pytest.raises(ValueError, match="more than one value per statistic"):
        jax.pmap(
            lambda x: _sbn(
                x, per_frequency=True, axis_name="i", axis_index_groups=[[i] for i in range(8)]
            ),
            axis_name="i",
        )(x)


@pytest.mark.parametrize("use_running_average", [True, False], ids=["eval", "train"])
def test_per_frequency_running_statistics_on_another_spatial_size(use_running_average):
    module = sbn_jax.SpectralBatchNorm(per_frequency=True)
    variables = module.init(jax.random.key(0), jnp.ones((2, 8, 8, 3)), use_running_average=True)
    with pytest.raises(ValueError, match=r"expected \(6, 4, 3\).*spatial size"):
        module.apply(
            variables,
            jnp.ones((2, 6, 6, 3)),
            use_running_average=use_running_average,
            mutable=["batch_stats"],
        )


def test_linen_channel_statistics_of_another_feature_count():
    module = sbn_jax.SpectralBatchNorm(use_scale=False, use_bias=False)
    variables = module.init(jax.random.key(0), jnp.ones((2, 4, 4, 4)), use_running_average=True)
    with pytest.raises(ValueError, match=r"expected \(3,\)\. Channel statistics hold one value"):
        module.apply(variables, _normal((2, 4, 4, 3)), use_running_average=False, mutable=True)


def test_running_average_without_statistics():
    with pytest.raises(ValueError, match="needs running statistics"):
        _sbn(jnp.ones((2, 4, 4, 3)), use_running_average=True)


def test_nan_and_inf_propagate():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 4, 4, 3)), jnp.float32)
    for bad in (jnp.nan, jnp.inf):
        for per_frequency in (False, True):
            y = _sbn(x.at[0, 1, 1, 0].set(bad), per_frequency=per_frequency)
            assert not np.isfinite(np.asarray(y[..., 0])).all()


# Every training entry point of SBN, called on x: the function per impl, the linen and NNX
# modules and pairs.
TRAINING_ENTRIES = {
    "function-fft": lambda x: _sbn(x, impl="fft"),
    "function-matmul": lambda x: _sbn(x, impl="matmul"),
    "function-closed_form": lambda x: _sbn(x, impl="closed_form"),
    "function-per_frequency-fft": lambda x: _sbn(x, per_frequency=True, impl="fft"),
    "function-per_frequency-matmul": lambda x: _sbn(x, per_frequency=True, impl="matmul"),
    "linen": lambda x: _linen_train(sbn_jax.SpectralBatchNorm(), x),
    "linen-per_frequency": lambda x: _linen_train(sbn_jax.SpectralBatchNorm(per_frequency=True), x),
    "linen-pair": lambda x: _linen_train(sbn_jax.SpatialSpectralBatchNorm(), x),
    "nnx": lambda x: _nnx_sbn(3)(x),
    "nnx-per_frequency": lambda x: _nnx_sbn(3, per_frequency=True)(x),
    "nnx-pair": lambda x: _nnx_pair(3)(x),
}


@pytest.mark.parametrize("entry", TRAINING_ENTRIES.values(), ids=TRAINING_ENTRIES.keys())
def test_training_on_an_empty_batch_is_refused(entry):
    with pytest.raises(
        ValueError,
        match=r"Training needs a non-empty batch: x has shape \(0, 8, 8, 3\), whose batch axes "
        r"\(0,\) have sizes \(0,\).*drop_remainder",
    ):
        entry(jnp.ones((0, 8, 8, 3)))


def test_training_on_a_batch_with_an_empty_second_batch_axis_is_refused():
    # Video-like (B, T, H, W, C) with per-frame SBN: the batch axes are (0, 1).
    with pytest.raises(ValueError, match=r"batch axes \(0, 1\) have sizes \(2, 0\)"):
        _sbn(jnp.ones((2, 0, 4, 4, 3)), spatial_axes=(2, 3))


def test_nnx_pair_leaves_its_batch_norm_statistics_unchanged_when_sbn_refuses_a_batch():
    model = _nnx_pair(3)
    with pytest.raises(ValueError, match="non-empty batch"):
        model(jnp.ones((0, 8, 8, 3)))
    np.testing.assert_array_equal(model.batch_norm.mean[...], np.zeros(3))
    np.testing.assert_array_equal(model.batch_norm.var[...], np.ones(3))


@pytest.mark.parametrize(
    ("per_frequency", "impl"),
    [(False, "fft"), (False, "matmul"), (False, "closed_form"), (True, "fft"), (True, "matmul")],
)
def test_eval_with_an_empty_batch_returns_an_empty_output(per_frequency, impl):
    x = jnp.ones((0, 8, 8, 3), jnp.bfloat16)
    layout = F.resolve_layout(x.ndim)
    running = F.init_statistics(F.statistics_shape(x.shape, layout, per_frequency))
    y, stats = F.spectral_batch_norm(
        x, running=running, use_running_average=True, per_frequency=per_frequency, impl=impl
    )
    assert (y.shape, y.dtype) == (x.shape, x.dtype)
    chex.assert_trees_all_equal(stats, running)


def test_eval_of_the_modules_with_an_empty_batch_returns_an_empty_output():
    x = jnp.ones((0, 8, 8, 3))
    for module in (sbn_jax.SpectralBatchNorm(), sbn_jax.SpatialSpectralBatchNorm()):
        variables = module.init(jax.random.key(0), _normal((2, 8, 8, 3)), use_running_average=True)
        assert module.apply(variables, x, use_running_average=True).shape == x.shape
    for model in (_nnx_sbn(3, per_frequency=True), _nnx_pair(3)):
        model.eval()
        assert model(x).shape == x.shape


PER_EXAMPLE_ENTRIES = {
    "function-closed_form": lambda x: family.spectral_group_norm(
        x, num_groups=1, impl="closed_form"
    ),
    "function-fft": lambda x: family.spectral_group_norm(x, group_size=1, impl="fft"),
    "linen-group": lambda x: sbn_jax.SpectralGroupNorm(num_groups=3).init_with_output(
        jax.random.key(0), x
    )[0],
    "nnx-layer": lambda x: sbn_nnx.SpectralLayerNorm(3, rngs=nnx.Rngs(0))(x),
    "nnx-instance-complex": lambda x: sbn_nnx.SpectralInstanceNorm(
        3, complex_affine=True, rngs=nnx.Rngs(0)
    )(x),
}


@pytest.mark.parametrize("entry", PER_EXAMPLE_ENTRIES.values(), ids=PER_EXAMPLE_ENTRIES.keys())
def test_per_example_norms_map_an_empty_batch_to_an_empty_output(entry):
    # They keep no statistics, so an empty batch has nothing to corrupt, in training or eval.
    assert entry(jnp.ones((0, 8, 8, 3))).shape == (0, 8, 8, 3)


@pytest.mark.parametrize(
    "entry",
    [
        lambda x: _sbn(x),
        lambda x: _sbn(x, per_frequency=True, impl="matmul"),
        lambda x: family.spectral_group_norm(x, num_groups=1),
    ],
    ids=["sbn", "sbn-per_frequency", "group"],
)
def test_a_spatial_axis_of_size_zero_is_refused(entry):
    with pytest.raises(
        ValueError,
        match=r"spatial axis of x needs size >= 1.*spatial axes \(1, 2\) have sizes \(0, 4\)",
    ):
        entry(jnp.ones((2, 0, 4, 3)))


def _update(momentum):
    stats = F.init_statistics((3,))
    return F.update_running_statistics(stats, stats, momentum)


def _apply_with_running(momentum):
    x = _normal((2, 4, 4, 3))
    running = F.init_statistics((3,))
    return F.apply_with_running_statistics(
        x,
        running,
        scale=None,
        bias=None,
        use_running_average=False,
        momentum=momentum,
        running_variance="biased",
        options=F.SBNOptions(),
    )


# Every entry point that takes a momentum, called with one.
MOMENTUM_ENTRIES = {
    "update_running_statistics": _update,
    "apply_with_running_statistics": _apply_with_running,
    "linen": lambda m: _linen_train(sbn_jax.SpectralBatchNorm(momentum=m), _normal((2, 4, 4, 3))),
    "linen-pair": lambda m: _linen_train(
        sbn_jax.SpatialSpectralBatchNorm(momentum=m), _normal((2, 4, 4, 3))
    ),
    "nnx": lambda m: _nnx_sbn(3, momentum=m)(_normal((2, 4, 4, 3))),
    "nnx-pair": lambda m: _nnx_pair(3, momentum=m)(_normal((2, 4, 4, 3))),
}


@pytest.mark.parametrize("momentum", [1.5, -0.1, float("nan")])
@pytest.mark.parametrize("entry", MOMENTUM_ENTRIES.values(), ids=MOMENTUM_ENTRIES.keys())
def test_momentum_outside_zero_one_is_refused(entry, momentum):
    with pytest.raises(
        ValueError, match=rf"momentum must be in \[0, 1\].*got momentum={momentum}\."
    ):
        entry(momentum)


def test_momentum_zero_and_one_are_allowed():
    running, batch = F.init_statistics((3,)), F.Statistics(*(jnp.full((3,), 2.0),) * 3)
    # 0: the running statistics become the batch's; 1: they stay frozen.
    np.testing.assert_array_equal(F.update_running_statistics(running, batch, 0.0).var, batch.var)
    np.testing.assert_array_equal(F.update_running_statistics(running, batch, 1.0).var, running.var)


def test_a_traced_momentum_is_not_checked():
    # A schedule under jit: the value is unknown when tracing, so no error can name it.
    update = jax.jit(lambda m: _update(m).var)
    np.testing.assert_allclose(update(0.5), np.ones(3))


# Every entry point that takes an epsilon, called with one.
EPSILON_ENTRIES = {
    "function": lambda e: _sbn(_normal((2, 4, 4, 3)), epsilon=e),
    "function-group": lambda e: family.spectral_group_norm(
        _normal((2, 4, 4, 3)), num_groups=1, epsilon=e
    ),
    "function-group-fft": lambda e: family.spectral_group_norm(
        _normal((2, 4, 4, 3)), num_groups=1, epsilon=e, impl="fft"
    ),
    "linen": lambda e: _linen_train(sbn_jax.SpectralBatchNorm(epsilon=e), _normal((2, 4, 4, 3))),
    "linen-pair": lambda e: _linen_train(
        sbn_jax.SpatialSpectralBatchNorm(epsilon=e), _normal((2, 4, 4, 3))
    ),
    "linen-group": lambda e: sbn_jax.SpectralLayerNorm(epsilon=e).init(
        jax.random.key(0), _normal((2, 4, 4, 3))
    ),
    "nnx": lambda e: _nnx_sbn(3, epsilon=e)(_normal((2, 4, 4, 3))),
    "nnx-group": lambda e: sbn_nnx.SpectralGroupNorm(3, num_groups=3, epsilon=e, rngs=nnx.Rngs(0))(
        _normal((2, 4, 4, 3))
    ),
}


@pytest.mark.parametrize("epsilon", [-1.0, -1e-12, float("inf"), float("nan")])
@pytest.mark.parametrize("entry", EPSILON_ENTRIES.values(), ids=EPSILON_ENTRIES.keys())
def test_negative_or_infinite_epsilon_is_refused(entry, epsilon):
    with pytest.raises(
        ValueError, match=rf"epsilon must be a finite number >= 0.*got epsilon={epsilon}\."
    ):
        entry(epsilon)


def test_epsilon_zero_is_allowed():
    y = _sbn(_normal((2, 4, 4, 3)), epsilon=0.0)
    assert np.isfinite(np.asarray(y)).all()


# NNX modules built for 4 features, called on 3; the pair checks before its BatchNorm runs.
NNX_FEATURE_MODULES = {
    "SpectralBatchNorm": lambda: _nnx_sbn(4),
    "SpectralBatchNorm-eval": lambda: _nnx_sbn(4, use_running_average=True),
    "SpectralBatchNorm-per_frequency": lambda: _nnx_sbn(4, per_frequency=True),
    "SpatialSpectralBatchNorm": lambda: _nnx_pair(4),
    "SpectralGroupNorm": lambda: sbn_nnx.SpectralGroupNorm(4, num_groups=2, rngs=nnx.Rngs(0)),
    "SpectralLayerNorm": lambda: sbn_nnx.SpectralLayerNorm(4, rngs=nnx.Rngs(0)),
    "SpectralInstanceNorm": lambda: sbn_nnx.SpectralInstanceNorm(4, rngs=nnx.Rngs(0)),
}


@pytest.mark.parametrize("name", NNX_FEATURE_MODULES)
def test_nnx_module_called_on_another_feature_size(name):
    module = NNX_FEATURE_MODULES[name]()
    with pytest.raises(
        ValueError,
        match=rf"^{name.split('-')[0]} was built with num_features=4, but x of shape "
        r"\(2, 8, 8, 3\) has 3 features on axis -1: expected num_features=3",
    ):
        module(_normal((2, 8, 8, 3)))


def test_nnx_feature_size_check_follows_the_feature_axis():
    module = _nnx_sbn(4, axis=1)
    with pytest.raises(ValueError, match=r"has 3 features on axis 1: expected num_features=3"):
        module(_normal((2, 3, 8, 8)))
    assert module(_normal((2, 4, 8, 8))).shape == (2, 4, 8, 8)


@pytest.mark.parametrize(
    ("make", "shape", "sizes", "axes"),
    [
        (lambda: _nnx_sbn(3, per_frequency=True), (2, 6, 6, 3), (6, 6), (1, 2)),
        (lambda: _nnx_sbn(3, per_frequency=True), (2, 8, 6, 3), (8, 6), (1, 2)),
        (
            lambda: _nnx_sbn(3, per_frequency=True, use_running_average=True),
            (2, 6, 6, 3),
            (6, 6),
            (1, 2),
        ),
        (
            lambda: _nnx_pair(3, per_frequency=True, spatial_shape=(8, 8)),
            (2, 6, 6, 3),
            (6, 6),
            (1, 2),
        ),
        # A rank-5 input has three spatial axes by default.
        (lambda: _nnx_sbn(3, per_frequency=True), (2, 4, 8, 8, 3), (4, 8, 8), (1, 2, 3)),
    ],
    ids=["train", "train-one-axis", "eval", "pair", "rank"],
)
def test_nnx_per_frequency_module_called_on_another_spatial_shape(make, shape, sizes, axes):
    module = make()
    sizes_text, axes_text = (re.escape(str(t)) for t in (sizes, axes))
    with pytest.raises(
        ValueError,
        match=rf"was built with spatial_shape=\(8, 8\) for its per-frequency statistics, but x "
        rf"of shape {re.escape(str(shape))} has spatial sizes {sizes_text} on axes {axes_text}: "
        rf"expected spatial_shape={sizes_text}\.",
    ):
        module(_normal(shape))


def test_nnx_channel_statistics_ignore_spatial_shape():
    # spatial_shape sizes per-frequency statistics only; channel statistics fit any size.
    module = _nnx_sbn(3, spatial_shape=(8, 8))
    assert module(_normal((2, 6, 6, 3))).shape == (2, 6, 6, 3)
