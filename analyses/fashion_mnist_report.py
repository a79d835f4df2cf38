"""The tables of issue 22's Fashion-MNIST study, from the result files of its sweep.

Reads ``OUT/runs/VARIANT_sSEED/`` (written by :mod:`analyses.fashion_mnist_study`) and writes
``OUT/report.json``:

* per variant: the seeds, test accuracy (points) per seed, mean and standard deviation, the
  final epoch's training loss, the best validation accuracy and the epoch it selected;
* the three primary contrasts, SBN34 against BatchNorm, against the paper's 2BN34 control and
  against the temperature control, each a paired 95% interval over the seeds both have, the
  paired t test and the equivalence test at +-0.3 points (TOST), Holm-adjusted over the
  three; per-image McNemar tests of each seed's pair of runs (summed counts beside them);
* secondary contrasts (the other controls), Holm-adjusted among themselves and labelled so;
* the residual stream's norm after the blocks of modules 3 and 4 (eval mode) at
  initialization and at the end, mean over seeds.

    python -m analyses.fashion_mnist_report --out analyses/results/fashion_mnist

prints the table as Markdown (the one in docs/claims.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from analyses import paired_stats
from analyses.fashion_mnist_study import VARIANTS as VARIANT_ORDER

PRIMARY = (("sbn34", "bn"), ("sbn34", "2bn34"), ("sbn34", "temperature"))
SECONDARY = (
    ("sbn34", "rescale34"),
    ("sbn34", "shrunk_init34"),
    ("temperature", "bn"),
    ("shrunk_init34", "bn"),
    ("2bn34", "bn"),
)
MARGIN = 0.3
RUN = re.compile(r"(?P<variant>.+)_s(?P<seed>\d+)")


def load_runs(out: str) -> dict[str, dict[int, dict[str, Any]]]:
    """variant -> seed -> the run's summary, with ``correct`` (bool per test image) and
    ``block_norms`` (the records of block_norms.jsonl) added."""
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    folder = os.path.join(out, "runs")
    labels = None
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        match = RUN.fullmatch(name)
        if not match or not os.path.exists(os.path.join(folder, name, "summary.json")):
            continue
        with open(os.path.join(folder, name, "summary.json")) as f:
            run = json.load(f)
        with np.load(os.path.join(folder, name, "test_predictions.npz")) as arrays:
            prediction, label = arrays["prediction"], arrays["label"]
        if labels is None:
            labels = label
        elif not np.array_equal(label, labels):
            raise ValueError(f"{name} was scored on other test images than the runs before it")
        run["correct"] = prediction == label
        if not np.isclose(run["correct"].mean(), run["test_accuracy"], atol=1e-12):
            raise ValueError(f"{name}: its predictions do not give its summary's accuracy")
        with open(os.path.join(folder, name, "block_norms.jsonl")) as f:
            run["block_norms"] = [json.loads(line) for line in f if line.strip()]
        runs.setdefault(match["variant"], {})[int(match["seed"])] = run
    return runs


def _points(runs: Mapping[int, Mapping[str, Any]]) -> dict[int, float]:
    return {seed: 100.0 * run["test_accuracy"] for seed, run in sorted(runs.items())}


def variant_table(runs: Mapping[str, Mapping[int, Mapping[str, Any]]]) -> dict[str, dict]:
    """variant -> its row, in the study's order of variants (any others after them)."""
    table = {}
    order = [v for v in VARIANT_ORDER if v in runs] + sorted(set(runs) - set(VARIANT_ORDER))
    for variant in order:
        by_seed = runs[variant]
        accuracy = _points(by_seed)
        values = np.array(list(accuracy.values()))
        loss = np.array([run["train_loss"] for run in by_seed.values()])
        table[variant] = {
            "seeds": list(accuracy),
            "test_accuracy": accuracy,
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else None,
            "final_train_loss_mean": float(loss.mean()),
            "final_train_loss": {s: run["train_loss"] for s, run in sorted(by_seed.items())},
            "best_validation_accuracy_mean": float(
                np.mean([100 * run["best_validation_accuracy"] for run in by_seed.values()])
            ),
            "selected_step": {s: run["selected_step"] for s, run in sorted(by_seed.items())},
        }
    return table


