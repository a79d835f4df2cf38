"""The functional core against the float64 NumPy reference, for every impl."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from sbn_jax import functional as F
from tests.reference import reference_layout, reference_sbn

# (shape, axis, spatial_axes): NHWC, NCHW, 1-D, 3-D, two batch axes, sizes of 1, odd/even.
LAYOUTS = [
    ((4, 6, 5, 3), -1, None),
    ((4, 3, 7, 4), 1, None),
    ((5, 9, 3), -1, None),
    ((3, 4, 3, 6, 2), -1, None),
    ((2, 3, 4, 6, 3), -1, (2, 3)),
    ((4, 1, 5, 3), -1, None),
    ((4, 6, 1, 3), -1, None),
    ((4, 1, 1, 3), -1, None),
]
IMPLS = {False: ("fft", "closed_form", "matmul", "auto"), True: ("fft", "matmul", "auto")}
# Compiled, one program per case: eager dispatch compiles every operation at every new shape.
jitted_sbn = jax.jit(F.spectral_batch_norm, static_argnames=("options", "use_running_average"))


def _random_case(shape, axis, spatial_axes, per_frequency, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape) * 2.0 + 0.5
    channels = shape[axis]
    scale = rng.uniform(0.5, 2.0, size=channels)
    bias = rng.normal(size=channels)
    layout = F.resolve_layout(len(shape), axis, spatial_axes)
    stats_shape = F.statistics_shape(shape, layout, per_frequency)
    running = (
        rng.normal(size=stats_shape) + 1j * rng.normal(size=stats_shape),
        rng.uniform(0.5, 3.0, size=stats_shape),
    )
    return x, scale, bias, running


def _as_statistics(running):
    mean, var = running
    return F.Statistics(
        jnp.asarray(mean.real, jnp.float32),
        jnp.asarray(mean.imag, jnp.float32),
        jnp.asarray(var, jnp.float32),
    )


@pytest.mark.parametrize("shape,axis,spatial_axes", LAYOUTS)
@pytest.mark.parametrize("fft_norm", F.FFT_NORMS)
@pytest.mark.parametrize("per_frequency", [False, True])
def test_training_matches_reference(shape, axis, spatial_axes, fft_norm, per_frequency):
    x, scale, bias, _ = _random_case(shape, axis, spatial_axes, per_frequency)
    expected, (mean, var) = reference_sbn(
        x,
        axis=axis,
        spatial_axes=spatial_axes,
        per_frequency=per_frequency,
        fft_norm=fft_norm,
        scale=scale,
        bias=bias,
    )
    for impl in IMPLS[per_frequency]:
        options = F.SBNOptions(
            axis=axis,
            spatial_axes=spatial_axes,
            per_frequency=per_frequency,
            fft_norm=fft_norm,
            impl=impl,
        )
        y, stats = jitted_sbn(
            jnp.asarray(x, jnp.float32),
            scale=jnp.asarray(scale, jnp.float32),
            bias=jnp.asarray(bias, jnp.float32),
            options=options,
        )
        tol = 2e-5 * max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(y, expected, atol=tol, err_msg=impl)
        np.testing.assert_allclose(stats.mean_real, mean.real, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(stats.mean_imag, mean.imag, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(stats.var, var, rtol=1e-4, atol=1e-4)


# Every layout with the default norm, every norm on NHWC and 3-D inputs.
GRADIENT_CASES = [(*layout, "ortho") for layout in LAYOUTS] + [
    (*layout, norm) for layout in (LAYOUTS[0], LAYOUTS[3]) for norm in ("backward", "forward")
]


@pytest.mark.parametrize("shape,axis,spatial_axes,fft_norm", GRADIENT_CASES)
@pytest.mark.parametrize("per_frequency", [False, True])
@pytest.mark.parametrize("use_running_average", [False, True])
def test_fast_path_gradients_equal_fft_path(
    shape, axis, spatial_axes, fft_norm, per_frequency, use_running_average
):
    """float32 gradients w.r.t. input, scale and bias of every impl equal the "fft" path's."""
    x, scale, bias, running = _random_case(shape, axis, spatial_axes, per_frequency, seed=3)
    args = tuple(jnp.asarray(v, jnp.float32) for v in (x, scale, bias))
    cotangent = jnp.asarray(np.random.default_rng(4).normal(size=shape), jnp.float32)

    def gradients(impl):
        def loss(x, scale, bias):
            y, _ = F.spectral_batch_norm(
                x,
                scale=scale,
                bias=bias,
                running=_as_statistics(running),
                use_running_average=use_running_average,
                axis=axis,
                spatial_axes=spatial_axes,
                per_frequency=per_frequency,
                fft_norm=fft_norm,
                impl=impl,
            )
            return jnp.sum(y * cotangent)

        return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*args)

    expected = gradients("fft")
    for impl in IMPLS[per_frequency][1:]:
        for name, got, want in zip(("x", "scale", "bias"), gradients(impl), expected, strict=True):
            tol = 3e-5 * max(1.0, float(jnp.abs(want).max()))
            np.testing.assert_allclose(got, want, atol=tol, err_msg=f"{impl}: d/d{name}")


