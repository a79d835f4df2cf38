"""Every bad input gets a clear error naming what was expected."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sbn_jax
from sbn_jax import functional as F


def _sbn(x, **kwargs):
    return F.spectral_batch_norm(x, **kwargs)[0]


def test_rank_two_input_has_no_spatial_axis():
    with pytest.raises(ValueError, match=r"at least one spatial axis.*rank 2"):
        _sbn(jnp.ones((4, 3)))


def test_spatial_axis_equal_to_feature_axis():
    with pytest.raises(ValueError, match="include the feature axis"):
        _sbn(jnp.ones((2, 4, 4, 3)), spatial_axes=(1, 3))


def test_spatial_axis_out_of_range_or_repeated_or_empty():
    with pytest.raises(ValueError, match=r"Spatial axis 7 is out of range.*rank 4"):
        _sbn(jnp.ones((2, 4, 4, 3)), spatial_axes=(1, 7))
    with pytest.raises(ValueError, match="must not repeat"):
        _sbn(jnp.ones((2, 4, 4, 3)), spatial_axes=(1, -3))
    with pytest.raises(ValueError, match="at least one axis"):
        _sbn(jnp.ones((2, 4, 4, 3)), spatial_axes=())


def test_feature_axis_out_of_range():
    with pytest.raises(ValueError, match="Feature axis 5 is out of range"):
        _sbn(jnp.ones((2, 4, 4, 3)), axis=5)


def test_integer_input_is_refused():
    with pytest.raises(TypeError, match=r"floating-point input.*int32"):
        _sbn(jnp.ones((2, 4, 4, 3), jnp.int32))


def test_complex_input_is_refused():
    with pytest.raises(TypeError, match="real floating-point input; got complex"):
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
    with pytest.raises(ValueError, match=r"more than one value per statistic.*one example"):
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


def test_per_frequency_running_statistics_on_another_spatial_size():
    module = sbn_jax.SpectralBatchNorm(per_frequency=True)
    variables = module.init(jax.random.key(0), jnp.ones((2, 8, 8, 3)), use_running_average=True)
    with pytest.raises(ValueError, match=r"expected \(6, 4, 3\).*spatial size"):
        module.apply(variables, jnp.ones((2, 6, 6, 3)), use_running_average=True)


def test_running_average_without_statistics():
    with pytest.raises(ValueError, match="needs running statistics"):
        _sbn(jnp.ones((2, 4, 4, 3)), use_running_average=True)


def test_nan_and_inf_propagate():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 4, 4, 3)), jnp.float32)
    for bad in (jnp.nan, jnp.inf):
        for per_frequency in (False, True):
            y = _sbn(x.at[0, 1, 1, 0].set(bad), per_frequency=per_frequency)
            assert not np.isfinite(np.asarray(y[..., 0])).all()
