"""Is SBN more than a down-weighting? BN + SBN34 vs BN + 2BN34 vs a fixed rescale vs BN.

Under the paper's "backward" convention, BatchNorm followed by channel-statistics
SBN multiplies each channel by about ``gamma / sqrt(H W)`` (plus a small
first-row pattern; see sbn_jax/_closed_form.py). This sweep asks whether SBN's gain is
more than that rescaling. Four variants of each model, the normalization of
modules 3 and 4 changing and plain BatchNorm elsewhere:

* ``bn``: BatchNorm only;
* ``bn+sbn34``: BatchNorm then SBN (channel statistics), the paper's layer;
* ``2bn34``: BatchNorm then a second BatchNorm, the paper's control;
* ``bn+rescale34``: BatchNorm then SBN with ``use_mean=False,
  divide_by="constant"``: the feature map times ``gamma / sqrt(H W)`` plus
  SBN's bias pattern, with no statistics and no transform (the closed form).

Models are the paper's CIFAR ResNet-18 and VGG16-BN at ``base_width`` channels
(16 instead of 64, so that the sweep runs on a CPU), trained with the training
loop of ``train/`` on scikit-learn's digits upsampled to 32x32 (stages at
32/16/8/4 as on CIFAR), from only the first ``train_examples`` training images
with pad-4 random crops: the full set is too easy to tell variants apart.
Every (model, variant) runs with the same seeds, which fix the initialization
and the data order, so runs pair by seed. The test split is the 360 digits held
out by the data set.

For one seed (``--track_seed``, 0) of every (model, variant) it also records, at initialization and
after every epoch, on the first 64 test images in training mode (batch
statistics), what the paper
plots: the feature-map norm of every norm layer's output (Fig. 1; for the pairs
the first BatchNorm's and the second layer's), the percentiles of their values
(Fig. 2), and after training the fftshift-ed DFT magnitudes of 4 channels of
one image at the last 8x8 norm layer (Fig. 3).

    python -m analyses.open_question --out analyses/results/open_question.json

The paper's other ablations (mean only, std only, no gamma/beta, real and
imaginary parts apart) are the ``sbn34:*`` variants, run separately:

    python -m analyses.open_question --models cifar_resnet18 --seeds 3 --track_seed -1 \
        --variants sbn34:mean_only sbn34:std_only sbn34:no_affine sbn34:separate_real_imag \
        --out analyses/results/ablations.json

The spectral normalization family beyond the paper (:mod:`sbn_jax.family`) runs
the same way, every norm layer of the model one kind (8 groups, so that every
width of 16-128 channels divides), each spectral norm beside its spatial twin:
GroupNorm / spectral GroupNorm / the two in a row, and the layer and instance
norms (1 group, groups of 1 channel) with their spectral versions:

    python -m analyses.open_question --models cifar_resnet18 --seeds 3 --track_seed -1 \
        --variants family:gn family:sgn family:gn+sgn family:ln family:sln family:in \
        family:sin --out analyses/results/family.json

``--quick`` runs a tiny version (one seed, one epoch) to check the script.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from scipy import stats as scipy_stats

from sbn_jax import diagnostics
from sbn_jax.linen import SpectralBatchNorm
from sbn_jax.models import GROUP_KINDS
from train import input_pipeline
from train import train as trainer
from train.configs import default
from train.configs.variants import VARIANTS

MAIN_VARIANTS = ("bn", "bn+sbn34", "2bn34", "bn+rescale34")
ABLATIONS = tuple(v for v in VARIANTS if v.startswith("sbn34:"))
MODELS = ("cifar_resnet18", "vgg16_bn")
TRACKED_IMAGES = 64
SPECTRUM_CHANNELS = 4
SPECTRUM_SIZE = 8
# Comparisons reported with a paired t-test over seeds: (variant, against).
COMPARISONS = (
    ("bn+sbn34", "bn"),
    ("2bn34", "bn"),
    ("bn+rescale34", "bn"),
    ("bn+sbn34", "2bn34"),
    ("bn+sbn34", "bn+rescale34"),
    *((ablation, against) for ablation in ABLATIONS for against in ("bn", "bn+sbn34")),
    # Each spectral norm against its spatial twin.
    ("family:sgn", "family:gn"),
    ("family:gn+sgn", "family:gn"),
    ("family:sln", "family:ln"),
    ("family:sin", "family:in"),
)
# The names of the second layer of a pair, as sbn_jax.models.Norm and SpatialSpectralBatchNorm
# call them; any other captured norm starts a new site.
SECOND_LAYERS = ("SpectralBatchNorm_0", "SecondBatchNorm")


def make_config(model: str, variant: str, seed: int, args) -> ml_collections.ConfigDict:
    """The default recipe, changed to this sweep's data, model, variant and schedule."""
    norm, sbn_options, model_options = VARIANTS[variant]
    config = default.get_config()
    config.data_dir = args.data_dir
    config.image_size = 32
    config.crop_padding = 4
    config.train_examples = args.train_examples
    config.model = model
    config.base_width = args.base_width
    config.norm = norm
    # per_frequency is a batch-statistics option; the group kinds refuse it.
    batch_only = {} if norm in GROUP_KINDS else {"per_frequency": False}
    config.sbn_options = ml_collections.ConfigDict(
        {**batch_only, "fft_norm": "backward", **sbn_options}
    )
    config.update(model_options)
    config.activation = "relu"  # The paper's.
    config.seed = seed
    config.batch_size = 32
    config.num_epochs = float(args.epochs)
    config.warmup_epochs = 1.0
    config.num_devices = 1
    config.progress_bar = False
    config.log_every_steps = 10**9
    track = seed == args.track_seed
    steps_per_epoch = args.train_examples // config.batch_size
    config.checkpoint_every_steps = steps_per_epoch if track else 10**9
    config.max_checkpoints_to_keep = args.epochs + 1 if track else 1
    return config


