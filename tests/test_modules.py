"""The linen and NNX modules: variables, running statistics, train/eval, agreement."""

import chex
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import sbn_jax
from sbn_jax import functional as F
from sbn_jax import nnx as sbn_nnx
from tests.reference import reference_sbn


def _batches(k, shape=(6, 6, 5, 3), seed=0):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.normal(size=shape) * (i + 1) + i, jnp.float32) for i in range(k)]


@pytest.mark.parametrize("per_frequency", [False, True])
def test_linen_variables_start_at_zero_zero_one_with_right_shapes(per_frequency):
    x = _batches(1)[0]
    variables = sbn_jax.SpectralBatchNorm(
        use_running_average=False, per_frequency=per_frequency
    ).init(jax.random.key(0), x)
    stats = variables["batch_stats"]
    shape = (6, 3, 3) if per_frequency else (3,)
    chex.assert_shape([stats["mean_real"], stats["mean_imag"], stats["var"]], shape)
    chex.assert_type([stats["mean_real"], stats["mean_imag"], stats["var"]], jnp.float32)
    chex.assert_trees_all_equal(
        dict(stats),
        {"mean_real": jnp.zeros(shape), "mean_imag": jnp.zeros(shape), "var": jnp.ones(shape)},
    )
    chex.assert_shape([variables["params"]["scale"], variables["params"]["bias"]], (3,))


def test_linen_init_accepts_a_single_example_in_training_mode():
    module = sbn_jax.SpectralBatchNorm(use_running_average=False, per_frequency=True)
    variables = module.init(jax.random.key(0), jnp.ones((1, 4, 4, 2)))
    chex.assert_trees_all_equal(variables["batch_stats"]["var"], jnp.ones((4, 3, 2)))


@pytest.mark.parametrize("per_frequency", [False, True])
def test_linen_running_statistics_equal_closed_form_ema(per_frequency):
    momentum, batches = 0.8, _batches(4)
    module = sbn_jax.SpectralBatchNorm(per_frequency=per_frequency, momentum=momentum)
    variables = module.init(jax.random.key(0), batches[0], use_running_average=False)
    for x in batches:
        _, updates = module.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
        variables = {**variables, **updates}

    k = len(batches)
    mean, var = np.zeros(()), np.ones(())
    mean = momentum**k * mean
    var = momentum**k * var
    for j, x in enumerate(batches):
        _, (batch_mean, batch_var) = reference_sbn(x, per_frequency=per_frequency)
        weight = (1 - momentum) * momentum ** (k - 1 - j)
        mean = mean + weight * batch_mean
        var = var + weight * batch_var
    stats = variables["batch_stats"]
    np.testing.assert_allclose(stats["mean_real"], mean.real, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats["mean_imag"], mean.imag, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats["var"], var, rtol=1e-4)

    x = batches[-1]
    y = module.apply(variables, x, use_running_average=True)
    expected, _ = reference_sbn(x, per_frequency=per_frequency, running=(mean, var))
    np.testing.assert_allclose(y, expected, atol=2e-5 * max(1, np.abs(expected).max()))


def test_linen_eval_does_not_touch_statistics_and_training_does():
    x = _batches(1)[0]
    module = sbn_jax.SpectralBatchNorm()
    variables = module.init(jax.random.key(0), x, use_running_average=False)
    _, updates = module.apply(variables, x, use_running_average=True, mutable=["batch_stats"])
    chex.assert_trees_all_equal(updates["batch_stats"], variables["batch_stats"])
    _, updates = module.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
    assert not np.allclose(updates["batch_stats"]["var"], variables["batch_stats"]["var"])
    with pytest.raises(ValueError, match="use_running_average"):
        sbn_jax.SpectralBatchNorm(use_running_average=True).apply(
            variables, x, use_running_average=False
        )


def test_linen_use_scale_and_use_bias_off_have_no_params():
    x = _batches(1)[0]
    variables = sbn_jax.SpectralBatchNorm(use_scale=False, use_bias=False).init(
        jax.random.key(0), x, use_running_average=True
    )
    assert "params" not in variables