@pytest.mark.parametrize("shape,axis,spatial_axes", LAYOUTS)
@pytest.mark.parametrize("fft_norm", F.FFT_NORMS)
@pytest.mark.parametrize("per_frequency", [False, True])
def test_eval_matches_reference(shape, axis, spatial_axes, fft_norm, per_frequency):
    x, scale, bias, running = _random_case(shape, axis, spatial_axes, per_frequency, seed=1)
    expected, _ = reference_sbn(
        x,
        axis=axis,
        spatial_axes=spatial_axes,
        per_frequency=per_frequency,
        fft_norm=fft_norm,
        scale=scale,
        bias=bias,
        running=running,
    )
    for impl in IMPLS[per_frequency]:
        options = F.SBNOptions(
            axis=axis,
            spatial_axes=spatial_axes,
            per_frequency=per_frequency,
            fft_norm=fft_norm,
            impl=impl,
        )
        y, stats = jitted_sbn(
            jnp.asarray(x, jnp.float32),
            scale=jnp.asarray(scale, jnp.float32),
            bias=jnp.asarray(bias, jnp.float32),
            running=_as_statistics(running),
            use_running_average=True,
            options=options,
        )
        tol = 2e-5 * max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(y, expected, atol=tol, err_msg=impl)
        chex.assert_trees_all_equal(stats, _as_statistics(running))


def _spectrum_moments(spectrum, axis, spatial_axes, per_frequency, ndim):
    _, spatial, batch = reference_layout(ndim, axis, spatial_axes)
    reduce = tuple(batch) if per_frequency else tuple(batch + spatial)
    mean = spectrum.mean(axis=reduce)
    var = (np.abs(spectrum - spectrum.mean(axis=reduce, keepdims=True)) ** 2).mean(axis=reduce)
    return mean, var


@pytest.mark.parametrize("shape,axis,spatial_axes", LAYOUTS[:5])
def test_per_frequency_output_spectrum_has_zero_mean_unit_variance(shape, axis, spatial_axes):
    x, *_ = _random_case(shape, axis, spatial_axes, True, seed=2)
    y, _ = F.spectral_batch_norm(
        jnp.asarray(x, jnp.float32), axis=axis, spatial_axes=spatial_axes, per_frequency=True
    )
    _, spatial, _ = reference_layout(len(shape), axis, spatial_axes)
    spectrum = np.fft.rfftn(np.asarray(y, np.float64), axes=spatial, norm="backward")
    mean, var = _spectrum_moments(spectrum, axis, spatial_axes, True, len(shape))
    # Bins that are real for every example (DC, Nyquist) have no imaginary variance.
    chex.assert_trees_all_close(mean, np.zeros_like(mean), atol=1e-5)
    _, raw_var = _spectrum_moments(
        np.fft.rfftn(x, axes=spatial, norm="backward"), axis, spatial_axes, True, len(shape)
    )
    chex.assert_trees_all_close(var, raw_var / (raw_var + 1e-5), atol=1e-4)