def _site_name(path: str) -> str:
    """The ``Norm`` module a captured layer belongs to: ``BasicBlock_4/Norm_0``."""
    parent = path.rsplit("/", 1)[0]
    return parent.removesuffix("/SpatialSpectralBatchNorm")


def norm_sites(outputs: dict[str, jax.Array]) -> list[dict]:
    """Groups captured norm outputs (call order) into sites: a layer, or a pair's two layers."""
    sites: list[dict] = []
    for path, value in outputs.items():
        if path.rsplit("/", 1)[-1] in SECOND_LAYERS and sites and sites[-1]["second"] is None:
            sites[-1]["second"] = value
        else:
            sites.append({"name": _site_name(path), "first": value, "second": None})
    return sites


def _rounded(values) -> list:
    return np.round(np.asarray(values, np.float64), 6).tolist()


def norm_outputs_fn(model):
    """``(variables, images) -> {path: output}`` of every norm layer in call order, training mode.

    Training mode (batch statistics, the running ones left as they are) is what
    the network computes while it learns; at initialization the running
    statistics are placeholders, so eval mode would show SBN as the identity.
    """
    run = diagnostics.block_outputs_fn(
        model, capture=(nn.BatchNorm, SpectralBatchNorm), mutable=["batch_stats"], train=True
    )
    return lambda variables, images: run(variables, images, rngs={"dropout": jax.random.key(0)})[1]


def measure_sites(forward, state, images) -> tuple[list[dict], dict[str, jax.Array]]:
    """Feature-map norm and value percentiles of every norm site's outputs."""
    outputs = forward({"params": state.params, "batch_stats": state.batch_stats}, images)
    measured = []
    for site in norm_sites(outputs):
        entry = {"name": site["name"], "size": int(site["first"].shape[1])}
        for which in ("first", "second"):
            x = site[which]
            entry[which] = None
            if x is not None:
                entry[which] = {
                    "norm": float(diagnostics.feature_norm(x)),
                    "percentiles": _rounded(diagnostics.value_percentiles(x)),
                }
        measured.append(entry)
    return measured, outputs


