"""SBN's training-step overhead against the paper's Table VI, each row next to its BN baseline.

``python -m benchmarks.overhead`` times one jitted SGD step (forward, backward,
update, new batch statistics; :func:`benchmarks.resnet50.make_train_step`) of
each configuration of Table VI and of its BatchNorm-only baseline, interleaved
round-robin in one run, and prints the overhead ``time(SBN) / time(BN) - 1``
beside the paper's (measured there with PyTorch's FFT on GPUs):

* CIFAR ResNet-18 / 34 / 50 with SBN34 (paper: 16%, 23-27%, 50%), 32x32 images;
* ImageNet ResNet-50 with SBN4 (paper: 12%), 224x224 images.

Batch sizes are ``--cifar-batch`` and ``--imagenet-batch`` (small by default so
that a CPU finishes; the paper used 128 and 256). SBN uses the library's
defaults (channel statistics, ``impl="auto"``: the exact closed form).
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp

from benchmarks import common
from benchmarks.resnet50 import make_train_step

# (row, model, SBN placement, image size, paper's overhead in %, batch argument)
ROWS = (
    ("ResNet-18 CIFAR +SBN34", "cifar_resnet18", "sbn34", 32, "16", "cifar"),
    ("ResNet-34 CIFAR +SBN34", "cifar_resnet34", "sbn34", 32, "23-27", "cifar"),
    ("ResNet-50 CIFAR +SBN34", "cifar_resnet50", "sbn34", 32, "50", "cifar"),
    ("ResNet-50 ImageNet +SBN4", "resnet50", "sbn4", 224, "12", "imagenet"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__)
    parser.add_argument("--cifar-batch", type=int, default=32)
    parser.add_argument("--imagenet-batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rows", nargs="+", choices=[r[1] for r in ROWS], metavar="MODEL")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/overhead-<time>.json)")
    args = parser.parse_args(argv)

    from sbn_jax import models

    info = common.machine()
    print(f"machine: {common.machine_line(info)}")
    rows = [r for r in ROWS if args.rows is None or r[1] in args.rows]
    contenders, setup = {}, {}
    for label, name, placement, size, _, kind in rows:
        batch = args.cifar_batch if kind == "cifar" else args.imagenet_batch
        classes = 10 if kind == "cifar" else 1000
        images = jax.random.normal(jax.random.key(0), (batch, size, size, 3))
        labels = jax.random.randint(jax.random.key(1), (batch,), 0, classes)
        for norm in ("bn", placement):
            model = models.create_model(name, num_classes=classes, norm=norm, dtype=jnp.float32)
            variables = jax.jit(lambda x, m=model: m.init(jax.random.key(2), x, train=False))(
                images
            )
            step_args = (variables["params"], variables["batch_stats"], images, labels)
            compiled, temp = common.compile_fn(make_train_step(model), step_args)
            contenders[(label, norm)] = (compiled, step_args)
            setup[(label, norm)] = {"batch": batch, "size": size, "temp_bytes": temp}
    times = common.time_interleaved(contenders, args.repeats, args.warmup)
    results, table = [], []
    for label, name, placement, size, paper, _ in rows:
        base = common.median(times[(label, "bn")])
        with_sbn = common.median(times[(label, placement)])
        entry = {
            "row": label,
            "model": name,
            "placement": placement,
            "batch": setup[(label, "bn")]["batch"],
            "size": size,
            "bn_median_s": base,
            "sbn_median_s": with_sbn,
            "overhead_percent": 100 * (with_sbn / base - 1),
            "paper_overhead_percent": paper,
            "bn_times_s": times[(label, "bn")],
            "sbn_times_s": times[(label, placement)],
        }
        results.append(entry)
        table.append(
            [
                label,
                f"{entry['batch']}x{size}x{size}",
                f"{base:.3f}",
                f"{with_sbn:.3f}",
                f"{entry['overhead_percent']:+.1f}%",
                f"{paper}%",
            ]
        )
    header = ["configuration", "batch", "BN s/step", "SBN s/step", "overhead here", "paper"]
    print(common.format_table(header, table))
    payload = {
        "benchmark": "overhead",
        "command": common.command_line("benchmarks.overhead", argv),
        "machine": info,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "results": results,
    }
    print(f"\nresults written to {common.write_json(payload, 'overhead', args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