def _mcnemar(runs, a: str, b: str) -> dict[str, Any]:
    seeds = sorted(set(runs[a]) & set(runs[b]))
    per_seed = {
        seed: paired_stats.mcnemar(runs[a][seed]["correct"], runs[b][seed]["correct"])
        for seed in seeds
    }
    return {
        "per_seed": {
            s: {"n01": m.n01, "n10": m.n10, "p_value": m.p_value} for s, m in per_seed.items()
        },
        "n01_total": int(sum(m.n01 for m in per_seed.values())),
        "n10_total": int(sum(m.n10 for m in per_seed.values())),
    }


def contrasts(runs, pairs, family: str) -> list[dict[str, Any]]:
    """The contrasts of ``pairs`` whose variants both have two or more common seeds."""
    results = {variant: _points(by_seed) for variant, by_seed in runs.items()}
    usable = [
        (a, b)
        for a, b in pairs
        if a in results and b in results and len(set(results[a]) & set(results[b])) >= 2
    ]
    if not usable:
        return []
    rows = paired_stats.contrast_table(results, usable, margin=MARGIN)
    for row, (a, b) in zip(rows, usable, strict=True):
        row["family"] = family
        row["mcnemar"] = _mcnemar(runs, a, b)
    return rows


def block_norm_summary(runs) -> dict[str, dict[str, dict[str, float]]]:
    """variant -> block -> {"init", "final"}: the mean over seeds of the block's output norm."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for variant, by_seed in runs.items():
        firsts = [run["block_norms"][0]["norms"] for run in by_seed.values() if run["block_norms"]]
        lasts = [run["block_norms"][-1]["norms"] for run in by_seed.values() if run["block_norms"]]
        if not firsts:
            continue
        summary[variant] = {
            block: {
                "init": float(np.mean([n[block] for n in firsts])),
                "final": float(np.mean([n[block] for n in lasts])),
            }
            for block in firsts[0]
        }
    return summary


def report(out: str) -> dict[str, Any]:
    runs = load_runs(out)
    with open(os.path.join(out, "settings.json")) as f:
        settings = json.load(f)
    return {
        "settings": settings,
        "variants": variant_table(runs),
        "primary_contrasts": contrasts(runs, PRIMARY, "primary"),
        "secondary_contrasts": contrasts(runs, SECONDARY, "secondary"),
        "block_norms": block_norm_summary(runs),
    }


def markdown(result: Mapping[str, Any]) -> str:
    """The variant table and the contrasts as Markdown."""
    lines = [
        "| variant | seeds | test accuracy (%) | per seed | final train loss |",
        "|---|---|---|---|---|",
    ]
    for variant, row in result["variants"].items():
        std = "" if row["std"] is None else f" ± {row['std']:.2f}"
        seeds = ", ".join(f"{v:.2f}" for v in row["test_accuracy"].values())
        lines.append(
            f"| `{variant}` | {len(row['seeds'])} | {row['mean']:.2f}{std} | {seeds} | "
            f"{row['final_train_loss_mean']:.3f} |"
        )
    lines += [
        "",
        "| contrast | seeds | mean difference (95% CI) | p (Holm) | equivalent ±0.3 (p Holm) "
        "| McNemar images a-only / b-only |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["primary_contrasts"] + result["secondary_contrasts"]:
        tag = "" if row["family"] == "primary" else " (secondary)"
        mc = row["mcnemar"]
        equivalent = row["equivalence_p_value_holm"] < 0.05
        lines.append(
            f"| `{row['variant_a']}` − `{row['variant_b']}`{tag} | {row['n']} | "
            f"{row['mean_difference']:+.2f} ({row['ci_low']:+.2f}, {row['ci_high']:+.2f}) | "
            f"{row['p_value_holm']:.3f} | {'yes' if equivalent else 'no'}"
            f" ({row['equivalence_p_value_holm']:.3f}) | {mc['n10_total']} / {mc['n01_total']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="analyses/results/fashion_mnist")
    args = parser.parse_args(argv)
    from analyses.fashion_mnist_study import write_report

    with open(write_report(args.out)) as f:
        print(markdown(json.load(f)))


if __name__ == "__main__":
    main()
