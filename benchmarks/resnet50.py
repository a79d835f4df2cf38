"""ResNet-50 training-step benchmark: BatchNorm vs BatchNorm + SBN.

``python -m benchmarks.resnet50`` times one jitted SGD training step (forward,
backward, parameter update, new batch statistics) of ResNet-50 built by
:func:`sbn_jax.models.create_model` with

* ``bn``: BatchNorm everywhere,
* ``bn+sbn/all``: BatchNorm followed by SBN after every normalization,
* ``bn+sbn/module1``: BatchNorm + SBN in the first residual stage only,

interleaved round-robin, median over rounds, ratios to ``bn`` from the same run.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks import common

# name -> keyword arguments of create_model besides name, num_classes and dtype.
VARIANTS: dict[str, dict[str, Any]] = {
    "bn": {"norm": "bn"},
    "bn+sbn/all": {"norm": "bn+sbn"},
    "bn+sbn/module1": {"norm": "bn+sbn", "modules": (1,)},
}


def make_train_step(model, learning_rate: float = 0.1):
    """``(params, batch_stats, images, labels) -> (params, batch_stats, loss)``, plain SGD."""

    def loss_fn(params, batch_stats, images, labels):
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats},
            images,
            train=True,
            mutable=["batch_stats"],
        )
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
        loss = -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=-1))
        return loss, updates["batch_stats"]

    def step(params, batch_stats, images, labels):
        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch_stats, images, labels
        )
        params = jax.tree.map(lambda p, g: p - learning_rate * g, params, grads)
        return params, new_stats, loss

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.resnet50", description=__doc__)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=112, help="image height and width")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 10)")
    parser.add_argument("--quick", action="store_true", help="5 rounds, 1 warm-up")
    parser.add_argument("--per-frequency", action="store_true", help="SBN per-frequency stats")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), metavar="NAME")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/resnet50-<time>.json)")
    args = parser.parse_args(argv)

    from sbn_jax import models  # imported late: the benchmark names what it needs if absent

    repeats = args.repeats or (5 if args.quick else 10)
    warmup = 1 if args.quick else 2
    names = args.variants or list(VARIANTS)
    if "bn" not in names:
        names = ["bn", *names]
    info = common.machine()
    print(f"machine: {common.machine_line(info)}")
    print(
        f"ResNet-50 SGD step, batch {args.batch}x{args.size}x{args.size}x3 float32, "
        f"median of {repeats} interleaved rounds\n"
    )
    images = jax.random.normal(jax.random.key(0), (args.batch, args.size, args.size, 3))
    labels = jax.random.randint(jax.random.key(1), (args.batch,), 0, 1000)
    sbn_options = {"per_frequency": True} if args.per_frequency else None
    contenders, results = {}, {}
    for name in names:
        kwargs = dict(VARIANTS[name])
        if kwargs["norm"] != "bn" and sbn_options is not None:
            kwargs["sbn_options"] = sbn_options
        model = models.create_model("resnet50", num_classes=1000, dtype=jnp.float32, **kwargs)
        variables = jax.jit(lambda x, model=model: model.init(jax.random.key(2), x, train=False))(
            images
        )
        step_args = (variables["params"], variables["batch_stats"], images, labels)
        compiled, temp = common.compile_fn(make_train_step(model), step_args)
        contenders[name] = (compiled, step_args)
        results[name] = {"temp_bytes": temp, "create_model": {k: str(v) for k, v in kwargs.items()}}
    times = common.time_interleaved(contenders, repeats, warmup)
    base = common.median(times["bn"])
    rows = []
    for name, values in times.items():
        entry = results[name]
        entry.update(median_s=common.median(values), times_s=values)
        entry["time_ratio"] = entry["median_s"] / base
        if entry["temp_bytes"] and results["bn"]["temp_bytes"]:
            entry["temp_ratio"] = entry["temp_bytes"] / results["bn"]["temp_bytes"]
        rows.append(
            [
                name,
                f"{entry['median_s'] * 1e3:.1f}",
                f"{entry['time_ratio']:.2f}",
                f"{(entry['temp_bytes'] or 0) / 2**20:.0f}",
                f"{entry.get('temp_ratio', float('nan')):.2f}",
            ]
        )
    print(common.format_table(["variant", "median ms", "x bn", "temp MiB", "temp x bn"], rows))
    payload = {
        "benchmark": "resnet50",
        "command": common.command_line("benchmarks.resnet50", argv),
        "machine": info,
        "batch": args.batch,
        "size": args.size,
        "per_frequency": args.per_frequency,
        "repeats": repeats,
        "warmup": warmup,
        "results": results,
    }
    path = common.write_json(payload, "resnet50", args.out)
    print(f"\nresults written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
