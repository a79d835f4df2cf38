"""BN+SBN under jit on a 2-D mesh (data=2, model=4) computes the one-device step (issue 24).

Activations sharded over the batch and the channels, ``P("data", None, None, "model")``, or over
the batch and the height, ``P("data", "model", None, None)`` (large images): outputs, running
statistics and gradients equal those of one device, for every implementation and both kinds of
statistics; and a whole CIFAR ResNet-8 with BN+SBN after every norm (a covering set of cases),
its params split over "model" as tensor parallelism splits them. What each layer case costs in
collectives is in BENCHMARKS.md (``benchmarks/mesh2d.py``, whose step this is).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from benchmarks import mesh2d
from sbn_jax import models


@pytest.fixture(scope="module", autouse=True)
def _need_eight_devices():
    assert jax.device_count() >= 8, "tests/conftest.py must set 8 host devices"


@pytest.mark.parametrize("per_frequency,impl", mesh2d.CASES)
@pytest.mark.parametrize("sharding", mesh2d.SHARDINGS)
def test_bn_sbn_on_a_2d_mesh_equals_one_device(sharding, per_frequency, impl):
    layer = mesh2d.module(per_frequency, impl)
    step, args = mesh2d.sharded_step(layer, sharding)
    expected = step(*jax.device_get(args))  # The same arguments on one device.
    sharded = step(*args)
    _assert_leaves_close(sharded, expected, tolerance=1e-5)


def _assert_leaves_close(actual, desired, tolerance):
    """Every leaf within ``tolerance`` relative to itself and to its scale, at least 1.

    float32 rounding of differently ordered sums: a spectral mean whose exact value is 0 (the DC
    bin's imaginary part) is rounding noise of the size of the DC bin's real part, and the
    gradient of the BatchNorm's redundant scale (exactly 0) rounding noise of about 1e-6.
    """

    def close(actual, desired):
        scale = max(float(np.max(np.abs(desired))), 1.0)
        np.testing.assert_allclose(actual, desired, rtol=tolerance, atol=tolerance * scale)

    jax.tree.map(close, actual, desired)


def test_the_collectives_report_counts_what_the_batch_norm_needs():
    """nn.BatchNorm's step on the channel-sharded input reduces its statistics over "data"."""
    result = mesh2d.measure("channels", None, None)
    assert result["collectives"]["all-reduce"] >= 1
    assert result["output_spec"] == "P('data', None, None, 'model')"


# The whole model, on a covering set: every impl with each kind of statistics appears once, and
# each sharding meets both kinds (tests above: every impl under each sharding, layer by layer).
MODEL_CASES = [
    ("channels", False, "closed_form"),
    ("channels", True, "matmul"),
    ("height", False, "fft"),
    ("height", True, "fft"),
    ("height", False, "matmul"),
]


def _model_shardings(grid, variables, sharding):
    """Params and statistics as tensor parallelism lays them out: under "channels", every
    per-channel leaf (conv kernels' output channels, norm scales, biases, statistics) split over
    "model", so that the activations between layers are channel-sharded; under "height" all
    replicated (the input alone is split over its rows)."""

    def spec(leaf):
        split = sharding == "channels" and leaf.ndim in (1, 3, 4) and leaf.shape[-1] % 4 == 0
        return NamedSharding(grid, P(*[None] * (leaf.ndim - 1), "model") if split else P())

    return jax.tree.map(spec, variables)


@pytest.mark.parametrize("sharding,per_frequency,impl", MODEL_CASES)
def test_a_bn_sbn_resnet_on_a_2d_mesh_equals_one_device(sharding, per_frequency, impl):
    """CIFAR ResNet-8 with BN+SBN after every norm: logits, running statistics and gradients of
    one training step equal one device's, with the logits still split over "data"."""
    model = models.create_model(
        "cifar_resnet8",
        num_classes=8,
        norm="bn+sbn",
        sbn_options={"per_frequency": per_frequency, "impl": impl},
    )
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(4, 16, 16, 4)), jnp.float32)  # 4 channels: "model" splits them
    weights = jnp.asarray(rng.normal(size=(4, 8)), jnp.float32)
    variables = jax.jit(lambda key: model.init(key, x, train=False))(jax.random.key(0))

    @jax.jit
    def step(variables, x):
        def loss(params, x):
            logits, updates = model.apply(
                {**variables, "params": params}, x, train=True, mutable=["batch_stats"]
            )
            return jnp.sum(logits * weights), (logits, updates["batch_stats"])

        (_, aux), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
            variables["params"], x
        )
        return aux, grads

    expected = step(variables, x)
    grid = mesh2d.mesh()
    sharded = step(
        jax.device_put(variables, _model_shardings(grid, variables, sharding)),
        jax.device_put(x, NamedSharding(grid, mesh2d.SHARDINGS[sharding])),
    )
    assert sharded[0][0].sharding.spec[0] == "data", sharded[0][0].sharding
    _assert_leaves_close(sharded, expected, tolerance=2e-5)
