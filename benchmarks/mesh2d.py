"""What BN+SBN costs under jit on a 2-D mesh (data=2, model=4): collectives and memory.

``XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m benchmarks.mesh2d [--out PATH]``
compiles one training step (output, running statistics, gradients of ``sum(y * w)`` for the
params and the input) of ``SpatialSpectralBatchNorm`` and of ``nn.BatchNorm`` on a
``(8, 16, 12, 8)`` input sharded over the batch and the channels (``P("data", None, None,
"model")``) or over the batch and the height (``P("data", "model", None, None)``), and counts the
collectives in the compiled HLO (all-gather, all-to-all, all-reduce, collective-permute,
reduce-scatter), the output's sharding and the temporary memory. tests/test_mesh2d.py checks that
every case computes the one-device step.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from benchmarks import common
from sbn_jax import SpatialSpectralBatchNorm

SHARDINGS = {"channels": P("data", None, None, "model"), "height": P("data", "model", None, None)}
# (per_frequency, impl) of the SBN cases; None: nn.BatchNorm, the baseline.
CASES = [(False, "closed_form"), (False, "fft"), (True, "fft"), (True, "matmul")]
SHAPE = (8, 16, 12, 8)
COLLECTIVES = ("all-gather", "all-to-all", "all-reduce", "collective-permute", "reduce-scatter")


def mesh() -> Mesh:
    """The (data=2, model=4) mesh of the first 8 devices; a clear error with fewer."""
    if jax.device_count() < 8:
        raise RuntimeError(
            f"needs 8 devices, found {jax.device_count()}: on CPU set "
            "XLA_FLAGS=--xla_force_host_platform_device_count=8 before JAX starts"
        )
    return Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "model"))


def inputs(seed: int = 0) -> tuple[jax.Array, jax.Array]:
    """The input and the output weights ``w`` of the loss ``sum(y * w)``, float32."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=SHAPE) + 0.5, jnp.float32)
    return x, jnp.asarray(rng.normal(size=SHAPE), jnp.float32)


def module(per_frequency: bool | None, impl: str | None) -> nn.Module:
    """BN+SBN of the case (every affine parameter kept), or ``nn.BatchNorm`` for None."""
    if per_frequency is None:
        return nn.BatchNorm(momentum=0.5)
    return SpatialSpectralBatchNorm(
        per_frequency=per_frequency, impl=impl, momentum=0.5, redundant_affine=True
    )


def train_step(layer: nn.Module, variables: Any, x: jax.Array, weights: jax.Array) -> Any:
    """``(y, updated batch_stats, (grad params, grad x))`` of the loss ``sum(y * weights)``."""

    def loss(params, x):
        y, updates = layer.apply(
            {**variables, "params": params}, x, use_running_average=False, mutable=["batch_stats"]
        )
        return jnp.sum(y * weights), (y, updates["batch_stats"])

    (_, (y, stats)), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        variables["params"], x
    )
    return y, stats, grads


def sharded_step(layer: nn.Module, sharding: str) -> tuple[Callable, tuple[Any, ...]]:
    """The jitted step and its arguments, placed on the mesh with ``SHARDINGS[sharding]``."""
    x, weights = inputs()
    variables = layer.init(jax.random.key(0), x, use_running_average=False)
    grid = mesh()
    spec = NamedSharding(grid, SHARDINGS[sharding])
    args = (
        jax.device_put(variables, NamedSharding(grid, P())),
        jax.device_put(x, spec),
        jax.device_put(weights, spec),
    )
    return jax.jit(functools.partial(train_step, layer)), args


def measure(sharding: str, per_frequency: bool | None, impl: str | None) -> dict[str, Any]:
    """Collectives (count per kind), output sharding and temporary bytes of one case."""
    step, args = sharded_step(module(per_frequency, impl), sharding)
    compiled = step.lower(*args).compile()
    hlo = compiled.as_text()
    counts = {kind: len(re.findall(rf"= [^=]*\b{kind}(-start)?\(", hlo)) for kind in COLLECTIVES}
    y = step(*args)[0]
    analysis = compiled.memory_analysis()
    return {
        "collectives": counts,
        "output_spec": str(y.sharding.spec),
        "temp_bytes": None if analysis is None else int(analysis.temp_size_in_bytes),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mesh2d", description=__doc__)
    parser.add_argument("--out", default=None, help="default: results/mesh2d-TIME.json")
    args = parser.parse_args(argv)
    rows, results = [], []
    for sharding in SHARDINGS:
        for per_frequency, impl in [(None, None), *CASES]:
            name = (
                "nn.BatchNorm"
                if impl is None
                else f"bn+sbn {'freq' if per_frequency else 'channel'}/{impl}"
            )
            result = {"sharding": sharding, "case": name, **measure(sharding, per_frequency, impl)}
            results.append(result)
            counts = result["collectives"]
            rows.append(
                [
                    sharding,
                    name,
                    *(str(counts[k]) for k in COLLECTIVES),
                    result["output_spec"],
                    f"{(result['temp_bytes'] or 0) / 2**10:.0f}",
                ]
            )
    print(common.machine_line(common.machine()))
    print(common.format_table(["input", "case", *COLLECTIVES, "output spec", "temp KiB"], rows))
    payload = {
        "benchmark": "mesh2d",
        "command": common.command_line("benchmarks.mesh2d", argv),
        "machine": common.machine(),
        "shape": SHAPE,
        "results": results,
    }
    print("wrote", common.write_json(payload, "mesh2d", args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
