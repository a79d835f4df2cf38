"""Training throughput of the Fashion-MNIST study's model, to size its sweep (issue 22).

``python -m benchmarks.study_throughput [--out PATH]`` times the training loop's compiled SGD
step (``train.train_step``, batch 128, 32x32x1 images: Fashion-MNIST padded) of the paper's
CIFAR ResNet-18 with BatchNorm and with SBN34 at base widths 8 and 16, once with XLA's
multi-threaded CPU runtime (all cores, one process) and once single-threaded (one core; the
sweep runs one such process per core). Each setting runs in a fresh subprocess (XLA reads its
flags once), its norms timed round-robin; reported as examples per second.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common

WIDTHS = (8, 16)
NORMS = ("bn", "sbn34")
BATCH = 128
SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false"


def measure(width: int, repeats: int) -> dict[str, float]:
    """Examples per second of the train step of each norm at ``width``, in this process."""
    from train import train
    from train.configs import fashion_mnist_resnet18

    contenders = {}
    rng = np.random.default_rng(0)
    batch = {
        "image": jnp.asarray(rng.standard_normal((BATCH, 32, 32, 1)), jnp.float32),
        "label": jnp.asarray(rng.integers(0, 10, BATCH), jnp.int32),
    }
    for norm in NORMS:
        config = train.with_defaults(fashion_mnist_resnet18.get_config(f"{norm},600"))
        config.base_width = width
        model = train.create_model(config, num_classes=10)
        schedule = train.create_learning_rate_fn(config, 46)
        state = train.create_train_state(jax.random.key(0), config, model, (32, 32, 1), schedule)
        step = jax.jit(
            functools.partial(train.train_step, learning_rate_fn=schedule, label_smoothing=0.0)
        )
        contenders[norm] = (step, (state, batch))
    times = common.time_interleaved(contenders, repeats=repeats, warmup=2)
    return {norm: BATCH / common.median(values) for norm, values in times.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="default: results/study_throughput-TIME.json")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:  # One setting, in the flags this process was started with.
        print(json.dumps(measure(args.child, args.repeats)))
        return 0
    results = []
    for threads in ("multi", "single"):
        env = dict(os.environ)
        if threads == "single":
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + SINGLE_THREAD).strip()
        for width in WIDTHS:
            command = [sys.executable, "-m", "benchmarks.study_throughput"]
            command += ["--child", str(width), "--repeats", str(args.repeats)]
            output = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            rates = json.loads(output.stdout.strip().splitlines()[-1])
            results.append({"threads": threads, "base_width": width, "examples_per_s": rates})
            print(threads, width, {k: round(v, 1) for k, v in rates.items()}, flush=True)
    payload = {
        "command": common.command_line("benchmarks.study_throughput", argv),
        "machine": common.machine(),
        "batch": BATCH,
        "results": results,
    }
    print("wrote", common.write_json(payload, "study_throughput", args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
