"""BN+SBN under jit on a 2-D mesh (data=2, model=4) computes the one-device step (issue 24).

Activations sharded over the batch and the channels, ``P("data", None, None, "model")``, or over
the batch and the height, ``P("data", "model", None, None)`` (large images): outputs, running
statistics and gradients equal those of one device, for every implementation and both kinds of
statistics. What each case costs in collectives is in BENCHMARKS.md (``benchmarks/mesh2d.py``,
whose step this is).
"""

import jax
import numpy as np
import pytest

from benchmarks import mesh2d


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

    # float32 rounding of differently ordered sums, relative to each leaf's scale, at least 1: a
    # spectral mean whose exact value is 0 (the DC bin's imaginary part) is rounding noise of the
    # size of the DC bin's real part, and the gradient of the BatchNorm's redundant scale (exactly
    # 0) rounding noise of about 1e-6.
    def close(actual, desired):
        scale = max(float(np.max(np.abs(desired))), 1.0)
        np.testing.assert_allclose(actual, desired, rtol=1e-5, atol=1e-5 * scale)

    jax.tree.map(close, sharded, expected)


def test_the_collectives_report_counts_what_the_batch_norm_needs():
    """nn.BatchNorm's step on the channel-sharded input reduces its statistics over "data"."""
    result = mesh2d.measure("channels", None, None)
    assert result["collectives"]["all-reduce"] >= 1
    assert result["output_spec"] == "P('data', None, None, 'model')"
