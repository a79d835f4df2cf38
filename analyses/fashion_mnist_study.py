"""Issue 22's study: the paper's claim for SBN34, and controls that tell its explanations apart,
trained on Fashion-MNIST by the training loop, paired by seed, resumable.

Every run is ``python -m train`` with the recipe ``train/configs/fashion_mnist_resnet18.py``
(the paper's CIFAR ResNet-18 and CIFAR protocol, the 28x28 images padded to 32x32 so that the
four stages run at 32/16/8/4 as on CIFAR) at this study's size: ``--base_width`` channels,
``--per_class`` training images of each class (the seed draws them; every variant of a seed
trains on the same images in the same order), ``--epochs`` epochs with the recipe's step
decays at the same fractions of training, the 6,000 held-out images validating every epoch
and the best validation epoch scored on the full 10,000-image test set. The variants
(``VARIANTS``, the recipe's names) are BatchNorm, the paper's SBN34 and 2BN34, and three
controls for what SBN34 changes: its fixed 1/sqrt(H W) rescale with a learned scale
(``rescale34``), BatchNorm *initialized* as SBN34 shrinks (``shrunk_init34``), and BatchNorm
with SBN34's logit ratio at initialization as a fixed temperature (``temperature``; the ratio
is measured by ``analyses/logit_ratio.py``).

Order: first the pilot (``bn`` and ``sbn34``, seeds 0-2), then seed after seed every variant,
so that a stopped sweep has complete pairs. A finished run's ``summary.json``,
``test_predictions.npz`` (the predicted class of every test image) and ``block_norms.jsonl``
(the residual stream's norm after every block, eval mode, every epoch) are copied to
``OUT/runs/NAME/``, ``OUT/report.json`` is rewritten from every run filed so far, and with
``--commit`` both are committed at once. Run again with the same command
to continue: finished runs are skipped, an interrupted run resumes from its last checkpoint
in ``--runs``. ``--workers`` runs that many at once, each on its own CPU core with XLA's
single-threaded CPU runtime (measured here: two one-core runs of the width-8 ResNet-18 train
faster together than one run on two cores).

    python -m analyses.fashion_mnist_study --data_dir ~/tensorflow_datasets \\
        --out analyses/results/fashion_mnist --workers 2 --commit

Then ``python -m analyses.fashion_mnist_report`` computes the tables from ``OUT``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from train.configs import fashion_mnist_resnet18

VARIANTS = ("bn", "sbn34", "2bn34", "rescale34", "shrunk_init34", "temperature")
PILOT = (("bn", "sbn34"), (0, 1, 2))
RUN_FILES = ("summary.json", "test_predictions.npz", "block_norms.jsonl")
# What must be equal for runs to be pooled: a resumed sweep with other settings is refused.
SETTINGS = ("base_width", "per_class", "epochs", "batch_size")


def run_name(variant: str, seed: int) -> str:
    return f"{variant}_s{seed}"


def planned_runs(variants: Sequence[str], seeds: int, pilot: bool = True) -> list[tuple[str, int]]:
    """``(variant, seed)`` in the order they run: the pilot, then seed after seed."""
    order: list[tuple[str, int]] = []
    if pilot:
        order += [(v, s) for s in PILOT[1] if s < seeds for v in PILOT[0] if v in variants]
    order += [(v, s) for s in range(seeds) for v in variants if (v, s) not in order]
    return order


def train_command(args, variant: str, seed: int) -> list[str]:
    """The ``python -m train`` command of one run."""
    recipe = f"train/configs/fashion_mnist_resnet18.py:{variant},{args.per_class},{args.epochs}"
    steps_per_epoch = 10 * args.per_class // args.batch_size
    command = [
        sys.executable, "-m", "train",
        "--workdir", os.path.join(args.runs, run_name(variant, seed)),
        "--config", recipe,
        f"--config.seed={seed}",
        f"--config.base_width={args.base_width}",
        f"--config.batch_size={args.batch_size}",
        # Validation and checkpoints: the recipe's once per epoch (eval_every_epochs). One log
        # line per epoch too: its training loss is the mean over the epoch.
        f"--config.log_every_steps={steps_per_epoch}",
        "--config.num_devices=1",
        "--config.progress_bar=False",
        "--config.save_test_predictions=True",
        "--config.record_block_norms=True",
    ]  # fmt: skip
    for key in ("data_dir", "manual_dir"):
        if getattr(args, key):
            command.append(f"--config.{key}={getattr(args, key)}")
    return command


def check_settings(args) -> None:
    """Writes ``OUT/settings.json``, or refuses to add runs made with other settings."""
    settings = {key: getattr(args, key) for key in SETTINGS}
    path = os.path.join(args.out, "settings.json")
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        differing = {k: (saved["settings"].get(k), v) for k, v in settings.items()
                     if saved["settings"].get(k) != v}  # fmt: skip
        if differing:
            raise SystemExit(
                f"{args.out} holds runs made with other settings (saved, asked): {differing}; "
                "use another --out or the saved settings"
            )
        return
    os.makedirs(args.out, exist_ok=True)
    record = {
        "settings": settings,
        "command": "python -m analyses.fashion_mnist_study " + " ".join(args.argv),
        "recipe": "train/configs/fashion_mnist_resnet18.py",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
    }
    with open(path, "w") as f:
        json.dump(record, f, indent=1)


class _Committer:
    """Commits result folders one at a time (the sweep's threads share one git index)."""

    def __init__(self, enabled: bool):
        self.enabled, self.lock = enabled, threading.Lock()

    def commit(self, paths: Sequence[str], message: str) -> None:
        if not self.enabled:
            return
        with self.lock:
            for attempt in range(5):
                added = subprocess.run(["git", "add", "--", *paths], capture_output=True)
                done = added.returncode == 0 and (
                    subprocess.run(
                        ["git", "commit", "-q", "-m", message, "--", *paths], capture_output=True
                    ).returncode
                    == 0
                )
                if done:
                    return
                time.sleep(2 + 3 * attempt)  # Another git command holds the index lock.
            print(f"could not commit {paths}; they stay in the tree", flush=True)


def run_one(args, variant: str, seed: int, core: int | None, committer: _Committer) -> None:
    """Trains one run (resuming it if a checkpoint exists) and files its results."""
    name = run_name(variant, seed)
    workdir = os.path.join(args.runs, name)
    os.makedirs(workdir, exist_ok=True)
    env = dict(os.environ)
    command = train_command(args, variant, seed)
    if core is not None:
        flags = env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
        env["XLA_FLAGS"] = flags.strip()
        if shutil.which("taskset"):
            command = ["taskset", "-c", str(core), *command]
    start = time.perf_counter()
    with open(os.path.join(workdir, "log.txt"), "a") as log:
        status = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    if status != 0:
        print(f"{name}: exit status {status}, see {workdir}/log.txt", flush=True)
        return
    target = os.path.join(args.out, "runs", name)
    os.makedirs(target, exist_ok=True)
    for file in RUN_FILES:
        shutil.copy(os.path.join(workdir, file), os.path.join(target, file))
    with open(os.path.join(target, "summary.json")) as f:
        accuracy = json.load(f)["test_accuracy"]
    minutes = (time.perf_counter() - start) / 60
    print(f"{name}: test accuracy {accuracy:.2%} ({minutes:.1f} min)", flush=True)
    committer.commit(
        [target, os.path.join(args.out, "settings.json"), write_report(args.out)],
        f"Fashion-MNIST study (issue 22): {name}, test accuracy {100 * accuracy:.2f}%",
    )


def prepare_data(args) -> None:
    """Builds Fashion-MNIST into ``data_dir`` once, before any run: runs started at once would
    otherwise each build it and race to rename their copy into place."""
    from train import input_pipeline, train

    config = train.with_defaults(fashion_mnist_resnet18.get_config(f"bn,{args.per_class}"))
    config.data_dir, config.manual_dir = args.data_dir, args.manual_dir
    input_pipeline.builder(config)


_REPORT_LOCK = threading.Lock()


def write_report(out: str) -> str:
    """Rewrites ``OUT/report.json`` from the runs filed so far (so that the committed report
    always matches the committed runs, as notebook 07 checks); returns its path."""
    from analyses import fashion_mnist_report  # It imports this module's VARIANTS.

    path = os.path.join(out, "report.json")
    with _REPORT_LOCK:
        result = fashion_mnist_report.report(out)
        with open(path, "w") as f:
            json.dump(result, f, indent=1, allow_nan=False)
    return path


def finished(args, variant: str, seed: int) -> bool:
    return os.path.exists(os.path.join(args.out, "runs", run_name(variant, seed), RUN_FILES[0]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="analyses/results/fashion_mnist")
    parser.add_argument("--runs", default="runs/fashion_mnist_study", help="the runs' workdirs")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--manual_dir", default=None, help="the IDX files' folder")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS),
                        choices=sorted(fashion_mnist_resnet18.VARIANTS))  # fmt: skip
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--base_width", type=int, default=8)
    parser.add_argument("--per_class", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=1, help="runs at once, one core each")
    parser.add_argument("--no_pilot", action="store_true", help="do not run the pilot first")
    parser.add_argument("--commit", action="store_true", help="git commit each run's results")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.per_class * 10 < args.batch_size:
        parser.error(f"--per_class {args.per_class} gives fewer images than a batch")
    check_settings(args)
    todo: queue.Queue = queue.Queue()
    for variant, seed in planned_runs(args.variants, args.seeds, pilot=not args.no_pilot):
        if not finished(args, variant, seed):
            todo.put((variant, seed))
    print(f"{todo.qsize()} runs to do", flush=True)
    if not todo.empty():
        prepare_data(args)
    committer = _Committer(args.commit)

    def work(core: int | None) -> None:
        while True:
            try:
                variant, seed = todo.get_nowait()
            except queue.Empty:
                return
            run_one(args, variant, seed, core, committer)

    cores = [None] if args.workers == 1 else list(range(args.workers))
    threads = [threading.Thread(target=work, args=(core,)) for core in cores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
