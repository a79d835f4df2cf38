"""Cross-device statistics on 8 CPU devices equal single-device statistics on the whole batch."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import sbn_jax

DEVICES = 8


@pytest.fixture(scope="module", autouse=True)
def _need_eight_devices():
    assert jax.device_count() >= DEVICES, "tests/conftest.py must set 8 host devices"


def _setup(per_frequency, impl="auto", axis_name=None, axis_index_groups=None):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(16, 6, 5, 3)) + 0.5, jnp.float32)
    module = sbn_jax.SpectralBatchNorm(
        per_frequency=per_frequency,
        impl=impl,
        momentum=0.5,
        axis_name=axis_name,
        axis_index_groups=axis_index_groups,
    )
    plain = sbn_jax.SpectralBatchNorm(per_frequency=per_frequency, impl=impl, momentum=0.5)
    variables = plain.init(jax.random.key(0), x, use_running_average=False)
    variables = {
        "params": {"scale": jnp.linspace(0.5, 2, 3), "bias": jnp.linspace(-1, 1, 3)},
        "batch_stats": variables["batch_stats"],
    }
    return x, module, plain, variables


def _train(module, variables, x):
    return module.apply(variables, x, use_running_average=False, mutable=["batch_stats"])


CASES = [(False, "closed_form"), (False, "fft"), (True, "fft"), (True, "matmul")]


@pytest.mark.parametrize("per_frequency,impl", CASES)
def test_pmap_with_axis_name_equals_single_device(per_frequency, impl):
    x, module, plain, variables = _setup(per_frequency, impl, axis_name="batch")
    expected_y, expected = _train(plain, variables, x)
    replicated = jax.tree.map(lambda v: jnp.stack([v] * DEVICES), variables)
    y, updates = jax.pmap(functools.partial(_train, module), axis_name="batch")(
        replicated, x.reshape(DEVICES, 2, *x.shape[1:])
    )
    np.testing.assert_allclose(y.reshape(x.shape), expected_y, rtol=1e-6, atol=1e-5)
    for name, value in expected["batch_stats"].items():
        for device in range(DEVICES):
            np.testing.assert_allclose(
                updates["batch_stats"][name][device], value, rtol=1e-6, atol=1e-5
            )


@pytest.mark.parametrize("per_frequency,impl", CASES)
def test_shard_map_with_axis_name_equals_single_device(per_frequency, impl):
    x, module, plain, variables = _setup(per_frequency, impl, axis_name="batch")
    expected_y, expected = _train(plain, variables, x)
    mesh = Mesh(np.array(jax.devices()[:DEVICES]), ("batch",))
    sharded = jax.shard_map(
        functools.partial(_train, module),
        mesh=mesh,
        in_specs=(P(), P("batch")),
        out_specs=(P("batch"), P()),
    )
    y, updates = jax.jit(sharded)(variables, x)
    np.testing.assert_allclose(y, expected_y, rtol=1e-6, atol=1e-5)
    for name, value in expected["batch_stats"].items():
        np.testing.assert_allclose(updates["batch_stats"][name], value, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("per_frequency,impl", CASES)
def test_jit_with_batch_sharded_input_equals_single_device(per_frequency, impl):
    x, _, plain, variables = _setup(per_frequency, impl)
    expected_y, expected = _train(plain, variables, x)
    mesh = Mesh(np.array(jax.devices()[:DEVICES]), ("data",))
    x_sharded = jax.device_put(x, NamedSharding(mesh, P("data")))
    variables = jax.device_put(variables, NamedSharding(mesh, P()))
    y, updates = jax.jit(functools.partial(_train, plain))(variables, x_sharded)
    assert y.sharding.is_equivalent_to(NamedSharding(mesh, P("data")), y.ndim)
    np.testing.assert_allclose(y, expected_y, rtol=1e-6, atol=1e-5)
    for name, value in expected["batch_stats"].items():
        np.testing.assert_allclose(updates["batch_stats"][name], value, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("per_frequency", [False, True])
def test_axis_index_groups_reduce_within_groups(per_frequency):
    groups = [[0, 1, 2, 3], [4, 5, 6, 7]]
    x, module, plain, variables = _setup(per_frequency, axis_name="batch", axis_index_groups=groups)
    replicated = jax.tree.map(lambda v: jnp.stack([v] * DEVICES), variables)
    y, updates = jax.pmap(functools.partial(_train, module), axis_name="batch")(
        replicated, x.reshape(DEVICES, 2, *x.shape[1:])
    )
    for group, half in zip(groups, (x[:8], x[8:]), strict=True):
        expected_y, expected = _train(plain, variables, half)
        np.testing.assert_allclose(
            y[np.array(group)].reshape(half.shape), expected_y, rtol=1e-6, atol=1e-5
        )
        for name, value in expected["batch_stats"].items():
            for device in group:
                np.testing.assert_allclose(
                    updates["batch_stats"][name][device], value, rtol=1e-6, atol=1e-5
                )