@pytest.mark.parametrize("shape,axis,spatial_axes", LAYOUTS[:5])
def test_channel_normalized_spectrum_has_zero_mean_unit_variance(shape, axis, spatial_axes):
    """Channel statistics normalize the half spectrum exactly; the inverse transform then keeps
    its Hermitian part, which changes only the self-conjugate columns (last-axis bin 0 and,
    for even sizes, n/2): every other bin of the output's spectrum is the normalized one."""
    x, *_ = _random_case(shape, axis, spatial_axes, False, seed=2)
    layout = F.resolve_layout(len(shape), axis, spatial_axes)
    spectrum = jnp.fft.rfftn(jnp.asarray(x, jnp.float32), axes=layout.spatial_axes, norm="backward")
    options = F.SBNOptions(epsilon=0.0)
    stats = F.spectrum_statistics(spectrum, layout, options)
    normalized = np.asarray(
        F.normalize_spectrum(spectrum, stats, None, None, layout, options), np.complex128
    )
    mean, var = _spectrum_moments(normalized, axis, spatial_axes, False, len(shape))
    chex.assert_trees_all_close(mean, np.zeros_like(mean), atol=1e-5)
    chex.assert_trees_all_close(var, np.ones_like(var), atol=1e-4)

    y, _ = F.spectral_batch_norm(
        jnp.asarray(x, jnp.float32), axis=axis, spatial_axes=spatial_axes, epsilon=0.0
    )
    output_spectrum = np.fft.rfftn(
        np.asarray(y, np.float64), axes=layout.spatial_axes, norm="backward"
    )
    last, width = layout.spatial_axes[-1], shape[layout.spatial_axes[-1]]
    paired = np.arange(1, (width + 1) // 2)
    np.testing.assert_allclose(
        np.take(output_spectrum, paired, axis=last),
        np.take(normalized, paired, axis=last),
        atol=1e-4,
    )


def test_channel_statistics_are_an_affine_map_plus_first_row_patterns():
    """y = a x + Re(b) P_r + Im(b) P_i, P_* zero outside the first row (sbn_jax._closed_form)."""
    x, *_ = _random_case((6, 5, 8, 2), -1, None, False, seed=3)
    y, stats = F.spectral_batch_norm(jnp.asarray(x, jnp.float32), impl="fft")
    a = 1.0 / np.sqrt(np.asarray(stats.var, np.float64) + 1e-5)
    residual = np.asarray(y, np.float64) - a * x
    np.testing.assert_allclose(residual[:, 1:], 0.0, atol=2e-5)
    assert np.abs(residual[:, 0]).max() > 1e-3


def test_bfloat16_input_gives_bfloat16_output_close_to_float32():
    x, *_ = _random_case((8, 6, 6, 4), -1, None, False, seed=4)
    for per_frequency in (False, True):
        x32 = jnp.asarray(x, jnp.float32)
        x16 = x32.astype(jnp.bfloat16)
        y16, stats16 = F.spectral_batch_norm(x16, per_frequency=per_frequency)
        y32, _ = F.spectral_batch_norm(x16.astype(jnp.float32), per_frequency=per_frequency)
        chex.assert_type(y16, jnp.bfloat16)
        chex.assert_type([s for s in stats16 if s is not None], jnp.float32)
        np.testing.assert_allclose(y16.astype(jnp.float32), y32, atol=0.05, rtol=0.02)


def test_running_average_update_follows_flax_convention():
    running = F.init_statistics((3,))
    batch = F.Statistics(jnp.ones(3), 2 * jnp.ones(3), 3 * jnp.ones(3))
    updated = F.update_running_statistics(running, batch, momentum=0.9)
    chex.assert_trees_all_close(
        updated, F.Statistics(0.1 * jnp.ones(3), 0.2 * jnp.ones(3), 0.9 + 0.3 * jnp.ones(3))
    )


class FunctionalVariantsTest(chex.TestCase):
    """The core under jit, eagerly and under pmap (one replica per device)."""

    @chex.variants(with_jit=True, without_jit=True, with_pmap=True)
    @parameterized.parameters(False, True)
    def test_variants_match_reference(self, per_frequency):
        x, scale, bias, _ = _random_case((4, 6, 5, 3), -1, None, per_frequency, seed=5)

        @self.variant
        def run(x, scale, bias):
            return F.spectral_batch_norm(x, scale=scale, bias=bias, per_frequency=per_frequency)

        y, stats = run(
            jnp.asarray(x, jnp.float32),
            jnp.asarray(scale, jnp.float32),
            jnp.asarray(bias, jnp.float32),
        )
        expected, (_, var) = reference_sbn(x, per_frequency=per_frequency, scale=scale, bias=bias)
        np.testing.assert_allclose(y, expected, atol=1e-4)
        np.testing.assert_allclose(stats.var, var, rtol=1e-4)


def test_auto_uses_closed_form_for_channel_statistics():
    layout = F.resolve_layout(4)
    assert F.resolve_impl("auto", False, (2, 8, 8, 3), layout) == "closed_form"
    expected = "matmul" if F._use_matmul((2, 8, 8, 3), layout) else "fft"
    assert F.resolve_impl("auto", True, (2, 8, 8, 3), layout) == expected


@pytest.mark.parametrize(
    "ndim,axis,spatial_axes,expected",
    [
        (4, -1, None, (3, (1, 2), (0,))),
        (3, -1, None, (2, (1,), (0,))),
        (5, -1, None, (4, (1, 2, 3), (0,))),
        (4, 1, None, (1, (2, 3), (0,))),
        (5, -1, (3, 2), (4, (2, 3), (0, 1))),
    ],
)
def test_resolve_layout(ndim, axis, spatial_axes, expected):
    layout = F.resolve_layout(ndim, axis, spatial_axes)
    assert (layout.feature_axis, layout.spatial_axes, layout.batch_axes) == expected


def test_statistics_shapes():
    assert F.statistics_shape((2, 8, 6, 5), F.resolve_layout(4), True) == (8, 4, 5)
    assert F.statistics_shape((2, 5, 8, 6), F.resolve_layout(4, 1), True) == (5, 8, 4)
    assert F.statistics_shape((2, 8, 6, 5), F.resolve_layout(4), False) == (5,)


def test_gradients_float64_forward_and_reverse():
    with jax.enable_x64(True):
        x, scale, bias, _ = _random_case((3, 4, 5, 2), -1, None, False, seed=6)
        x, scale, bias = (jnp.asarray(v, jnp.float64) for v in (x, scale, bias))
        for per_frequency in (False, True):
            for impl in IMPLS[per_frequency][:-1]:

                def loss(x, scale, bias, per_frequency=per_frequency, impl=impl):
                    y, _ = F.spectral_batch_norm(
                        x, scale=scale, bias=bias, per_frequency=per_frequency, impl=impl
                    )
                    return jnp.sum(jnp.sin(y))

                # Compiled: eager op-by-op dispatch made this test take 90 s.
                jax.test_util.check_grads(
                    jax.jit(loss), (x, scale, bias), order=2, modes=("fwd", "rev"), eps=1e-4
                )
