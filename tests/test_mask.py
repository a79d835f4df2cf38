"""``mask=``: batch statistics from the selected examples only, equal to those of the sliced batch.

The reference is the float64 statistics of ``x[selected]`` (the layer itself on the
sliced batch; tests/test_functional.py checks those against NumPy formulas), so a mask
must change nothing but which examples the statistics and running averages see.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import sbn_jax
from sbn_jax import functional as F
from sbn_jax import nnx as sbn_nnx

SELECTED = np.array([True, False, True, True, False, False, True, True])
# (shape, axis, spatial_axes, the mask's shape) for NHWC, NCHW and two batch axes (B, T, H, W, C).
LAYOUTS = [
    ((8, 6, 5, 3), -1, None, (8, 1, 1, 1)),
    ((8, 3, 6, 5), 1, None, (8, 1, 1, 1)),
    ((8, 2, 5, 4, 3), -1, (2, 3), (8, 1, 1, 1, 1)),
]
CASES = [(False, "closed_form"), (False, "fft"), (False, "matmul"), (True, "fft"), (True, "matmul")]
# Compiled, one program per call: eager dispatch compiles every operation at every new shape.
jitted_sbn = jax.jit(F.spectral_batch_norm, static_argnames=("options", "use_running_average"))


@pytest.fixture
def x64():
    """float64 for the comparisons with the sliced batch at 1e-10."""
    with jax.enable_x64(True):
        yield


def _x(shape, seed=0, dtype=jnp.float64, selected=SELECTED):
    rng = np.random.default_rng(seed)
    # Unselected examples far from the rest: a statistic that saw them would be far off.
    x = rng.normal(size=shape) + 0.5
    x[~selected] = 100.0 * rng.normal(size=x[~selected].shape) - 40.0
    return jnp.asarray(x, dtype)


@pytest.mark.parametrize("per_frequency,impl", CASES)
@pytest.mark.parametrize("shape,axis,spatial_axes,mask_shape", LAYOUTS)
def test_masked_statistics_are_those_of_the_sliced_batch(
    shape, axis, spatial_axes, mask_shape, per_frequency, impl, x64
):
    x = _x(shape)
    mask = SELECTED.reshape(mask_shape)
    options = F.SBNOptions(
        axis=axis, spatial_axes=spatial_axes, per_frequency=per_frequency, impl=impl, epsilon=0.0
    )
    scale, bias = jnp.linspace(0.5, 2.0, 3), jnp.linspace(-1.0, 1.0, 3)
    y, stats = jitted_sbn(x, scale=scale, bias=bias, mask=mask, options=options)
    _, expected = jitted_sbn(x[SELECTED], options=options)
    for name in ("mean_real", "mean_imag", "var"):
        np.testing.assert_allclose(
            getattr(stats, name), getattr(expected, name), rtol=1e-10, atol=1e-10, err_msg=name
        )
    # Every example, selected or not, is normalized with those statistics.
    with_expected, _ = jitted_sbn(
        x, scale=scale, bias=bias, running=expected, use_running_average=True, options=options
    )
    np.testing.assert_allclose(y, with_expected, rtol=1e-10, atol=1e-9)


def test_masked_separate_real_imag_variances_are_those_of_the_sliced_batch(x64):
    x = _x((8, 6, 5, 3))
    options = F.SBNOptions(separate_real_imag=True, per_frequency=True)
    _, stats = F.spectral_batch_norm(x, mask=SELECTED.reshape(8, 1, 1, 1), options=options)
    _, expected = F.spectral_batch_norm(x[SELECTED], options=options)
    np.testing.assert_allclose(stats.var_imag, expected.var_imag, rtol=1e-10)
    np.testing.assert_allclose(stats.var, expected.var, rtol=1e-10)


def test_a_mask_along_the_second_batch_axis_selects_those_entries(x64):
    """With batch axes (B, T), a (B, T, 1, 1, 1) mask selects (example, time) pairs."""
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 3, 5, 4, 2)), jnp.float64)
    mask = np.random.default_rng(2).random((4, 3)) < 0.5
    mask[0, 0] = True
    options = F.SBNOptions(spatial_axes=(2, 3), per_frequency=True)
    _, stats = F.spectral_batch_norm(x, mask=mask[..., None, None, None], options=options)
    # The selected pairs as one batch axis: (selected, 1, H, W, C).
    _, expected = F.spectral_batch_norm(x[mask][:, None], options=options)
    np.testing.assert_allclose(stats.var, expected.var, rtol=1e-10)
    np.testing.assert_allclose(stats.mean_real, expected.mean_real, rtol=1e-10, atol=1e-12)


def test_an_all_true_mask_changes_nothing_and_a_broadcast_one_is_accepted():
    x = _x((8, 6, 5, 3), dtype=jnp.float32)
    y, stats = F.spectral_batch_norm(x)
    for mask in (np.ones((8, 1, 1, 1), bool), np.ones((1, 1, 1, 1), bool), np.ones((1,), bool)):
        y_masked, stats_masked = F.spectral_batch_norm(x, mask=mask)
        np.testing.assert_allclose(y_masked, y, rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(stats_masked.var, stats.var, rtol=1e-6)


def test_a_traced_mask_works_under_jit(x64):
    x = _x((8, 6, 5, 3))
    options = F.SBNOptions(per_frequency=True)
    run = jax.jit(lambda x, m: F.spectral_batch_norm(x, mask=m, options=options)[1])
    stats = run(x, SELECTED.reshape(8, 1, 1, 1))
    _, expected = F.spectral_batch_norm(x[SELECTED], options=options)
    np.testing.assert_allclose(stats.var, expected.var, rtol=1e-10)


def _linen_train(module, x, mask=None):
    variables = module.init(jax.random.key(0), x, use_running_average=False)
    for _ in range(2):
        _, updates = module.apply(
            variables, x, use_running_average=False, mask=mask, mutable=["batch_stats"]
        )
        variables = {**variables, **updates}
    return variables["batch_stats"]


@pytest.mark.parametrize("cls", [sbn_jax.SpectralBatchNorm, sbn_jax.SpatialSpectralBatchNorm])
@pytest.mark.parametrize("per_frequency", [False, True])
def test_linen_running_averages_see_the_selected_examples_only(cls, per_frequency):
    x = _x((8, 6, 5, 3), dtype=jnp.float32)
    module = cls(per_frequency=per_frequency, momentum=0.5)
    masked = _linen_train(module, x, SELECTED.reshape(8, 1, 1, 1))
    sliced = _linen_train(module, x[SELECTED])
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-5), masked, sliced
    )


@pytest.mark.parametrize("pair", [False, True])
def test_nnx_running_averages_see_the_selected_examples_only(pair):
    x = _x((8, 6, 5, 3), dtype=jnp.float32)
    cls = sbn_nnx.SpatialSpectralBatchNorm if pair else sbn_nnx.SpectralBatchNorm

    def trained(x, mask=None):
        model = cls(3, per_frequency=True, spatial_shape=(6, 5), momentum=0.5, rngs=nnx.Rngs(0))
        for _ in range(2):
            model(x, mask=mask)
        return nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))

    masked, sliced = trained(x, SELECTED.reshape(8, 1, 1, 1)), trained(x[SELECTED])
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-5), masked, sliced
    )


@pytest.mark.parametrize("per_frequency,impl", [(False, "closed_form"), (True, "fft")])
def test_pmap_with_a_mask_equals_the_sliced_batch_on_one_device(per_frequency, impl):
    """Each device holds 2 examples and selects 0, 1 or 2 of them: global counts, not a mean of
    per-device means."""
    selected = np.concatenate([SELECTED, ~SELECTED])
    x = _x((16, 6, 5, 3), dtype=jnp.float32, selected=selected)
    options = F.SBNOptions(per_frequency=per_frequency, impl=impl, axis_name="batch")

    def stats(x, mask):
        return F.spectral_batch_norm(x, mask=mask, options=options)[1]

    per_device = jax.pmap(stats, axis_name="batch")(
        x.reshape(8, 2, 6, 5, 3), selected.reshape(8, 2, 1, 1, 1)
    )
    local = F.SBNOptions(per_frequency=per_frequency, impl=impl)
    _, expected = F.spectral_batch_norm(x[selected], options=local)
    for name in ("mean_real", "mean_imag", "var"):
        for device in range(8):
            np.testing.assert_allclose(
                getattr(per_device, name)[device], getattr(expected, name), rtol=1e-5, atol=1e-6
            )


def test_sharded_jit_with_a_mask_equals_the_sliced_batch():
    selected = np.concatenate([SELECTED, ~SELECTED])
    x = _x((16, 6, 5, 3), dtype=jnp.float32, selected=selected)
    mesh = Mesh(np.array(jax.devices()[:8]), ("batch",))
    shard = functools.partial(jax.device_put, device=NamedSharding(mesh, P("batch")))
    options = F.SBNOptions(per_frequency=True)
    run = jax.jit(lambda x, m: F.spectral_batch_norm(x, mask=m, options=options)[1])
    stats = run(shard(x), shard(jnp.asarray(selected.reshape(16, 1, 1, 1))))
    _, expected = F.spectral_batch_norm(x[selected], options=options)
    np.testing.assert_allclose(stats.var, expected.var, rtol=1e-5)
    np.testing.assert_allclose(stats.mean_real, expected.mean_real, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "mask,error,message",
    [
        (np.ones((8, 1, 1, 1), np.float32), TypeError, r"mask must be a boolean array"),
        (np.ones((8, 6, 1, 1), bool), ValueError, r"varies along axes \(1,\).*size 1 on every"),
        (np.ones((3,), bool), ValueError, r"varies along axes \(3,\).*e\.g\. shape \(8, 1, 1, 1\)"),
        (np.ones((8,), bool), ValueError, r"does not broadcast.*e\.g\. shape \(8, 1, 1, 1\)"),
        (np.ones((7, 1, 1, 1), bool), ValueError, r"does not broadcast to x of shape"),
        (np.ones((2, 8, 1, 1, 1), bool), ValueError, r"does not broadcast to x of shape"),
        (np.zeros((8, 1, 1, 1), bool), ValueError, r"mask selects no example"),
    ],
    ids=["float", "spatial", "feature", "batch-as-features", "size", "rank", "empty"],
)
@pytest.mark.parametrize("entry", ["functional", "linen", "linen-pair", "nnx-pair"])
def test_a_mask_that_does_not_select_examples_is_refused(entry, mask, error, message):
    x = _x((8, 6, 5, 3), dtype=jnp.float32)
    with pytest.raises(error, match=message):
        if entry == "functional":
            F.spectral_batch_norm(x, mask=mask)
        elif entry.startswith("linen"):
            pair = entry == "linen-pair"
            _linen_train(
                (sbn_jax.SpatialSpectralBatchNorm if pair else sbn_jax.SpectralBatchNorm)(), x, mask
            )
        else:
            sbn_nnx.SpatialSpectralBatchNorm(3, rngs=nnx.Rngs(0))(x, mask=mask)