def spectra(outputs: dict[str, jax.Array]) -> dict:
    """Fig. 3: magnitudes of 4 channels of the first image at the last 8x8 site."""
    sites = [s for s in norm_sites(outputs) if s["first"].shape[1] == SPECTRUM_SIZE]
    site = sites[-1]
    record = {"name": site["name"]}
    for which in ("first", "second"):
        x = site[which]
        record[which] = None
        if x is not None:
            record[which] = _rounded(diagnostics.magnitude_spectra(x)[:SPECTRUM_CHANNELS])
    return record


def track(config, workdir: str) -> dict:
    """Fig. 1-3 measurements of a finished run from its per-epoch checkpoints."""
    placement = trainer.make_placement(config)
    steps_per_epoch = input_pipeline.steps_per_epoch(config)
    learning_rate_fn = trainer.create_learning_rate_fn(config, steps_per_epoch)
    model = trainer.create_model(config)
    host_state = trainer.create_train_state(
        jax.random.key(config.seed),
        config,
        model,
        input_pipeline.image_shape(config),
        learning_rate_fn,
    )
    batch = next(input_pipeline.eval_batches(config))
    images = batch["image"][:TRACKED_IMAGES]
    forward = norm_outputs_fn(model)
    manager = trainer.checkpoint_manager(workdir, config)
    steps = sorted(manager.all_steps())
    epochs, trajectory = [0.0], [measure_sites(forward, host_state, images)[0]]
    outputs = None
    for step in steps:
        state = placement.first(trainer.restore_checkpoint(manager, placement, host_state, step))
        measured, outputs = measure_sites(forward, state, images)
        epochs.append(step / steps_per_epoch)
        trajectory.append(measured)
    manager.close()
    sites = []
    for index, site in enumerate(trajectory[0]):
        entry = {"name": site["name"], "size": site["size"]}
        for which in ("first", "second"):
            if site[which] is None:
                entry[which] = None
                continue
            entry[which] = {
                key: [epoch[index][which][key] for epoch in trajectory]
                for key in ("norm", "percentiles")
            }
        sites.append(entry)
    return {"epochs": epochs, "sites": sites, "spectra": spectra(outputs)}


def run(model: str, variant: str, seed: int, args) -> dict:
    """Trains one (model, variant, seed) with train.train_and_evaluate; the summary, tracked."""
    config = make_config(model, variant, seed, args)
    with tempfile.TemporaryDirectory(prefix="open_question_") as workdir:
        trainer.train_and_evaluate(config, workdir)
        with open(os.path.join(workdir, "summary.json")) as f:
            summary = json.load(f)
        record = {
            "model": model,
            "variant": variant,
            "seed": seed,
            **{
                key: summary[key]
                for key in ("test_accuracy", "test_loss", "train_loss", "steps", "wall_seconds")
            },
        }
        if seed == args.track_seed:
            record["tracked"] = track(config, workdir)
    return record


def paired_comparisons(runs: Sequence[dict], models: Sequence[str]) -> list[dict]:
    """Mean +- std of test accuracy per (model, variant) and paired t-tests over seeds."""
    table = []
    for model in models:
        by_variant: dict[str, dict[int, float]] = {}
        for r in runs:
            if r["model"] == model:
                by_variant.setdefault(r["variant"], {})[r["seed"]] = r["test_accuracy"]
        for variant, against in COMPARISONS:
            if variant not in by_variant or against not in by_variant:
                continue
            seeds = sorted(set(by_variant[variant]) & set(by_variant[against]))
            a = np.array([by_variant[variant][s] for s in seeds])
            b = np.array([by_variant[against][s] for s in seeds])
            entry = {
                "model": model,
                "variant": variant,
                "against": against,
                "seeds": len(seeds),
                "mean_difference": float(np.mean(a - b)),
                "std_difference": float(np.std(a - b, ddof=1)) if len(seeds) > 1 else None,
                "wins": int(np.sum(a > b)),
                "ties": int(np.sum(a == b)),
                "t": None,
                "p_value": None,
                "sign_test_p_value": None,
            }
            # A t-test needs differences that vary; when every seed gives the same difference,
            # only the sign test (exact binomial over the seeds that differ) says anything.
            if len(seeds) > 1 and np.ptp(a - b) > 1e-12:
                test = scipy_stats.ttest_rel(a, b)
                entry["t"], entry["p_value"] = float(test.statistic), float(test.pvalue)
            untied = len(seeds) - entry["ties"]
            if untied:
                entry["sign_test_p_value"] = float(
                    scipy_stats.binomtest(entry["wins"], untied).pvalue
                )
            table.append(entry)
    return table