def test_linen_dtype_and_param_dtype():
    x = _batches(1)[0].astype(jnp.bfloat16)
    module = sbn_jax.SpectralBatchNorm(dtype=jnp.float32, param_dtype=jnp.bfloat16)
    variables = module.init(jax.random.key(0), x, use_running_average=True)
    chex.assert_type(variables["params"]["scale"], jnp.bfloat16)
    chex.assert_type(variables["batch_stats"]["var"], jnp.float32)
    y, updates = module.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
    chex.assert_type(y, jnp.float32)
    chex.assert_type(updates["batch_stats"]["var"], jnp.float32)


@pytest.mark.parametrize("per_frequency", [False, True])
def test_spatial_spectral_batch_norm_is_batch_norm_then_sbn(per_frequency):
    x = _batches(1)[0]
    module = sbn_jax.SpatialSpectralBatchNorm(momentum=0.9, per_frequency=per_frequency)
    variables = module.init(jax.random.key(0), x, use_running_average=False)
    variables = jax.tree.map(lambda v: v + 0.3, variables)  # A generic point, not the init.
    y, updates = module.apply(variables, x, use_running_average=False, mutable=["batch_stats"])

    # The BatchNorm keeps its bias with channel statistics and nothing with per-frequency ones.
    bn_params = variables["params"].get("BatchNorm_0", {})
    assert set(bn_params) == (set() if per_frequency else {"bias"})
    bn = nn.BatchNorm(momentum=0.9, use_scale=False, use_bias=not per_frequency)
    bn_vars = {"params": bn_params, "batch_stats": variables["batch_stats"]["BatchNorm_0"]}
    h, bn_updates = bn.apply(bn_vars, x, use_running_average=False, mutable=["batch_stats"])
    sbn = variables["params"]["SpectralBatchNorm_0"]
    expected, _ = reference_sbn(
        h, per_frequency=per_frequency, scale=np.asarray(sbn["scale"]), bias=np.asarray(sbn["bias"])
    )
    np.testing.assert_allclose(y, expected, atol=2e-5)
    chex.assert_trees_all_close(updates["batch_stats"]["BatchNorm_0"], bn_updates["batch_stats"])
    assert set(updates["batch_stats"]["SpectralBatchNorm_0"]) == {"mean_real", "mean_imag", "var"}


@pytest.mark.parametrize("per_frequency", [False, True])
def test_nnx_agrees_with_linen(per_frequency):
    batches = _batches(3)
    linen = sbn_jax.SpectralBatchNorm(per_frequency=per_frequency)
    variables = linen.init(jax.random.key(0), batches[0], use_running_average=False)
    model = sbn_nnx.SpectralBatchNorm(
        3, per_frequency=per_frequency, spatial_shape=(6, 5), rngs=nnx.Rngs(0)
    )
    for x in batches:
        y_linen, updates = linen.apply(
            variables, x, use_running_average=False, mutable=["batch_stats"]
        )
        variables = {**variables, **updates}
        np.testing.assert_allclose(model(x), y_linen, atol=1e-6)
    stats = variables["batch_stats"]
    for name in ("mean_real", "mean_imag", "var"):
        np.testing.assert_allclose(getattr(model, name)[...], stats[name], rtol=1e-6, atol=1e-7)
    model.eval()
    assert model.use_running_average
    np.testing.assert_allclose(
        model(batches[0]), linen.apply(variables, batches[0], use_running_average=True), atol=1e-6
    )


def _sbn_training_output(x, per_frequency, channel_scale=1.0, channel_shift=0.0):
    # A tiny epsilon: the invariances are exact only where epsilon is negligible.
    y, _ = F.spectral_batch_norm(
        x * channel_scale + channel_shift, per_frequency=per_frequency, impl="fft", epsilon=1e-12
    )
    return y


