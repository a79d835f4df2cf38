"""Single-layer benchmark: SBN against flax.linen.BatchNorm, forward+backward, training mode.

Each contender is a jitted step that computes the scalar loss ``sum(y * g)`` for
a fixed random ``g``, its gradient with respect to the parameters and the
input, and the updated running statistics. Contenders run round-robin (one
call each per round) so that machine noise hits them alike; the figure is the
median over rounds, and ratios are to BatchNorm in the same run.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

import sbn_jax
from benchmarks import common
from sbn_jax import functional

SHAPES = ((16, 56, 56, 64), (64, 32, 32, 64), (32, 14, 14, 256), (32, 7, 7, 512))

# name -> (per_frequency, impl) of SpectralBatchNorm; None means flax.linen.BatchNorm and
# "transforms" the FFT round trip alone (the floor of per-frequency SBN, see TransformsOnly).
CONTENDERS: dict[str, tuple[bool, str] | str | None] = {
    "bn": None,
    "channel/auto": (False, "auto"),
    "channel/fft": (False, "fft"),
    "freq/auto": (True, "auto"),
    "freq/fft": (True, "fft"),
    "freq/matmul": (True, "matmul"),
    "floor/fft": "transforms",
}


class TransformsOnly(nn.Module):
    """``irfft2(scale * rfft2(x))``: the two transforms per-frequency SBN cannot avoid.

    The per-channel ``scale`` makes the loss depend on the spectrum, so forward
    and backward both run the two FFTs, as in SBN, but nothing else.
    """

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        spectrum = jnp.fft.rfft2(x, axes=(1, 2), norm="ortho") * scale
        return jnp.fft.irfft2(spectrum, s=x.shape[1:3], axes=(1, 2), norm="ortho")


def make_module(spec: tuple[bool, str] | str | None) -> nn.Module:
    if spec is None:
        return nn.BatchNorm(use_running_average=False)
    if spec == "transforms":
        return TransformsOnly()
    per_frequency, impl = spec
    return sbn_jax.SpectralBatchNorm(
        use_running_average=False, per_frequency=per_frequency, impl=impl
    )


def make_step(module: nn.Module):
    """``(params, batch_stats, x, g) -> (loss, (dparams, dx), new batch_stats)``."""

    def step(params, batch_stats, x, g):
        def loss_fn(params, x):
            y, updates = module.apply(
                {"params": params, "batch_stats": batch_stats}, x, mutable=["batch_stats"]
            )
            return jnp.sum(y * g), updates.get("batch_stats", {})

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
            params, x
        )
        return loss, grads, new_stats

    return step


def resolved_impl(spec: tuple[bool, str] | str | None, shape: tuple[int, ...]) -> str:
    if spec is None:
        return "batchnorm"
    if spec == "transforms":
        return "rfft2+irfft2"
    per_frequency, impl = spec
    layout = functional.resolve_layout(len(shape))
    return functional.resolve_impl(impl, per_frequency, shape, layout)


def bench_shape(
    shape: tuple[int, ...], names: list[str], repeats: int, warmup: int
) -> dict[str, dict[str, Any]]:
    kx, kg = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, shape, jnp.float32)
    g = jax.random.normal(kg, shape, jnp.float32)
    contenders, results = {}, {}
    for name in names:
        module = make_module(CONTENDERS[name])
        variables = module.init(jax.random.key(1), x)
        args = (variables["params"], variables.get("batch_stats", {}), x, g)
        compiled, temp = common.compile_fn(make_step(module), args)
        contenders[name] = (compiled, args)
        results[name] = {"impl": resolved_impl(CONTENDERS[name], shape), "temp_bytes": temp}
    common.time_against_baselines(contenders, results, lambda name: "bn", repeats, warmup)
    return results


def _parse_shape(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.lower().replace("x", ",").split(",") if v)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--shapes",
        nargs="+",
        type=_parse_shape,
        help="NHWC shapes such as 16,56,56,64 (default: the four ResNet shapes)",
    )
    parser.add_argument("--contenders", nargs="+", choices=list(CONTENDERS), metavar="NAME")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    parser.add_argument("--quick", action="store_true", help="10 rounds, 1 warm-up, no freq/matmul")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/layers-<time>.json)")
    args = parser.parse_args(argv)

    repeats = args.repeats or (10 if args.quick else 30)
    warmup = 1 if args.quick else args.warmup
    shapes = args.shapes or list(SHAPES)
    names = args.contenders or [n for n in CONTENDERS if not (args.quick and n == "freq/matmul")]
    if "bn" not in names:
        names = ["bn", *names]
    info = common.machine()
    print(f"machine: {common.machine_line(info)}")
    print(f"forward+backward of sum(y * g), jitted, median of {repeats} interleaved rounds\n")

    all_results = []
    rows = []
    for shape in shapes:
        results = bench_shape(shape, names, repeats, warmup)
        all_results.append({"shape": list(shape), "results": results})
        for name, r in results.items():
            temp = r["temp_bytes"]
            rows.append(
                [
                    "x".join(map(str, shape)),
                    name,
                    r["impl"],
                    f"{r['median_s'] * 1e3:.2f}",
                    f"{r['time_ratio']:.2f}",
                    "n/a" if temp is None else f"{temp / 2**20:.1f}",
                    f"{r['temp_ratio']:.2f}" if "temp_ratio" in r else "n/a",
                ]
            )
        print(
            common.format_table(
                ["shape", "contender", "impl", "median ms", "x BN", "temp MiB", "temp x BN"],
                rows[-len(results) :],
            ),
            flush=True,
        )
        print()
    payload = {
        "benchmark": "layers",
        "command": " ".join(
            ["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": info,
        "repeats": repeats,
        "warmup": warmup,
        "loss": "sum(y * g), grad wrt params and x, training mode, float32 NHWC",
        "shapes": all_results,
    }
    path = common.write_json(payload, "layers", args.out)
    print(f"results written to {path}")
    return 0
