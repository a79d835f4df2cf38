"""The scripts behind the benchmark tables (docs, BENCHMARKS.md) run and measure what they say."""

import json
import math

import pytest

from benchmarks import family, output_scale, overhead, study_throughput


def test_output_scale_after_batch_norm_is_one_over_sqrt_n_with_the_papers_convention():
    row = output_scale.measure(8)
    assert row["bn_rms"] == pytest.approx(1.0, abs=0.01)
    assert row["backward_ratio"] == pytest.approx(1 / 8, rel=0.1)
    assert row["ortho_ratio"] == pytest.approx(1.0, rel=0.1)
    assert row["forward_ratio"] == pytest.approx(8.0, rel=0.1)
    assert min(row[f"{n}_correlation"] for n in ("backward", "ortho", "forward")) > 0.99


@pytest.mark.slow
def test_overhead_benchmark_times_a_row_against_its_baseline(tmp_path):
    out = tmp_path / "overhead.json"
    args = ["--rows", "cifar_resnet18", "--cifar-batch", "2", "--repeats", "1", "--warmup", "0"]
    assert overhead.main([*args, "--out", str(out)]) == 0
    (result,) = json.loads(out.read_text())["results"]
    assert result["placement"] == "sbn34" and result["paper_overhead_percent"] == "16"
    assert result["bn_median_s"] > 0 and result["sbn_median_s"] > 0


@pytest.mark.slow
def test_family_benchmark_times_each_spectral_norm_against_its_flax_twin(tmp_path):
    out = tmp_path / "family.json"
    args = ["--shapes", "2,4,4,32", "--repeats", "1", "--warmup", "0", "--out", str(out)]
    assert family.main(args) == 0
    (shape,) = json.loads(out.read_text())["shapes"]
    results = shape["results"]
    assert set(results) == {f"{k}/{c}" for k in family.KINDS for c in ("flax", "auto", "fft")}
    for name, entry in results.items():
        assert entry["kind"] == name.split("/")[0]
        twin = results[f"{entry['kind']}/flax"]
        assert entry["time_ratio"] == pytest.approx(entry["median_s"] / twin["median_s"])


@pytest.mark.slow
def test_study_throughput_times_the_train_step_of_both_norms():
    rates = study_throughput.measure(width=2, repeats=1)
    assert set(rates) == set(study_throughput.NORMS)
    assert all(math.isfinite(r) and r > 0 for r in rates.values())