@pytest.mark.parametrize("per_frequency", [False, True])
def test_sbn_ignores_a_positive_scaling_of_each_channel(per_frequency):
    x = _batches(1, shape=(8, 6, 5, 3))[0]
    g = jnp.asarray([0.5, 2.0, 7.0])
    np.testing.assert_allclose(
        _sbn_training_output(x, per_frequency, channel_scale=g),
        _sbn_training_output(x, per_frequency),
        atol=2e-5,
    )


def test_per_frequency_sbn_ignores_a_shift_of_each_channel_but_channel_sbn_does_not():
    x = _batches(1, shape=(8, 6, 5, 3))[0]
    c = jnp.asarray([-1.0, 0.5, 3.0])
    np.testing.assert_allclose(
        _sbn_training_output(x, True, channel_shift=c), _sbn_training_output(x, True), atol=2e-5
    )
    moved = _sbn_training_output(x, False, channel_shift=c) - _sbn_training_output(x, False)
    assert float(jnp.min(jnp.max(jnp.abs(moved), axis=(0, 1, 2)))) > 0.05


@pytest.mark.parametrize("per_frequency", [False, True])
def test_every_parameter_of_batch_norm_then_sbn_changes_its_output(per_frequency):
    """Regression (flat directions): a parameter the output ignores gets a rounding-noise gradient.

    With the BatchNorm's scale (and, per frequency, bias) kept, their directional
    derivative is 0 up to epsilon and rounding, and float32 training random-walks
    them; every parameter left must move the training-mode output.
    """
    x = _batches(1, shape=(8, 6, 5, 3))[0]
    module = sbn_jax.SpatialSpectralBatchNorm(per_frequency=per_frequency)
    variables = module.init(jax.random.key(0), x, use_running_average=False)
    params = jax.tree.map(lambda p: p + 0.3, variables["params"])

    def output(params):
        y, _ = module.apply(
            {**variables, "params": params}, x, use_running_average=False, mutable=["batch_stats"]
        )
        return y

    flat = flax.traverse_util.flatten_dict(params)
    direction = jnp.asarray([1.0, -0.7, 0.4])
    # One leaf at a time, and the BatchNorm's whole affine map scaled with itself (with channel
    # statistics SBN ignores a joint scaling of the BatchNorm's scale and bias).
    tangents = {
        "/".join(path): {p: direction if p == path else jnp.zeros_like(v) for p, v in flat.items()}
        for path in flat
    }
    if any(p[0] == "BatchNorm_0" for p in flat):
        tangents["BatchNorm_0 scaled"] = {
            p: v if p[0] == "BatchNorm_0" else jnp.zeros_like(v) for p, v in flat.items()
        }
    for name, tangent in tangents.items():
        _, change = jax.jvp(output, (params,), (flax.traverse_util.unflatten_dict(tangent),))
        rms = float(jnp.sqrt(jnp.mean(change**2)))
        assert rms > 1e-2, f"{name} barely moves the output: rms change {rms:.1e}"


def test_redundant_affine_keeps_the_papers_parameters_and_computes_the_same_function():
    x = _batches(1, shape=(8, 6, 5, 3))[0]
    literal = sbn_jax.SpatialSpectralBatchNorm(redundant_affine=True)
    variables = literal.init(jax.random.key(0), x, use_running_average=False)
    assert set(variables["params"]["BatchNorm_0"]) == {"scale", "bias"}
    g, b = jnp.asarray([0.5, 2.0, 1.5]), jnp.asarray([0.2, -0.4, 1.0])
    params = {
        "BatchNorm_0": {"scale": g, "bias": b},
        "SpectralBatchNorm_0": {"scale": jnp.asarray([1.0, -2.0, 0.5]), "bias": b},
    }
    y_literal, _ = literal.apply(
        {**variables, "params": params}, x, use_running_average=False, mutable=["batch_stats"]
    )
    # A BatchNorm scale g > 0 and bias b act as a bias b / g when SBN follows.
    lean = sbn_jax.SpatialSpectralBatchNorm()
    lean_params = {
        "BatchNorm_0": {"bias": b / g},
        "SpectralBatchNorm_0": params["SpectralBatchNorm_0"],
    }
    y_lean, _ = lean.apply(
        {**variables, "params": lean_params}, x, use_running_average=False, mutable=["batch_stats"]
    )
    np.testing.assert_allclose(y_literal, y_lean, atol=1e-4)


