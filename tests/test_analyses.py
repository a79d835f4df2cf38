"""analyses.open_question: its pieces, and a short sweep through the real training loop."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from analyses import open_question


def test_norm_sites_pair_a_second_layer_with_the_norm_before_it():
    outputs = {
        "stem_norm/BatchNorm": jnp.zeros(1),
        "BasicBlock_4/Norm_0/SpatialSpectralBatchNorm/BatchNorm_0": jnp.ones(1),
        "BasicBlock_4/Norm_0/SpatialSpectralBatchNorm/SpectralBatchNorm_0": 2 * jnp.ones(1),
        "BasicBlock_4/Norm_1/BatchNorm": 3 * jnp.ones(1),
        "BasicBlock_4/Norm_1/SecondBatchNorm": 4 * jnp.ones(1),
        "BasicBlock_5/Norm_0/BatchNorm": 5 * jnp.ones(1),
    }
    sites = open_question.norm_sites(outputs)
    assert [s["name"] for s in sites] == [
        "stem_norm",
        "BasicBlock_4/Norm_0",
        "BasicBlock_4/Norm_1",
        "BasicBlock_5/Norm_0",
    ]
    assert [None if s["second"] is None else float(s["second"][0]) for s in sites] == [
        None,
        2.0,
        4.0,
        None,
    ]


def test_paired_comparison_is_the_t_test_of_the_differences():
    accuracies = {"bn": [0.90, 0.91, 0.92, 0.90, 0.93], "bn+sbn34": [0.92, 0.91, 0.95, 0.93, 0.93]}
    runs = [
        {"model": "m", "variant": variant, "seed": seed, "test_accuracy": value}
        for variant, values in accuracies.items()
        for seed, value in enumerate(values)
    ]
    (entry,) = open_question.paired_comparisons(runs, ["m"])
    d = np.subtract(accuracies["bn+sbn34"], accuracies["bn"])
    t = d.mean() / (d.std(ddof=1) / np.sqrt(5))
    assert (entry["variant"], entry["against"], entry["seeds"]) == ("bn+sbn34", "bn", 5)
    assert entry["mean_difference"] == pytest.approx(d.mean())
    assert entry["t"] == pytest.approx(t)
    assert (entry["wins"], entry["ties"]) == (3, 2)
    assert 0.05 < entry["p_value"] < 0.2  # t = 2.45 with 4 degrees of freedom: p = 0.07.
    # Sign test over the 3 untied seeds, all won: two-sided 2 * 0.5**3.
    assert entry["sign_test_p_value"] == pytest.approx(0.25)


def test_a_constant_difference_gets_the_sign_test_and_no_t_test():
    accuracies = {"family:in": [0.98, 0.97, 0.99], "family:sin": [0.96, 0.95, 0.97]}
    runs = [
        {"model": "m", "variant": variant, "seed": seed, "test_accuracy": value}
        for variant, values in accuracies.items()
        for seed, value in enumerate(values)
    ]
    (entry,) = open_question.paired_comparisons(runs, ["m"])
    assert (entry["variant"], entry["against"], entry["wins"]) == ("family:sin", "family:in", 0)
    assert entry["t"] is None and entry["p_value"] is None  # Not -inf and 0.
    assert entry["sign_test_p_value"] == pytest.approx(0.25)


@pytest.mark.slow
def test_short_sweep_trains_tracks_and_writes_its_result(tmp_path):
    out = tmp_path / "result.json"
    argv = ["--quick", "--models", "cifar_resnet18", "--variants", "bn", "bn+sbn34"]
    open_question.main([*argv, "--out", str(out), "--data_dir", str(tmp_path / "tfds")])
    result = json.loads(out.read_text())
    assert result["command"].startswith("python -m analyses.open_question --quick")
    assert [(r["variant"], r["seed"]) for r in result["runs"]] == [("bn", 0), ("bn+sbn34", 0)]
    for run in result["runs"]:
        assert 0.0 <= run["test_accuracy"] <= 1.0
        tracked = run["tracked"]
        assert tracked["epochs"] == [0.0, 1.0]
        sizes = [site["size"] for site in tracked["sites"]]
        assert sizes[0] == 32 and sizes[-1] == 4 and len(sizes) == 20
        paired = [site["size"] for site in tracked["sites"] if site["second"] is not None]
        # SBN34: modules 3 and 4 are the 8x8 and 4x4 stages of the CIFAR ResNet-18.
        assert paired == ([] if run["variant"] == "bn" else [8] * 5 + [4] * 5)
        for site in tracked["sites"]:
            assert len(site["first"]["norm"]) == 2
            assert all(len(p) == 9 for p in site["first"]["percentiles"])
        spectra = tracked["spectra"]
        assert np.shape(spectra["first"]) == (4, 8, 8)
    pair = result["runs"][1]["tracked"]["sites"][10]
    # The paper's "backward" SBN after BN down-scales the feature map by about sqrt(8 * 8).
    ratio = pair["first"]["norm"][0] / pair["second"]["norm"][0]
    assert 4 < ratio < 16
    assert [c["variant"] for c in result["comparisons"]] == ["bn+sbn34"]
