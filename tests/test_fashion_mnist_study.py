"""Issue 22's study: the sweep's plan and commands, its resumability, the report's tables, and the
logit-ratio measurement's weight sharing; the sweep itself by a two-run smoke test on IDX files
the test writes (the real data are not needed)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from analyses import fashion_mnist_report, fashion_mnist_study, logit_ratio, paired_stats
from tests.fake_fashion_mnist import write_files
from train import cadences, train
from train.configs import fashion_mnist_resnet18


def test_the_pilot_runs_first_then_every_variant_seed_after_seed():
    order = fashion_mnist_study.planned_runs(fashion_mnist_study.VARIANTS, seeds=4)
    pilot = [(v, s) for s in (0, 1, 2) for v in ("bn", "sbn34")]
    assert order[:6] == pilot
    rest = [(v, s) for s in range(4) for v in fashion_mnist_study.VARIANTS if (v, s) not in pilot]
    assert order[6:] == rest
    assert len(set(order)) == len(order) == 4 * len(fashion_mnist_study.VARIANTS)
    no_pilot = fashion_mnist_study.planned_runs(("bn", "temperature"), seeds=2, pilot=False)
    assert no_pilot == [("bn", 0), ("temperature", 0), ("bn", 1), ("temperature", 1)]


def _args(tmp_path, **changes):
    parser_defaults = dict(
        out=str(tmp_path / "out"), runs=str(tmp_path / "runs"), data_dir=str(tmp_path / "tfds"),
        manual_dir=None, base_width=8, per_class=600, epochs=15, batch_size=128, argv=[],
    )  # fmt: skip
    return type("Args", (), {**parser_defaults, **changes})()


def test_a_run_is_the_recipe_at_the_studys_size_with_its_outputs_on(tmp_path):
    args = _args(tmp_path)
    command = fashion_mnist_study.train_command(args, "temperature", 3)
    assert command[1:3] == ["-m", "train"]
    flags = dict(c.split("=", 1) for c in command if c.startswith("--config."))
    assert command[command.index("--config") + 1] == (
        "train/configs/fashion_mnist_resnet18.py:temperature,600,15"
    )
    assert command[command.index("--workdir") + 1] == str(tmp_path / "runs" / "temperature_s3")
    assert flags["--config.seed"] == "3" and flags["--config.base_width"] == "8"
    assert flags["--config.save_test_predictions"] == flags["--config.record_block_norms"] == "True"
    # Validation, checkpoints and the logged training loss once per epoch of 6000 images: the
    # recipe's epochs for the first two (a step flag with them would be refused), steps for logs.
    assert flags["--config.log_every_steps"] == "46"
    assert not {"--config.eval_every_steps", "--config.checkpoint_every_steps"} & set(flags)
    recipe = fashion_mnist_resnet18.get_config("temperature,600,15")
    assert recipe.eval_every_epochs == recipe.checkpoint_every_epochs == 1.0
    every = cadences.steps(train.with_defaults(recipe), steps_per_epoch=6000 // 128)
    assert (every.eval, every.checkpoint) == (46, 46)
    assert flags["--config.data_dir"] == str(tmp_path / "tfds")


def test_a_resumed_sweep_with_other_settings_is_refused(tmp_path):
    fashion_mnist_study.check_settings(_args(tmp_path))
    fashion_mnist_study.check_settings(_args(tmp_path))  # The same settings: accepted.
    with pytest.raises(SystemExit, match=r"other settings .*'epochs': \(15, 30\)"):
        fashion_mnist_study.check_settings(_args(tmp_path, epochs=30))


def _write_run(out, variant, seed, correct, labels, train_loss=0.5):
    folder = out / "runs" / f"{variant}_s{seed}"
    folder.mkdir(parents=True)
    prediction = np.where(correct, labels, (labels + 1) % 10)
    np.savez(folder / "test_predictions.npz", prediction=prediction, label=labels)
    summary = {
        "test_accuracy": float(np.mean(correct)), "train_loss": train_loss,
        "best_validation_accuracy": 0.9, "selected_step": 46 * seed,
    }  # fmt: skip
    (folder / "summary.json").write_text(json.dumps(summary))
    records = [
        {"step": 0, "norms": {"BasicBlock_7": 1.0}},
        {"step": 46, "norms": {"BasicBlock_7": 3.0 + seed}},
    ]
    (folder / "block_norms.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_the_report_pairs_runs_by_seed_and_counts_images(tmp_path):
    out = tmp_path / "out"
    fashion_mnist_study.check_settings(_args(tmp_path))
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 1000)
    correct = {}
    for seed in range(3):
        rates = {"bn": 0.90, "sbn34": 0.91, "2bn34": 0.905, "temperature": 0.9}
        for variant, rate in rates.items():
            correct[variant, seed] = rng.random(1000) < rate
            _write_run(out, variant, seed, correct[variant, seed], labels, train_loss=seed + 0.5)
    result = fashion_mnist_report.report(str(out))
    bn = result["variants"]["bn"]
    points = [100 * correct["bn", s].mean() for s in range(3)]
    assert bn["seeds"] == [0, 1, 2] and bn["test_accuracy"] == dict(enumerate(points))
    assert bn["mean"] == pytest.approx(np.mean(points), rel=1e-12)
    assert bn["final_train_loss_mean"] == pytest.approx(1.5)
    rows = {(r["variant_a"], r["variant_b"]): r for r in result["primary_contrasts"]}
    assert list(rows) == list(fashion_mnist_report.PRIMARY)
    expected = paired_stats.paired_difference(
        [100 * correct["sbn34", s].mean() for s in range(3)], points
    )
    row = rows["sbn34", "bn"]
    assert row["mean_difference"] == pytest.approx(expected.mean, rel=1e-12)
    assert row["ci_low"] == pytest.approx(expected.ci_low, rel=1e-12)
    p_values = [r["p_value"] for r in rows.values()]
    assert [r["p_value_holm"] for r in rows.values()] == pytest.approx(paired_stats.holm(p_values))
    a_only = sum(int(np.sum(correct["sbn34", s] & ~correct["bn", s])) for s in range(3))
    b_only = sum(int(np.sum(~correct["sbn34", s] & correct["bn", s])) for s in range(3))
    assert (row["mcnemar"]["n10_total"], row["mcnemar"]["n01_total"]) == (a_only, b_only)
    # Only contrasts whose variants exist are reported; the secondary family is apart.
    assert [(r["variant_a"], r["variant_b"]) for r in result["secondary_contrasts"]] == [
        ("temperature", "bn"),
        ("2bn34", "bn"),
    ]
    assert result["block_norms"]["bn"]["BasicBlock_7"] == {"init": 1.0, "final": 4.0}
    table = fashion_mnist_report.markdown(result)
    assert f"| `bn` | 3 | {np.mean(points):.2f} ± {np.std(points, ddof=1):.2f} |" in table


def test_the_report_refuses_runs_scored_on_other_images(tmp_path):
    out = tmp_path / "out"
    fashion_mnist_study.check_settings(_args(tmp_path))
    labels = np.arange(100) % 10
    _write_run(out, "bn", 0, np.ones(100, bool), labels)
    _write_run(out, "sbn34", 0, np.ones(100, bool), (labels + 1) % 10)
    with pytest.raises(ValueError, match="other test images"):
        fashion_mnist_report.report(str(out))


def test_logit_ratio_gives_the_variants_the_bn_models_weights():
    """With shared weights the shrunk-initialization control's logits are the BatchNorm net's
    times 1/4 (module 4's 1/sqrt(4 x 4); module 3's 1/8 is undone by module 4's norms), the 2BN
    control's equal them (a BatchNorm of a normalized map is the identity up to epsilon)."""
    x = jax.random.normal(jax.random.key(1), (16, 32, 32, 1))
    configs = {}
    for name, (variant, extra) in {"bn": ("bn", {}), **logit_ratio.CONTROLS}.items():
        config = train.with_defaults(fashion_mnist_resnet18.get_config(f"{variant},10"))
        config.base_width = 2
        config.update(extra)
        configs[name] = config
    bn = train.create_model(configs["bn"], num_classes=10)
    bn_vars = bn.init(jax.random.key(0), x[:1], train=False)
    z_bn, _ = bn.apply(bn_vars, x, train=True, mutable=["batch_stats"])
    slopes = {}
    for name in ("2bn34", "bn_shrunk_init34"):
        model = train.create_model(configs[name], num_classes=10)
        variables = dict(model.init(jax.random.key(5), x[:1], train=False))
        shared = logit_ratio._shared_weights(bn_vars["params"], variables["params"])
        variables["params"] = shared
        z, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
        slopes[name] = float(jnp.vdot(z, z_bn) / jnp.vdot(z_bn, z_bn))
    assert slopes["bn_shrunk_init34"] == pytest.approx(0.25, rel=5e-3)
    assert slopes["2bn34"] == pytest.approx(1.0, rel=1e-3)
    with pytest.raises(ValueError, match="no kernel"):
        logit_ratio._shared_weights({"head": {"kernel": np.zeros((2, 10))}}, variables["params"])


@pytest.mark.slow
def test_a_two_run_sweep_trains_files_its_results_and_resumes_with_nothing_to_do(tmp_path, capsys):
    """The sweep end to end on small IDX files: two runs (bn and sbn34, one seed) through the
    training loop, one core each, their result files filed and reported; run again, it skips
    them."""
    write_files(tmp_path / "manual", train_count=300, test_count=50)
    argv = [
        "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs"),
        "--data_dir", str(tmp_path / "tfds"), "--manual_dir", str(tmp_path / "manual"),
        "--variants", "bn", "sbn34", "--seeds", "1", "--no_pilot", "--workers", "2",
        "--base_width", "2", "--per_class", "10", "--epochs", "2", "--batch_size", "20",
    ]  # fmt: skip
    fashion_mnist_study.main(argv)
    printed = capsys.readouterr().out
    assert "2 runs to do" in printed and "bn_s0: test accuracy" in printed
    result = fashion_mnist_report.report(str(tmp_path / "out"))
    for variant in ("bn", "sbn34"):
        run = tmp_path / "out" / "runs" / f"{variant}_s0"
        with np.load(run / "test_predictions.npz") as arrays:
            assert arrays["prediction"].shape == arrays["label"].shape == (50,)
        summary = json.loads((run / "summary.json").read_text())
        assert summary["norm"] == {"bn": "bn", "sbn34": "sbn34"}[variant]
        assert summary["steps"] == 2 * 100 // 20  # Two epochs of 10 images per class.
        norms = [json.loads(line) for line in (run / "block_norms.jsonl").read_text().splitlines()]
        assert [r["step"] for r in norms] == [0, 5, 10]  # At init and after each epoch.
        assert result["variants"][variant]["seeds"] == [0]
    assert result["primary_contrasts"] == []  # One seed: no paired interval yet.
    # The report filed with the runs is the one their files give (notebook 07 checks it).
    committed = json.loads((tmp_path / "out" / "report.json").read_text())
    assert committed == json.loads(json.dumps(result))
    fashion_mnist_study.main(argv)
    assert "0 runs to do" in capsys.readouterr().out
