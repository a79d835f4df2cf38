"""The per-example spectral norms against their Flax twins, forward+backward.

Each spectral norm of :mod:`sbn_jax.family` is timed beside the spatial norm it
generalizes, with the same statistics axes and the same per-channel affine map:

* layer: ``nn.LayerNorm(reduction_axes=(1, 2, 3))`` (every channel and pixel of
  an example, a scale and bias per channel) vs ``SpectralLayerNorm``;
* group: ``nn.GroupNorm(num_groups=32)`` vs ``SpectralGroupNorm(num_groups=32)``;
* instance: ``nn.GroupNorm(group_size=1)`` vs ``SpectralInstanceNorm``;

the spectral ones with ``impl="auto"`` (the closed form, no transform) and
``impl="fft"`` (the transforms). The step and the timing are those of
:mod:`benchmarks.layers` (``sum(y * g)`` and its gradient with respect to the
parameters and the input, jitted, contenders round-robin, median over rounds);
ratios are to the Flax twin in the same run. No statistics are kept, so there
is no training/evaluation difference.

    python -m benchmarks.family --out benchmarks/results/family-latest.json
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

import sbn_jax
from benchmarks import common
from benchmarks.layers import SHAPES, make_step

# kind -> (the Flax twin, the spectral module class, its group arguments).
KINDS: dict[str, tuple[Any, Any, dict[str, Any]]] = {
    "layer": (
        lambda: nn.LayerNorm(reduction_axes=(1, 2, 3), feature_axes=-1),
        sbn_jax.SpectralLayerNorm,
        {},
    ),
    "group": (lambda: nn.GroupNorm(num_groups=32), sbn_jax.SpectralGroupNorm, {"num_groups": 32}),
    "instance": (
        lambda: nn.GroupNorm(num_groups=None, group_size=1),
        sbn_jax.SpectralInstanceNorm,
        {},
    ),
}
IMPLS = ("auto", "fft")


def contenders(kind: str) -> dict[str, nn.Module]:
    """``{"<kind>/flax": twin, "<kind>/auto": spectral, "<kind>/fft": spectral}``."""
    twin, spectral, groups = KINDS[kind]
    modules = {f"{kind}/flax": twin()}
    for impl in IMPLS:
        modules[f"{kind}/{impl}"] = spectral(**groups, impl=impl)
    return modules


def bench_shape(
    shape: tuple[int, ...], kinds: Sequence[str], repeats: int, warmup: int
) -> dict[str, dict[str, Any]]:
    """Times every contender of ``kinds`` on one NHWC shape, all interleaved in one loop."""
    kx, kg = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, shape, jnp.float32)
    g = jax.random.normal(kg, shape, jnp.float32)
    compiled, results = {}, {}
    for kind in kinds:
        for name, module in contenders(kind).items():
            variables = module.init(jax.random.key(1), x)
            args = (variables["params"], {}, x, g)
            step, temp = common.compile_fn(make_step(module), args)
            compiled[name] = (step, args)
            results[name] = {"kind": kind, "temp_bytes": temp}
    common.time_against_baselines(
        compiled, results, lambda name: f"{results[name]['kind']}/flax", repeats, warmup
    )
    return results


def _row(shape: tuple[int, ...], name: str, r: dict[str, Any]) -> list[str]:
    temp = r["temp_bytes"]
    return [
        "x".join(map(str, shape)),
        name,
        f"{r['median_s'] * 1e3:.2f}",
        f"{r['time_ratio']:.2f}",
        "n/a" if temp is None else f"{temp / 2**20:.1f}",
        f"{r['temp_ratio']:.2f}" if "temp_ratio" in r else "n/a",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.family", description=__doc__)
    parser.add_argument(
        "--shapes",
        nargs="+",
        type=lambda text: tuple(int(v) for v in text.replace("x", ",").split(",") if v),
        help="NHWC shapes such as 16,56,56,64 (default: the four ResNet shapes of layers.py)",
    )
    parser.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS))
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/family-<time>.json)")
    args = parser.parse_args(argv)

    info = common.machine()
    print(f"machine: {common.machine_line(info)}")
    print(f"forward+backward of sum(y * g), jitted, median of {args.repeats} interleaved rounds\n")
    all_results = []
    for shape in args.shapes or list(SHAPES):
        results = bench_shape(shape, args.kinds, args.repeats, args.warmup)
        all_results.append({"shape": list(shape), "results": results})
        header = ["shape", "contender", "median ms", "x twin", "temp MiB", "temp x twin"]
        print(common.format_table(header, [_row(shape, n, r) for n, r in results.items()]))
        print(flush=True)
    payload = {
        "benchmark": "family",
        "command": common.command_line("benchmarks.family", argv),
        "machine": info,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "loss": "sum(y * g), grad wrt params and x, float32 NHWC",
        "shapes": all_results,
    }
    path = common.write_json(payload, "family", args.out)
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