@pytest.mark.parametrize("per_frequency", [False, True])
def test_nnx_batch_norm_then_sbn_has_the_linen_parameters(per_frequency):
    x = _batches(1)[0]
    linen = sbn_jax.SpatialSpectralBatchNorm(per_frequency=per_frequency)
    variables = linen.init(jax.random.key(0), x, use_running_average=False)
    spectral = {"per_frequency": per_frequency, "spatial_shape": (6, 5)} if per_frequency else {}
    model = sbn_nnx.SpatialSpectralBatchNorm(3, rngs=nnx.Rngs(0), **spectral)
    _, params, _ = nnx.split(model, nnx.Param, ...)
    nnx_names = {"/".join(map(str, path)) for path, _ in nnx.to_flat_state(params)}
    submodule = {"BatchNorm_0": "batch_norm", "SpectralBatchNorm_0": "spectral_batch_norm"}
    linen_names = {
        f"{submodule[layer]}/{name}"
        for layer, name in flax.traverse_util.flatten_dict(variables["params"])
    }
    assert nnx_names == linen_names
    np.testing.assert_allclose(
        model(x),
        linen.apply(variables, x, use_running_average=False, mutable=["batch_stats"])[0],
        atol=1e-6,
    )


def test_nnx_split_exposes_statistics_and_eval_keeps_them():
    model = sbn_nnx.SpatialSpectralBatchNorm(3, rngs=nnx.Rngs(0))
    _, stats, _ = nnx.split(model, nnx.BatchStat, ...)
    flat = {"/".join(map(str, path)) for path, _ in nnx.to_flat_state(stats)}
    assert flat == {
        "batch_norm/mean",
        "batch_norm/var",
        "spectral_batch_norm/mean_real",
        "spectral_batch_norm/mean_imag",
        "spectral_batch_norm/var",
    }
    model.eval()
    before = nnx.state(model, nnx.BatchStat)
    model(_batches(1)[0])
    chex.assert_trees_all_equal(nnx.state(model, nnx.BatchStat), before)


def test_nnx_train_step_under_jit_updates_statistics():
    model = sbn_nnx.SpectralBatchNorm(3, per_frequency=True, spatial_shape=(6, 5), rngs=nnx.Rngs(0))

    @nnx.jit
    def step(model, x):
        def loss(model):
            return jnp.mean(model(x) ** 2)

        return nnx.grad(loss)(model)

    grads = step(model, _batches(1)[0])
    assert not np.allclose(model.var[...], 1.0)
    chex.assert_shape(grads.scale[...], (3,))


def test_nnx_per_frequency_needs_spatial_shape():
    with pytest.raises(ValueError, match="spatial_shape"):
        sbn_nnx.SpectralBatchNorm(3, per_frequency=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="input_ndim"):
        sbn_nnx.SpectralBatchNorm(
            3, per_frequency=True, spatial_shape=(4, 4), spatial_axes=(2, 3), rngs=nnx.Rngs(0)
        )
    model = sbn_nnx.SpectralBatchNorm(
        3,
        per_frequency=True,
        spatial_shape=(4, 4),
        spatial_axes=(2, 3),
        input_ndim=5,
        rngs=nnx.Rngs(0),
    )
    chex.assert_shape(model.var[...], (4, 3, 3))
    chex.assert_shape(
        model(jnp.ones((2, 2, 4, 4, 3)) + _batches(1, (2, 2, 4, 4, 3))[0]), (2, 2, 4, 4, 3)
    )


