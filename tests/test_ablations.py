"""The paper's ablations (its Section V) as layer options, against the float64 reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sbn_jax import functional as F
from sbn_jax import linen
from sbn_jax import nnx as sbn_nnx
from tests.reference import reference_sbn

# (shape, axis, spatial_axes): NHWC with odd width, NCHW, 1-D.
LAYOUTS = [((4, 6, 5, 3), -1, None), ((4, 3, 7, 4), 1, None), ((5, 9, 3), -1, None)]
# name -> options; each is one ablation the paper names.
ABLATIONS = {
    "mean_only": dict(divide_by="none"),
    "std_only": dict(use_mean=False),
    "constant_down_scale": dict(use_mean=False, divide_by="constant"),
    "constant_after_mean": dict(divide_by="constant"),
    "affine_only": dict(use_mean=False, divide_by="none"),
    "separate_real_imag": dict(separate_real_imag=True),
}
IMPLS = {False: ("fft", "closed_form", "matmul", "auto"), True: ("fft", "matmul", "auto")}


def _case(shape, axis, spatial_axes, per_frequency, separate, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape) * 2.0 + 0.5
    channels = shape[axis]
    scale, bias = rng.uniform(0.5, 2.0, size=channels), rng.normal(size=channels)
    stats_shape = F.statistics_shape(
        shape, F.resolve_layout(len(shape), axis, spatial_axes), per_frequency
    )
    mean = rng.normal(size=stats_shape) + 1j * rng.normal(size=stats_shape)
    var = rng.uniform(0.5, 3.0, size=stats_shape)
    var = (var, rng.uniform(0.5, 3.0, size=stats_shape)) if separate else var
    return x, scale, bias, (mean, var)


def _statistics(running, separate):
    mean, var = running
    f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    if separate:
        return F.Statistics(f32(mean.real), f32(mean.imag), f32(var[0]), f32(var[1]))
    return F.Statistics(f32(mean.real), f32(mean.imag), f32(var))


def _impls(per_frequency, options):
    separate = options.get("separate_real_imag", False)
    return IMPLS[per_frequency or separate]


@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
@pytest.mark.parametrize("shape,axis,spatial_axes", LAYOUTS)
@pytest.mark.parametrize("fft_norm", F.FFT_NORMS)
@pytest.mark.parametrize("per_frequency", [False, True])
@pytest.mark.parametrize("use_running_average", [False, True])
def test_ablation_matches_reference(
    ablation, shape, axis, spatial_axes, fft_norm, per_frequency, use_running_average
):
    options = ABLATIONS[ablation]
    separate = options.get("separate_real_imag", False)
    x, scale, bias, running = _case(shape, axis, spatial_axes, per_frequency, separate, seed=5)
    expected, (mean, var) = reference_sbn(
        x,
        axis=axis,
        spatial_axes=spatial_axes,
        per_frequency=per_frequency,
        fft_norm=fft_norm,
        scale=scale,
        bias=bias,
        running=running if use_running_average else None,
        **options,
    )
    for impl in _impls(per_frequency, options):
        y, stats = F.spectral_batch_norm(
            jnp.asarray(x, jnp.float32),
            scale=jnp.asarray(scale, jnp.float32),
            bias=jnp.asarray(bias, jnp.float32),
            running=_statistics(running, separate),
            use_running_average=use_running_average,
            axis=axis,
            spatial_axes=spatial_axes,
            per_frequency=per_frequency,
            fft_norm=fft_norm,
            impl=impl,
            **options,
        )
        tol = 2e-5 * max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(y, expected, atol=tol, err_msg=impl)
        if use_running_average:
            continue
        np.testing.assert_allclose(stats.mean_real, mean.real, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(stats.mean_imag, mean.imag, rtol=1e-4, atol=1e-4)
        if separate:
            np.testing.assert_allclose(stats.var, var[0], rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(stats.var_imag, var[1], rtol=1e-4, atol=1e-4)
        else:
            np.testing.assert_allclose(stats.var, var, rtol=1e-4, atol=1e-4)
            assert stats.var_imag is None


@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_ablation_gradients_agree_across_impls(ablation):
    options = ABLATIONS[ablation]
    x, scale, bias, _ = _case((4, 6, 5, 3), -1, None, False, False, seed=6)
    args = tuple(jnp.asarray(v, jnp.float32) for v in (x, scale, bias))
    cotangent = jnp.asarray(np.random.default_rng(7).normal(size=x.shape), jnp.float32)

    def gradients(impl):
        def loss(*args):
            x, scale, bias = args
            y, _ = F.spectral_batch_norm(x, scale=scale, bias=bias, impl=impl, **options)
            return jnp.sum(y * cotangent)

        return jax.grad(loss, argnums=(0, 1, 2))(*args)

    expected = gradients("fft")
    for impl in _impls(False, options)[1:]:
        for got, want in zip(gradients(impl), expected, strict=True):
            np.testing.assert_allclose(got, want, atol=3e-5 * max(1.0, float(jnp.abs(want).max())))


def test_constant_down_scale_is_the_feature_map_times_inverse_sqrt_size():
    """Under "backward", a fixed spectrum down-scale is x * scale / sqrt(H W), exactly."""
    x = jax.random.normal(jax.random.key(0), (4, 8, 6, 3))
    scale = jnp.array([0.5, 1.0, 2.0])
    for impl in IMPLS[False]:
        y, _ = F.spectral_batch_norm(
            x, scale=scale, use_mean=False, divide_by="constant", impl=impl
        )
        np.testing.assert_allclose(y, x * scale / np.sqrt(48), atol=1e-6, err_msg=impl)


def test_separate_real_imag_gives_unit_variance_to_each_part():
    """Checked on the normalized spectrum: the inverse drops the imaginary DC/Nyquist parts."""
    x = jnp.asarray(np.random.default_rng(8).normal(size=(16, 8, 8, 2)) * 3.0, jnp.float32)
    layout = F.resolve_layout(4)
    spectrum = jnp.fft.rfftn(x, axes=(1, 2))
    options = F.SBNOptions(separate_real_imag=True, epsilon=0.0)
    stats = F.spectrum_statistics(spectrum, layout, options)
    normalized = F.normalize_spectrum(spectrum, stats, None, None, layout, options)
    for part in (jnp.real(normalized), jnp.imag(normalized)):
        part = np.asarray(part, np.float64)
        np.testing.assert_allclose(part.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
        np.testing.assert_allclose((part**2).mean(axis=(0, 1, 2)), 1.0, rtol=1e-5)


def test_linen_and_nnx_keep_the_imaginary_variance_and_agree():
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3)) * 2.0
    module = linen.SpectralBatchNorm(separate_real_imag=True)
    variables = module.init(jax.random.key(2), x, use_running_average=False)
    assert set(variables["batch_stats"]) == {"mean_real", "mean_imag", "var", "var_imag"}
    y, updated = module.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
    twin = sbn_nnx.SpectralBatchNorm(3, separate_real_imag=True, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(twin(x), y, atol=1e-6)
    _, batch = F.spectral_batch_norm(x, separate_real_imag=True)
    for name in ("var", "var_imag"):
        expected = 0.99 * 1.0 + 0.01 * getattr(batch, name)
        np.testing.assert_allclose(updated["batch_stats"][name], expected, rtol=1e-6)
        np.testing.assert_allclose(getattr(twin, name)[...], expected, rtol=1e-6)
    # Eval uses both running variances.
    twin.eval()
    np.testing.assert_allclose(
        twin(x), module.apply({**variables, **updated}, x, use_running_average=True), atol=1e-6
    )


@pytest.mark.parametrize("ablation", ["mean_only", "std_only", "constant_down_scale"])
def test_linen_and_nnx_take_the_ablation_options(ablation):
    options = ABLATIONS[ablation]
    x = jax.random.normal(jax.random.key(3), (4, 8, 8, 3)) + 1.0
    expected, _ = F.spectral_batch_norm(x, **options)
    module = linen.SpectralBatchNorm(use_running_average=False, **options)
    y, _ = module.apply(module.init(jax.random.key(0), x), x, mutable=["batch_stats"])
    np.testing.assert_allclose(y, expected, atol=1e-6)
    np.testing.assert_allclose(
        sbn_nnx.SpectralBatchNorm(3, rngs=nnx.Rngs(0), **options)(x), expected, atol=1e-6
    )


def test_batch_norm_before_sbn_keeps_its_bias_when_sbn_keeps_the_mean():
    """Per frequency, SBN subtracts the DC mean and the BN bias is redundant; without it, not."""
    assert F.batch_norm_affine_before_sbn(True, True, True) == (False, False)
    assert F.batch_norm_affine_before_sbn(True, True, True, use_mean=False) == (False, True)
    module = linen.SpatialSpectralBatchNorm(
        use_running_average=False, per_frequency=True, use_mean=False, divide_by="none"
    )
    x = jnp.ones((2, 4, 4, 3))
    params = module.init(jax.random.key(0), x)["params"]
    assert "bias" in params["BatchNorm_0"]
    twin = sbn_nnx.SpatialSpectralBatchNorm(
        3, per_frequency=True, use_mean=False, spatial_shape=(4, 4), rngs=nnx.Rngs(0)
    )
    assert twin.batch_norm.bias is not None


@pytest.mark.parametrize(
    "options,message",
    [
        (dict(divide_by="variance"), "divide_by must be one of"),
        (dict(separate_real_imag=True, divide_by="none"), 'needs divide_by="std"'),
        (dict(separate_real_imag=True, impl="closed_form"), "joint channel statistics only"),
    ],
)
def test_bad_ablation_options_are_refused(options, message):
    x = jnp.ones((2, 4, 4, 3))
    with pytest.raises(ValueError, match=message):
        F.spectral_batch_norm(x, **options)
    if "impl" not in options:
        with pytest.raises(ValueError, match=message):
            sbn_nnx.SpectralBatchNorm(3, rngs=nnx.Rngs(0), **options)


def test_running_statistics_must_match_separate_real_imag():
    x = jnp.ones((2, 4, 4, 3))
    with pytest.raises(ValueError, match="needs running statistics with var_imag"):
        F.spectral_batch_norm(
            x, running=F.init_statistics((3,)), use_running_average=True, separate_real_imag=True
        )
    with pytest.raises(ValueError, match="without var_imag"):
        F.spectral_batch_norm(x, running=F.init_statistics((3,), True), use_running_average=True)


@pytest.mark.parametrize(
    "per_frequency,impl", [(False, "closed_form"), (False, "fft"), (True, "fft")]
)
def test_without_gradient_through_statistics_the_statistics_are_constants(per_frequency, impl):
    """Same output; the gradient is that of normalizing with the batch's statistics held fixed,
    which differs from the full gradient (float64, so that the comparison is tight)."""
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(3).normal(size=(6, 5, 4, 2)) + 0.3, jnp.float64)
        weights = jnp.asarray(np.random.default_rng(4).normal(size=x.shape))
        options = F.SBNOptions(per_frequency=per_frequency, impl=impl)
        _, batch = F.spectral_batch_norm(x, options=options)

        def loss(x, running, use_running_average, gradient_through_statistics):
            y, _ = F.spectral_batch_norm(
                x,
                running=running,
                use_running_average=use_running_average,
                options=options,
                gradient_through_statistics=gradient_through_statistics,
            )
            return jnp.sum(weights * y)

        # Compiled, one program per variant: eager dispatch in float64 took ~60 s in the suite.
        value_and_grad = jax.jit(jax.value_and_grad(loss), static_argnums=(2, 3))
        _, fixed = value_and_grad(x, batch, True, True)
        no_stats_loss, no_stats = value_and_grad(x, None, False, False)
        full_loss, full = value_and_grad(x, None, False, True)
        np.testing.assert_allclose(no_stats, fixed, rtol=1e-12, atol=1e-12)
        assert np.max(np.abs(full - no_stats)) > 1e-3 * np.max(np.abs(full))
        np.testing.assert_allclose(no_stats_loss, full_loss, rtol=1e-14)
