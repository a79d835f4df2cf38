"""Checks that every fast path computes what ``impl="fft"`` computes, to float32 precision.

``python -m benchmarks.exactness`` compares outputs, batch statistics and the
gradients of ``sum(y * g)`` (with respect to x, scale and bias) of each impl
against ``impl="fft"`` over layouts (NHWC, NCHW), 1-D/2-D/3-D inputs, odd, even
and unit sizes and all three ``fft_norm`` values; it prints the worst relative
error per impl and exits non-zero if one exceeds the tolerance.
"""

from __future__ import annotations

import argparse
import itertools
import sys

import jax
import jax.numpy as jnp
import numpy as np

from sbn_jax import functional

# (shape, feature axis): NHWC and NCHW 2-D, 1-D (B, L, C), 3-D (B, D, H, W, C).
CASES = (
    ((4, 8, 6, 3), -1),
    ((4, 7, 5, 3), -1),
    ((3, 1, 6, 2), -1),
    ((3, 6, 1, 2), -1),
    ((2, 1, 1, 5), -1),
    ((4, 3, 8, 6), 1),
    ((4, 3, 7, 9), 1),
    ((5, 10, 4), -1),
    ((5, 9, 4), -1),
    ((2, 4, 5, 6, 3), -1),
    ((2, 3, 4, 3, 5), -1),
    ((16, 7, 7, 8), -1),
)


def _error(value, reference, floor: float) -> float:
    """Largest absolute difference over ``max(|reference|) + floor``.

    The floor is the natural size of the quantity, for those that can vanish
    exactly (the imaginary mean of a real row, or ``dx`` when two examples
    normalize to exactly +-1).
    """
    value, reference = np.asarray(value, np.float64), np.asarray(reference, np.float64)
    return float(np.max(np.abs(value - reference)) / (np.max(np.abs(reference)) + floor))


def _floors(reference, g, scale, epsilon=1e-5) -> dict[str, float]:
    spread = float(np.sqrt(np.max(reference["var"])))
    gain = float(np.max(np.abs(scale)) / np.sqrt(np.min(reference["var"]) + epsilon))
    return {
        "mean_real": spread,
        "mean_imag": spread,
        "dx": float(np.max(np.abs(g))) * gain,
        "dscale": 0.0,
        "dbias": 0.0,
        "y": 0.0,
        "var": 0.0,
    }


def _run(x, g, scale, bias, axis, per_frequency, fft_norm, impl):
    def loss(x, scale, bias):
        y, stats = functional.spectral_batch_norm(
            x,
            scale=scale,
            bias=bias,
            axis=axis,
            per_frequency=per_frequency,
            fft_norm=fft_norm,
            impl=impl,
        )
        return jnp.sum(y * g), (y, stats)

    (_, (y, stats)), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
        x, scale, bias
    )
    return {"y": y, **stats._asdict(), "dx": grads[0], "dscale": grads[1], "dbias": grads[2]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.exactness", description=__doc__)
    parser.add_argument("--tolerance", type=float, default=2e-5, help="largest relative error")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    worst: dict[str, tuple[float, str]] = {}
    for (shape, axis), per_frequency, fft_norm in itertools.product(
        CASES, (False, True), functional.FFT_NORMS
    ):
        channels = shape[axis]
        layout = functional.resolve_layout(len(shape), axis)
        last = layout.spatial_axes[-1]
        # An offset and a ramp along the rows give the spectrum a mean far from 0.
        ramp = np.linspace(0.0, 1.0, shape[last]).reshape(
            [-1 if i == last else 1 for i in range(len(shape))]
        )
        x = jnp.asarray(rng.normal(size=shape) + 0.5 + ramp, jnp.float32)
        g = jnp.asarray(rng.normal(size=shape), jnp.float32)
        scale = jnp.asarray(rng.uniform(0.5, 1.5, channels), jnp.float32)
        bias = jnp.asarray(rng.normal(size=channels), jnp.float32)
        if per_frequency and all(shape[i] == 1 for i in layout.batch_axes):
            continue
        reference = _run(x, g, scale, bias, axis, per_frequency, fft_norm, "fft")
        floors = _floors(reference, g, scale)
        impls = ["matmul", "auto"] + ([] if per_frequency else ["closed_form"])
        for impl in impls:
            result = _run(x, g, scale, bias, axis, per_frequency, fft_norm, impl)
            for key, value in result.items():
                error = _error(value, reference[key], floors[key])
                name = f"{'freq' if per_frequency else 'channel'}/{impl}"
                if error > worst.get(name, (-1.0, ""))[0]:
                    worst[name] = (error, f"{key} at {shape} axis={axis} {fft_norm}")
    failed = False
    for name, (error, where) in sorted(worst.items()):
        ok = error <= args.tolerance
        failed |= not ok
        print(f"{name:20s} worst relative error {error:.2e} ({where}) {'ok' if ok else 'FAIL'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