def test_statistics_helper_shapes_match_functional():
    layout = F.resolve_layout(4, 1)
    assert F.statistics_shape((2, 3, 8, 8), layout, True) == (3, 8, 5)


def algorithm_1_running_statistics(batches, momentum_lambda):
    """The paper's Algorithm 1, transcribed in float64 for NCHW inputs (B, C, H, W).

    Per channel over batch and the half spectrum: complex mean and biased variance;
    ``mu_r = l * mu + (1 - l) * mu_r`` and ``var_r = l * var * n / (n - 1) + (1 - l) * var_r``
    with ``n = C * H * W / 2`` as the paper writes it; start at 0 and 1.
    """
    _, channels, height, width = batches[0].shape
    n = channels * height * width / 2
    mean_r, var_r = np.zeros(channels, np.complex128), np.ones(channels)
    for x in batches:
        spectrum = np.fft.rfft2(np.asarray(x, np.float64))  # "backward", the paper's Eq. (1).
        mean = spectrum.mean(axis=(0, 2, 3))
        var = (np.abs(spectrum - mean[None, :, None, None]) ** 2).mean(axis=(0, 2, 3))
        mean_r = momentum_lambda * mean + (1 - momentum_lambda) * mean_r
        var_r = momentum_lambda * var * n / (n - 1) + (1 - momentum_lambda) * var_r
    return mean_r, var_r


def test_paper_running_variance_follows_algorithm_1():
    batches = _batches(3, shape=(4, 3, 6, 5))  # NCHW
    module = sbn_jax.SpectralBatchNorm(axis=1, momentum=0.9, running_variance="paper")
    variables = module.init(jax.random.key(0), batches[0], use_running_average=False)
    for x in batches:
        _, updates = module.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
        variables = {**variables, **updates}
    mean_r, var_r = algorithm_1_running_statistics(batches, momentum_lambda=0.1)
    stats = variables["batch_stats"]
    np.testing.assert_allclose(stats["mean_real"], mean_r.real, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(stats["mean_imag"], mean_r.imag, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(stats["var"], var_r, rtol=1e-5)
    # The default keeps the biased batch variance: smaller by the paper's factor in each update.
    biased = sbn_jax.SpectralBatchNorm(axis=1, momentum=0.9)
    _, updates = biased.apply(
        module.init(jax.random.key(0), batches[0], use_running_average=False),
        batches[0],
        use_running_average=False,
        mutable=["batch_stats"],
    )
    n = 3 * 6 * 5 / 2
    _, first = algorithm_1_running_statistics(batches[:1], momentum_lambda=0.1)
    np.testing.assert_allclose(
        updates["batch_stats"]["var"], (first - 0.9) * (n - 1) / n + 0.9, rtol=1e-5
    )


def test_paper_running_variance_nnx_agrees_and_refuses_per_frequency():
    batches = _batches(2, shape=(4, 3, 6, 5))
    linen = sbn_jax.SpectralBatchNorm(axis=1, momentum=0.9, running_variance="paper")
    variables = linen.init(jax.random.key(0), batches[0], use_running_average=False)
    model = sbn_nnx.SpectralBatchNorm(
        3, axis=1, momentum=0.9, running_variance="paper", rngs=nnx.Rngs(0)
    )
    for x in batches:
        _, updates = linen.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
        variables = {**variables, **updates}
        model(x)
    np.testing.assert_allclose(model.var[...], variables["batch_stats"]["var"], rtol=1e-6)
    with pytest.raises(ValueError, match="channel statistics only"):
        sbn_jax.SpectralBatchNorm(per_frequency=True, running_variance="paper").init(
            jax.random.key(0), batches[0], use_running_average=False
        )
    with pytest.raises(ValueError, match=r"running_variance must be one of \('biased', 'paper'\)"):
        sbn_jax.SpectralBatchNorm(running_variance="unbiased").init(
            jax.random.key(0), batches[0], use_running_average=True
        )
