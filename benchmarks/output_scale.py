"""What SBN after BatchNorm does to the scale of a feature map, per DFT convention.

``python -m benchmarks.output_scale [--out PATH]`` draws feature maps with
spatially correlated, non-zero-mean channels (a 3x3 box filter over Gaussian
noise plus a per-channel offset, like a convolution's output), normalizes them
with ``flax.linen.BatchNorm`` (training mode) and applies channel-statistics
``SpectralBatchNorm`` (scale 1, bias 0) under each ``fft_norm``. It records the
RMS of the BatchNorm output and of the SBN output, their ratio, and the
correlation of the SBN output with its input, for square spatial sizes from 4
to 56. With "backward" (the paper's Eq. 1) the ratio is ``1 / sqrt(H * W)``;
with "ortho" it is 1 and the output is nearly the input.
"""

from __future__ import annotations

import argparse
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from sbn_jax import functional

SIZES = (4, 7, 8, 14, 16, 28, 32, 56)
BATCH, CHANNELS = 32, 16


def feature_maps(size: int, seed: int = 0) -> jax.Array:
    """``(BATCH, size, size, CHANNELS)`` smooth noise with a per-channel offset."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((BATCH, size + 2, size + 2, CHANNELS))
    smooth = sum(noise[:, i : i + size, j : j + size] for i in range(3) for j in range(3)) / 3
    return jnp.asarray(smooth + rng.standard_normal(CHANNELS), jnp.float32)


def measure(size: int) -> dict[str, float]:
    x = feature_maps(size)
    bn = nn.BatchNorm(use_running_average=False)
    h, _ = bn.apply(bn.init(jax.random.key(0), x), x, mutable=["batch_stats"])
    row = {"size": size, "bn_rms": float(jnp.sqrt(jnp.mean(h**2)))}
    for norm in functional.FFT_NORMS:
        y, _ = functional.spectral_batch_norm(h, fft_norm=norm)
        row[f"{norm}_rms"] = float(jnp.sqrt(jnp.mean(y**2)))
        row[f"{norm}_ratio"] = row[f"{norm}_rms"] / row["bn_rms"]
        row[f"{norm}_correlation"] = float(np.corrcoef(np.ravel(h), np.ravel(y))[0, 1])
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="JSON path (default: results/<time>.json)")
    args = parser.parse_args(argv)
    rows = [measure(size) for size in SIZES]
    header = ["H = W", "1/sqrt(HW)", *(f"{n}: RMS ratio / corr." for n in functional.FFT_NORMS)]
    table = [
        [
            str(r["size"]),
            f"{1 / r['size']:.4f}",
            *(f"{r[f'{n}_ratio']:.4f} / {r[f'{n}_correlation']:.4f}" for n in functional.FFT_NORMS),
        ]
        for r in rows
    ]
    print(common.format_table(header, table))
    payload = {
        "machine": common.machine(),
        "command": "python -m benchmarks.output_scale",
        "batch": BATCH,
        "channels": CHANNELS,
        "rows": rows,
    }
    print(f"wrote {common.write_json(payload, 'output_scale', args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
