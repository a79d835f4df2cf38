"""Complex per-channel scale and bias: the functions, the modules, what they add and drop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sbn_jax import family, linen
from sbn_jax import functional as F
from sbn_jax import nnx as sbn_nnx
from tests.reference import reference_group_norm, reference_sbn


def _inputs(shape=(6, 8, 6, 4), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape) + rng.normal(size=shape[-1])
    channels = shape[-1]
    scale = rng.normal(size=channels) + 1j * rng.normal(size=channels)
    bias = rng.normal(size=channels) + 1j * rng.normal(size=channels)
    return x, scale, bias


@pytest.mark.parametrize("per_frequency", [False, True])
@pytest.mark.parametrize("impl", ["fft", "matmul", "auto"])
def test_sbn_with_complex_scale_and_bias_matches_reference(per_frequency, impl):
    x, scale, bias = _inputs()
    y, _ = F.spectral_batch_norm(
        jnp.asarray(x, jnp.float32),
        scale=jnp.asarray(scale, jnp.complex64),
        bias=jnp.asarray(bias, jnp.complex64),
        per_frequency=per_frequency,
        impl=impl,
    )
    expected, _ = reference_sbn(x, per_frequency=per_frequency, scale=scale, bias=bias)
    np.testing.assert_allclose(y, expected, atol=2e-5 * np.abs(expected).max())


def test_group_norm_with_complex_scale_and_bias_matches_reference():
    x, scale, bias = _inputs()
    y = family.spectral_group_norm(
        jnp.asarray(x, jnp.float32),
        num_groups=2,
        scale=jnp.asarray(scale, jnp.complex64),
        bias=jnp.asarray(bias, jnp.complex64),
    )
    expected = reference_group_norm(x, 2, scale=scale, bias=bias)
    np.testing.assert_allclose(y, expected, atol=2e-5 * np.abs(expected).max())


def test_closed_form_refuses_a_complex_scale():
    with pytest.raises(ValueError, match="a complex scale or bias needs"):
        F.spectral_batch_norm(
            jnp.ones((2, 4, 4, 3)), scale=jnp.ones(3, jnp.complex64), impl="closed_form"
        )


def test_a_quarter_turn_of_the_phase_gives_the_hilbert_transform():
    """What a real affine map cannot express: scale = 1j turns cos into -sin along the last axis.

    With the statistics left out (``use_mean=False, divide_by="none"``) SBN is
    ``irfft(scale * rfft(x))``; a complex scale of modulus 1 rotates the phase
    of every bin, which shifts each frequency by a quarter of its period.
    """
    n, t = 16, np.arange(16)
    phases = np.array([[0.0], [0.7], [2.0]])
    x = np.cos(2 * np.pi * 3 * t / n + phases)[..., None]  # (3 examples, 16, 1 channel)
    y, _ = F.spectral_batch_norm(
        jnp.asarray(x, jnp.float32),
        scale=jnp.full(1, 1j, jnp.complex64),
        use_mean=False,
        divide_by="none",
        impl="fft",
    )
    np.testing.assert_allclose(y[..., 0], -np.sin(2 * np.pi * 3 * t / n + phases), atol=1e-5)
    # Orthogonal to its input in every example: no per-channel a, b make it from x.
    np.testing.assert_allclose(np.sum(np.asarray(y) * x, axis=(1, 2)), 0.0, atol=1e-4)


def test_the_inverse_drops_the_imaginary_parts_of_the_self_conjugate_bins():
    """An imaginary bias on every bin of a 1-D half spectrum of size 8: bins 0 and 4 lose it."""
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 8, 1)), jnp.float32)
    plain = family.spectral_instance_norm(x)
    shifted = family.spectral_instance_norm(x, bias=jnp.full(1, 2j, jnp.complex64))
    kept = np.fft.irfft(2j * np.array([0.0, 1, 1, 1, 0]), n=8)  # DC and Nyquist dropped.
    np.testing.assert_allclose(
        np.asarray(shifted - plain)[..., 0], np.tile(kept, (4, 1)), atol=1e-6
    )
    assert abs(np.fft.irfft(2j * np.ones(5), n=8) - kept).max() < 1e-12


@pytest.mark.parametrize(
    "make_linen, make_nnx",
    [
        (
            lambda **o: linen.SpectralBatchNorm(**o),
            lambda **o: sbn_nnx.SpectralBatchNorm(3, rngs=nnx.Rngs(0), **o),
        ),
        (
            lambda **o: linen.SpectralGroupNorm(num_groups=3, **o),
            lambda **o: sbn_nnx.SpectralGroupNorm(3, num_groups=3, rngs=nnx.Rngs(0), **o),
        ),
    ],
    ids=["batch", "group"],
)
def test_modules_store_real_and_imaginary_params_starting_as_the_real_map(make_linen, make_nnx):
    x = jnp.asarray(_inputs((4, 6, 5, 3))[0], jnp.float32)
    module = make_linen(complex_affine=True)
    variables = (
        module.init(jax.random.key(0), x, use_running_average=False)
        if isinstance(module, linen.SpectralBatchNorm)
        else module.init(jax.random.key(0), x)
    )
    params = variables["params"]
    assert set(params) == {"scale", "scale_imag", "bias", "bias_imag"}
    assert all(v.dtype == jnp.float32 and v.shape == (3,) for v in params.values())
    np.testing.assert_array_equal(params["scale_imag"], 0.0)
    call = {"use_running_average": False, "mutable": ["batch_stats"]}
    if not isinstance(module, linen.SpectralBatchNorm):
        call = {}
    real = make_linen()
    real_vars = {**variables, "params": {"scale": params["scale"], "bias": params["bias"]}}
    y_real = real.apply(real_vars, x, **call)
    y_complex = module.apply(variables, x, **call)
    if call:
        y_real, y_complex = y_real[0], y_complex[0]
    np.testing.assert_allclose(y_complex, y_real, atol=1e-6)
    # A non-zero imaginary part changes the output, identically in linen and NNX.
    turned = {**params, "scale_imag": jnp.asarray([0.5, -1.0, 2.0])}
    y_turned = module.apply({**variables, "params": turned}, x, **call)
    if call:
        y_turned = y_turned[0]
    assert np.abs(np.asarray(y_turned - y_complex)).max() > 0.05
    model = make_nnx(complex_affine=True)
    model.scale_imag[...] = turned["scale_imag"]
    np.testing.assert_allclose(model(x), y_turned, atol=1e-6)