def accuracy_table(runs: Sequence[dict]) -> list[dict]:
    rows: dict[tuple[str, str], list[float]] = {}
    for r in runs:
        rows.setdefault((r["model"], r["variant"]), []).append(r["test_accuracy"])
    return [
        {
            "model": model,
            "variant": variant,
            "seeds": len(values),
            "mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
            "min": float(np.min(values)),
            "max": float(np.max(values)),
        }
        for (model, variant), values in rows.items()
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="analyses/results/open_question.json")
    parser.add_argument("--data_dir", default=None, help="tfds data_dir for the digits")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument(
        "--variants", nargs="+", default=list(MAIN_VARIANTS), choices=list(VARIANTS)
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--train_examples", type=int, default=320)
    parser.add_argument("--base_width", type=int, default=16)
    parser.add_argument(
        "--track_seed",
        type=int,
        default=0,
        help="the seed whose run is measured per epoch; -1: none",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs already in --out (same settings) and run only the missing ones",
    )
    parser.add_argument("--quick", action="store_true", help="one seed, one epoch, width 4")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.train_examples, args.base_width = 1, 1, 64, 4
    return args


def write_result(args, argv, commit: str, runs: list[dict], seconds: float) -> dict:
    """Writes the result file of the runs so far: after every run, so a cut-off sweep keeps them."""
    command = "python -m analyses.open_question " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:])
    )
    result = {
        "command": command.strip(),
        "commit": commit or None,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"jax {jax.__version__} on {jax.default_backend()}",
        "settings": {
            key: getattr(args, key)
            for key in (
                "models",
                "variants",
                "seeds",
                "epochs",
                "train_examples",
                "base_width",
                "track_seed",
            )
        },
        "wall_seconds": seconds,
        "complete": len(runs) == len(args.models) * args.seeds * len(args.variants),
        "accuracy": accuracy_table(runs),
        "comparisons": paired_comparisons(runs, args.models),
        "runs": runs,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(args.out + ".tmp", args.out)
    return result


def finished_runs(args) -> tuple[list[dict], float, str | None]:
    """With ``--resume``: the runs an earlier, cut-off sweep with the same settings wrote, its
    wall time and the commit its runs came from."""
    if not (args.resume and os.path.exists(args.out)):
        return [], 0.0, None
    with open(args.out) as f:
        earlier = json.load(f)
    settings = {key: getattr(args, key) for key in earlier["settings"]}
    if earlier["settings"] != settings:
        raise ValueError(
            f"--resume: {args.out} was made with settings {earlier['settings']}, not {settings}"
        )
    return earlier["runs"], earlier["wall_seconds"], earlier["commit"]


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    # The commit the code ran from: read before the runs, which take long enough for HEAD to move.
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    runs, earlier_seconds, earlier_commit = finished_runs(args)
    if earlier_commit not in (None, commit):
        # The tables are recomputed now; the runs keep the commit they ran at.
        commit = f"{earlier_commit}, resumed at {commit}"
    done = {(r["model"], r["variant"], r["seed"]) for r in runs}
    result = None
    # Seed by seed, so that a sweep cut off early is still balanced across models and variants.
    for seed in range(args.seeds):
        for model in args.models:
            for variant in args.variants:
                if (model, variant, seed) in done:
                    continue
                record = run(model, variant, seed, args)
                print(
                    f"{model} {variant} seed {seed}: test accuracy {record['test_accuracy']:.4f} "
                    f"({record['wall_seconds']:.0f} s)",
                    flush=True,
                )
                runs.append(record)
                seconds = earlier_seconds + time.perf_counter() - start
                result = write_result(args, argv, commit, runs, seconds)
    if result is None:
        result = write_result(args, argv, commit, runs, earlier_seconds)
    print(f"wrote {args.out} ({result['wall_seconds']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
