"""How far one training step moves when only the rounding changes: 1 vs 8 devices, or a 1e-6 nudge.

``python -m benchmarks.device_agreement [--batches K] [--out PATH]`` takes a
CIFAR ResNet-20 at its initial parameters on K batches of 64 digits (the
default recipe's model and data) and compares gradients, which is what one SGD
step from a fresh optimizer applies:

* ``devices``: the whole batch on one CPU device against the batch sharded
  over 8 (jit, global statistics), the same function summed in another order;
* ``nudge``: one device, the batch against the batch times ``1 + 1e-6 * noise``.

The disagreement of a pair of gradients is the largest, over parameter leaves,
of ``max|g - g'| / max|g|`` (each leaf against its own size, the measure of the
issue that started this). It is reported per variant (BatchNorm alone, BN+SBN
with channel statistics through the closed form and through the FFT, BN+SBN
with per-frequency statistics, and BN+SBN keeping the BatchNorm's redundant
affine map) and per activation (ReLU, GELU), as the median and maximum over
batches and the count of batches above ``1e-4``.

Needs 8 devices; it sets ``--xla_force_host_platform_device_count=8`` itself.
"""

from __future__ import annotations

import os

if "device_count" not in os.environ.get("XLA_FLAGS", ""):  # Tests set it themselves.
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()

import argparse
import sys
import tempfile

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from benchmarks import common
from train import input_pipeline, train
from train.configs import default

NUDGE = 1e-6
THRESHOLD = 1e-4
# (label, norm, sbn_options)
VARIANTS = (
    ("bn", "bn", {}),
    ("bn+sbn channel closed_form", "bn+sbn", {"impl": "closed_form"}),
    ("bn+sbn channel fft", "bn+sbn", {"impl": "fft"}),
    ("bn+sbn per_frequency", "bn+sbn", {"per_frequency": True}),
    ("bn+sbn channel redundant-affine", "bn+sbn", {"redundant_affine": True}),
    (
        "bn+sbn per_frequency redundant-affine",
        "bn+sbn",
        {"per_frequency": True, "redundant_affine": True},
    ),
)


def disagreement(grads, other) -> float:
    """``max`` over leaves of ``max|g - g'| / max|g|`` (leaves with ``g == 0`` skipped)."""
    worst = 0.0
    for g, h in zip(jax.tree.leaves(grads), jax.tree.leaves(other), strict=True):
        g, h = np.asarray(g, np.float64), np.asarray(h, np.float64)
        scale = np.max(np.abs(g))
        if scale > 0:
            worst = max(worst, float(np.max(np.abs(g - h)) / scale))
    return worst


COMPARISONS = ("devices", "nudge")


def measure(config, batches, comparisons=COMPARISONS) -> dict[str, list[float]]:
    """Per batch, the disagreements named in ``comparisons`` (``devices``, ``nudge``) at the
    initial parameters; each one compiles its own gradient (8 devices, or one)."""
    model = train.create_model(config)
    state = train.create_train_state(
        jax.random.key(config.seed),
        config,
        model,
        input_pipeline.image_shape(config),
        lambda _: 0.0,
    )

    def loss(params, images, labels):
        logits, _ = model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            images,
            train=True,
            mutable=["batch_stats"],
        )
        return train.cross_entropy_loss(logits, labels).mean()

    mesh = Mesh(np.asarray(jax.devices()[:8]), ("data",))
    replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    one_device = jax.jit(jax.grad(loss))
    eight_devices = jax.jit(jax.grad(loss), in_shardings=(replicated, sharded, sharded))
    noise = np.random.default_rng(0)
    result: dict[str, list[float]] = {name: [] for name in comparisons}
    for batch in batches:
        images, labels = batch["image"], batch["label"]
        nudged = images * (1 + NUDGE * noise.standard_normal(images.shape)).astype(np.float32)
        reference = one_device(state.params, images, labels)
        if "devices" in result:
            result["devices"].append(
                disagreement(reference, eight_devices(state.params, images, labels))
            )
        if "nudge" in result:
            nudged_gradient = one_device(state.params, nudged, labels)
            result["nudge"].append(disagreement(reference, nudged_gradient))
    return result


def summarize(values: list[float]) -> dict[str, float | int]:
    return {
        "median": float(np.median(values)),
        "max": float(np.max(values)),
        "above_threshold": int(np.sum(np.asarray(values) > THRESHOLD)),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument(
        "--model",
        default=None,
        help="a key of sbn_jax.models.MODELS (default: the default recipe's)",
    )
    parser.add_argument("--activations", default="relu,gelu")
    parser.add_argument("--variants", default=",".join(v[0] for v in VARIANTS))
    parser.add_argument("--data_dir", default=None, help="tfds data_dir (default: a temp dir)")
    parser.add_argument("--out", default=None, help="JSON path (default: results/<time>.json)")
    args = parser.parse_args(argv)
    if jax.device_count() < 8:
        parser.error(f"needs 8 devices, found {jax.device_count()}")
    wanted = args.variants.split(",")
    unknown = sorted(set(wanted) - {v[0] for v in VARIANTS})
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {[v[0] for v in VARIANTS]}")

    with tempfile.TemporaryDirectory() as scratch:
        config = default.get_config()
        config.data_dir = args.data_dir or scratch
        config.batch_size = 64
        config.model = args.model or config.model
        stream = input_pipeline.train_batches(config)
        batches = [next(stream) for _ in range(args.batches)]
        rows, table = [], []
        for activation in args.activations.split(","):
            for label, norm, options in (v for v in VARIANTS if v[0] in wanted):
                config.norm, config.activation = norm, activation
                config.sbn_options = {**default.get_config().sbn_options, **options}
                measured = measure(config, batches)
                row = {
                    "variant": label,
                    "activation": activation,
                    "fft_norm": config.sbn_options.fft_norm,
                    **{k: summarize(v) for k, v in measured.items()},
                    "per_batch": measured,
                }
                rows.append(row)
                table.append(
                    [
                        label,
                        activation,
                        *(
                            f"{row[k]['median']:.1e} / {row[k]['max']:.1e} / "
                            f"{row[k]['above_threshold']}"
                            for k in ("devices", "nudge")
                        ),
                    ]
                )
                print(" | ".join(table[-1]), flush=True)
    payload = {
        "machine": common.machine(),
        "command": "python -m benchmarks.device_agreement " + " ".join(argv or sys.argv[1:]),
        "model": config.model,
        "batch_size": config.batch_size,
        "batches": args.batches,
        "nudge": NUDGE,
        "threshold": THRESHOLD,
        "results": rows,
    }
    path = common.write_json(payload, "device_agreement", args.out)
    header = [
        "variant",
        "activation",
        f"1 vs 8 devices: median / max / batches > {THRESHOLD:g}",
        f"input x (1 + {NUDGE:g} noise): median / max / batches > {THRESHOLD:g}",
    ]
    print(common.format_table(header, table))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
