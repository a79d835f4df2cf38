"""Tests of sbn_jax.diagnostics: the properties each measure promises."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbn_jax import diagnostics


def _tone(size: int, ky: int, kx: int) -> np.ndarray:
    """A cosine of ``ky`` cycles down and ``kx`` cycles across an ``size x size`` map."""
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return np.cos(2 * np.pi * (ky * rows + kx * cols) / size).astype(np.float32)


class Block(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Conv(self.features, (3, 3))(x)) + x


class Stack(nn.Module):
    depth: int = 11

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (1, 1))(x)
        for i in range(self.depth):
            x = Block(4, name=f"block{i}")(x)
            self.sow("features", f"sown{i}", x)
        return jnp.mean(x, axis=(1, 2))


@pytest.fixture(scope="module")
def stack():
    model = Stack()
    x = jax.random.normal(jax.random.key(0), (3, 8, 8, 2))
    variables = jax.jit(model.init)(jax.random.key(1), x)
    return model, {"params": variables["params"]}, x


@pytest.mark.parametrize("jit", [True, False])
def test_collect_block_outputs_in_call_order(stack, jit):
    model, variables, x = stack
    y, outputs = diagnostics.collect_block_outputs(model, variables, x, capture=[Block], jit=jit)
    assert list(outputs) == [f"block{i}" for i in range(model.depth)]
    np.testing.assert_allclose(y, jnp.mean(outputs["block10"], axis=(1, 2)), rtol=1e-5)
    _, state = model.apply(variables, x, mutable=["features"])
    sown = diagnostics.flatten_collection(state["features"])
    assert list(sown) == [f"sown{i}" for i in range(model.depth)]
    for i in range(model.depth):
        np.testing.assert_allclose(outputs[f"block{i}"], sown[f"sown{i}"], rtol=1e-5)


def test_block_outputs_fn_compiles_once_and_keeps_call_order(stack):
    """Reused over many variables (one checkpoint per epoch), with block11 > block2 > ... kept
    in call order although jit returns dicts with sorted keys."""
    model, variables, x = stack
    traces = []
    run = diagnostics.block_outputs_fn(
        model, capture=lambda module, method: isinstance(module, Block) and not traces.append(1)
    )
    for scale in (1.0, 2.0):
        scaled = jax.tree.map(lambda v, s=scale: v * s, variables)
        _, outputs = run(scaled, x)
        assert list(outputs) == [f"block{i}" for i in range(model.depth)]
        expected = diagnostics.collect_block_outputs(model, scaled, x, capture=[Block])[1]
        for name, value in expected.items():
            np.testing.assert_allclose(outputs[name], value, rtol=1e-6)
    assert len(traces) == model.depth  # One trace of the model for both calls.


def test_flatten_collection_names_repeated_calls():
    tree = {"a": {"__call__": (1.0, 2.0)}, "b": {"inner": {"encode": (3.0,)}}}
    assert diagnostics.flatten_collection(tree) == {"a[0]": 1.0, "a[1]": 2.0, "b/inner/encode": 3.0}


def test_norms_match_direct_computation():
    x = jax.random.normal(jax.random.key(2), (5, 6, 7, 3))
    direct = np.sqrt((np.asarray(x) ** 2).sum(axis=(1, 2, 3)))
    np.testing.assert_allclose(diagnostics.per_example_norm(x), direct, rtol=1e-5)
    np.testing.assert_allclose(diagnostics.feature_norm(x), direct.mean(), rtol=1e-5)
    np.testing.assert_allclose(
        diagnostics.feature_rms(x), np.sqrt(np.mean(np.asarray(x) ** 2)), rtol=1e-5
    )
    assert diagnostics.max_abs(x) == np.abs(np.asarray(x)).max()


def test_growth_factors():
    np.testing.assert_allclose(diagnostics.growth_factors([1.0, 2.0, 8.0]), [2.0, 4.0])
    assert diagnostics.geometric_mean_growth([1.0, 2.0, 8.0]) == pytest.approx(np.sqrt(8.0))


def test_power_spectrum_parseval_and_layouts():
    x = jax.random.normal(jax.random.key(3), (4, 8, 6, 3))
    power = diagnostics.power_spectrum(x)
    assert power.shape == (3, 8, 6)
    np.testing.assert_allclose(
        power.sum(axis=(1, 2)), (np.asarray(x) ** 2).sum(axis=(1, 2)).mean(axis=0), rtol=1e-5
    )
    nchw = diagnostics.power_spectrum(jnp.moveaxis(x, -1, 1), axis=1)
    np.testing.assert_allclose(nchw, power, rtol=1e-6)
    shifted = diagnostics.power_spectrum(x, shift=True)
    np.testing.assert_allclose(shifted[:, 4, 3], power[:, 0, 0], rtol=1e-6)


def test_power_spectrum_rejects_other_ranks():
    with pytest.raises(ValueError, match="4-D"):
        diagnostics.power_spectrum(jnp.ones((2, 8, 3)))


def test_flatness_and_entropy_of_white_and_tonal_spectra():
    flat = jnp.ones((16, 16))
    assert diagnostics.spectral_flatness(flat) == pytest.approx(1.0, abs=1e-6)
    assert diagnostics.spectral_entropy(flat) == pytest.approx(1.0, abs=1e-6)
    tone = diagnostics.power_spectrum(jnp.asarray(_tone(16, 3, 0))[None, :, :, None])[0]
    assert diagnostics.spectral_flatness(tone) < 1e-9
    # A real cosine puts its energy in two bins (+k and -k) of 256: entropy log 2 / log 256.
    assert diagnostics.spectral_entropy(tone) == pytest.approx(1 / 8, abs=1e-5)
    noise = jax.random.normal(jax.random.key(4), (256, 16, 16, 1))
    white = diagnostics.power_spectrum(noise)[0]
    assert diagnostics.spectral_flatness(white) > 0.97
    assert diagnostics.spectral_flatness(white, exclude_dc=True) > 0.97


def test_flatness_exclude_dc_ignores_a_constant():
    noise = jax.random.normal(jax.random.key(5), (256, 16, 16, 1))
    power = diagnostics.power_spectrum(noise + 30.0)[0]
    assert diagnostics.spectral_flatness(power) < 0.5
    assert diagnostics.spectral_flatness(power, exclude_dc=True) > 0.97


@pytest.mark.parametrize(("ky", "kx"), [(0, 1), (3, 0), (0, 5), (4, 3), (2, 7)])
def test_radial_profile_of_a_tone_peaks_at_its_frequency(ky, kx):
    power = diagnostics.power_spectrum(jnp.asarray(_tone(16, ky, kx))[None, :, :, None])
    profile, frequencies = diagnostics.radial_profile(power)
    assert profile.shape == (1, len(frequencies))
    np.testing.assert_allclose(profile.sum(axis=-1), 1.0, rtol=1e-6)
    band = int(np.argmax(profile[0]))
    assert band == round(np.hypot(ky, kx))
    assert frequencies[band] == pytest.approx(band / 16)
    assert profile[0, band] == pytest.approx(1.0, abs=1e-5)


def test_radial_profile_of_white_noise():
    noise = jax.random.normal(jax.random.key(6), (512, 16, 16, 1))
    power = diagnostics.power_spectrum(noise)
    totals, _ = diagnostics.radial_profile(power)
    averages, _ = diagnostics.radial_profile(power, average=True)
    counts = np.bincount(diagnostics.radial_bands(16, 16).ravel())
    np.testing.assert_allclose(totals[0], counts / counts.sum(), atol=0.01)
    np.testing.assert_allclose(averages[0], np.full(len(counts), 1 / len(counts)), atol=0.01)


def test_summarize_shapes_and_values(stack):
    model, variables, x = stack
    _, outputs = diagnostics.collect_block_outputs(model, variables, x, capture=[Block])
    summary = diagnostics.summarize(outputs)
    assert set(summary) == {"norm", "rms", "max_abs", "flatness"}
    for values in summary.values():
        assert values.shape == (model.depth,)
    np.testing.assert_allclose(
        summary["norm"][3], diagnostics.feature_norm(outputs["block3"]), rtol=1e-6
    )
    assert np.all((summary["flatness"] > 0) & (summary["flatness"] <= 1 + 1e-6))


def test_value_percentiles_match_numpy_in_the_papers_order():
    x = jax.random.normal(jax.random.key(3), (4, 5, 6, 7))
    got = diagnostics.value_percentiles(x)
    expected = np.percentile(np.asarray(x, np.float64), diagnostics.PAPER_PERCENTILES)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert float(got[0]) == float(jnp.max(x)) and float(got[-1]) == float(jnp.min(x))
    assert np.all(np.diff(np.asarray(got)) <= 0)
    with pytest.raises(ValueError, match=r"percentiles must lie in \[0, 100\]"):
        diagnostics.value_percentiles(x, (50.0, 101.0))


@pytest.mark.parametrize("axis", [-1, 1])
def test_magnitude_spectra_of_one_example_per_channel(axis):
    x = np.random.default_rng(0).normal(size=(3, 6, 8, 2))
    layout = x if axis == -1 else np.moveaxis(x, -1, 1)
    got = diagnostics.magnitude_spectra(jnp.asarray(layout, jnp.float32), example=1, axis=axis)
    assert got.shape == (2, 6, 8)
    for c in range(2):
        expected = np.fft.fftshift(np.abs(np.fft.fft2(x[1, :, :, c])))
        np.testing.assert_allclose(got[c], expected, rtol=1e-4, atol=1e-4)
    # Zero frequency in the middle: |X[0, 0]| = |sum of the map| after the shift.
    np.testing.assert_allclose(got[0, 3, 4], abs(x[1, :, :, 0].sum()), rtol=1e-4)
    with pytest.raises(ValueError, match="out of range"):
        diagnostics.magnitude_spectra(jnp.asarray(layout, jnp.float32), example=3, axis=axis)
