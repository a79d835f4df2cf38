"""analyses.paired_stats: each statistic against an independent computation; its input checks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from analyses import paired_stats

RTOL = 1e-10


def _approx(x: float) -> object:
    return pytest.approx(x, rel=RTOL, abs=0)


# ---------------------------------------------------------------------------- paired difference


def test_paired_difference_matches_scipy_ttest_rel():
    a = [97.50, 98.06, 96.94, 97.78, 98.33, 97.22]
    b = [97.22, 97.78, 97.22, 97.50, 97.78, 96.94]
    result = paired_stats.paired_difference(a, b)
    reference = stats.ttest_rel(a, b)
    d = np.subtract(a, b)
    assert result.n == 6
    assert result.mean == _approx(d.mean())
    assert result.std == _approx(d.std(ddof=1))
    assert result.standard_error == _approx(d.std(ddof=1) / math.sqrt(6))
    assert result.t == _approx(reference.statistic)
    assert result.p_value == _approx(reference.pvalue)
    low, high = reference.confidence_interval(0.95)
    assert (result.ci_low, result.ci_high) == (_approx(low), _approx(high))


def test_paired_difference_interval_and_p_value_in_closed_form():
    # Differences 1, 2, 3: mean 2, std 1, se 1/sqrt(3), 2 degrees of freedom, where Student's t
    # has the closed-form CDF F(t) = 1/2 + t / (2 sqrt(2 + t^2)), so that
    # F^-1(0.975) = 0.95 sqrt(2 / (1 - 0.95^2)) and the two-sided p of t is 1 - t / sqrt(2 + t^2).
    result = paired_stats.paired_difference([11.0, 12.0, 13.0], [10.0, 10.0, 10.0])
    quantile = 0.95 * math.sqrt(2 / (1 - 0.95**2))
    se = 1 / math.sqrt(3)
    t = 2 / se
    assert (result.mean, result.std, result.standard_error) == (_approx(2), _approx(1), _approx(se))
    assert result.ci_low == _approx(2 - quantile * se)
    assert result.ci_high == _approx(2 + quantile * se)
    assert result.t == _approx(t)
    assert result.p_value == _approx(1 - t / math.sqrt(2 + t**2))
    # A 50% interval: F^-1(0.75) = 0.5 sqrt(2 / 0.75).
    half = paired_stats.paired_difference([11.0, 12.0, 13.0], [10.0] * 3, confidence=0.5)
    assert half.ci_high - 2 == _approx(0.5 * math.sqrt(2 / 0.75) * se)


def test_paired_difference_is_a_minus_b():
    result = paired_stats.paired_difference([1.0, 2.0, 2.5], [2.0, 4.0, 3.0])
    assert result.mean == _approx(-7 / 6)
    assert result.t < 0 and result.ci_low < result.mean < result.ci_high
    swapped = paired_stats.paired_difference([2.0, 4.0, 3.0], [1.0, 2.0, 2.5])
    assert (swapped.mean, swapped.t, swapped.ci_low) == (-result.mean, -result.t, -result.ci_high)
    assert swapped.p_value == result.p_value


def test_constant_differences_give_a_zero_width_interval():
    # 0.3 points better on every seed, but in float the differences are 0.3 only up to rounding
    # (0.29999999999999716, 0.3000000000000007, ...), which must still count as constant.
    a = np.array([97.5, 98.1, 97.9, 12.3])
    b = np.array([97.2, 97.8, 97.6, 12.0])
    assert np.ptp(a - b) > 0
    result = paired_stats.paired_difference(a, b)
    assert (result.std, result.standard_error) == (0.0, 0.0)
    assert result.ci_low == result.ci_high == result.mean == pytest.approx(0.3, abs=1e-12)
    assert (result.t, result.p_value) == (math.inf, 0.0)
    negative = paired_stats.paired_difference(b, a)
    assert (negative.t, negative.p_value) == (-math.inf, 0.0)
    same = paired_stats.paired_difference(a, a.copy())
    assert (same.mean, same.ci_low, same.ci_high, same.t, same.p_value) == (0, 0, 0, 0, 1)


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "message"),
    [
        ([1.0, 2.0, 3.0], [1.0, 2.0], {}, "same length"),
        ([1.0], [2.0], {}, "at least 2 pairs"),
        ([[1.0, 2.0]], [[1.0, 2.0]], {}, "1-D"),
        ([1.0, math.nan], [1.0, 2.0], {}, "finite"),
        ([1.0, 2.0], [1.0, 3.0], {"confidence": 95}, r"confidence must lie in \(0, 1\)"),
    ],
)
def test_paired_difference_rejects_bad_input(a, b, kwargs, message):
    with pytest.raises(ValueError, match=message):
        paired_stats.paired_difference(a, b, **kwargs)


# ---------------------------------------------------------------------------- equivalence (TOST)


def test_clearly_equivalent_variants_pass_tost():
    b = np.array([97.0, 98.0, 96.5, 97.5, 98.5, 97.25])
    a = b + np.array([0.03, 0.05, 0.07, 0.04, 0.06, 0.05])  # ~0.05 ± 0.02 points
    result = paired_stats.equivalence_test(a, b, margin=0.3)
    d = a - b
    assert result.equivalent and result.p_value < 1e-5
    # Each one-sided test is a one-sample t test of the differences against a margin.
    lower = stats.ttest_1samp(d, -0.3, alternative="greater").pvalue
    upper = stats.ttest_1samp(d, 0.3, alternative="less").pvalue
    assert (result.p_lower, result.p_upper) == (_approx(lower), _approx(upper))
    assert result.p_value == max(result.p_lower, result.p_upper)
    # The 90% interval, the (1 - 2 alpha) one.
    low, high = stats.ttest_1samp(d, 0).confidence_interval(0.90)
    assert (result.ci_low, result.ci_high) == (_approx(low), _approx(high))
    assert -0.3 < result.ci_low < result.ci_high < 0.3


def test_a_half_point_difference_is_not_equivalent_within_0_3():
    b = np.array([97.0, 98.0, 96.5, 97.5, 98.5])
    a = b + np.array([0.45, 0.55, 0.5, 0.4, 0.6])
    result = paired_stats.equivalence_test(a, b, margin=0.3)
    d = a - b
    assert not result.equivalent and result.p_value > 0.9
    assert result.p_value == result.p_upper
    assert result.p_value == _approx(stats.ttest_1samp(d, 0.3, alternative="less").pvalue)


def test_noisy_small_differences_are_neither_different_nor_equivalent():
    d = np.array([0.8, -0.6, 0.3, -0.5, 0.1])  # mean 0.02, std 0.58 points
    b = np.full(5, 97.0)
    equivalence = paired_stats.equivalence_test(b + d, b, margin=0.3)
    assert paired_stats.paired_difference(b + d, b).p_value > 0.5
    assert not equivalence.equivalent and equivalence.p_value > 0.05
    assert equivalence.ci_low < -0.3  # the interval decides the same way as the p-value


def test_constant_differences_are_equivalent_exactly_when_inside_the_margin():
    b = np.array([97.0, 98.0, 96.0])
    inside = paired_stats.equivalence_test(b + 0.2, b, margin=0.3)
    assert (inside.p_value, inside.equivalent, inside.ci_low) == (0.0, True, pytest.approx(0.2))
    outside = paired_stats.equivalence_test(b - 0.4, b, margin=0.3)
    assert (outside.p_value, outside.equivalent) == (1.0, False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"margin": 0.0}, "margin must be a positive"),
        ({"margin": -0.3}, "margin must be a positive"),
        ({"alpha": 0.5}, r"alpha must lie in \(0, 0.5\)"),
    ],
)
def test_equivalence_rejects_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        paired_stats.equivalence_test([1.0, 2.0, 3.0], [1.0, 2.5, 3.5], **kwargs)


def test_equivalence_rejects_unequal_lengths():
    with pytest.raises(ValueError, match="same length"):
        paired_stats.equivalence_test([1.0, 2.0, 3.0], [1.0, 2.0])


# ---------------------------------------------------------------------------- Holm


def test_holm_textbook_example_keeps_the_input_kind():
    assert paired_stats.holm([0.01, 0.04, 0.03]) == [_approx(0.03), _approx(0.06), _approx(0.06)]
    adjusted = paired_stats.holm({"x": 0.01, "y": 0.04, "z": 0.03})
    assert list(adjusted) == ["x", "y", "z"]
    assert adjusted == {"x": _approx(0.03), "y": _approx(0.06), "z": _approx(0.06)}
    assert paired_stats.holm(()) == []


def test_holm_is_monotone_and_capped_at_one():
    # Sorted 0.005, 0.01, 0.02, 0.4, 0.6 times 5, 4, 3, 2, 1: 0.025, 0.04, 0.06, 0.8, 0.6 ->
    # running maximum 0.025, 0.04, 0.06, 0.8, 0.8.
    raw = [0.4, 0.01, 0.6, 0.005, 0.02]
    expected = [0.8, 0.04, 0.8, 0.025, 0.06]
    assert paired_stats.holm(raw) == [_approx(p) for p in expected]
    assert paired_stats.holm([0.5, 0.6, 0.9]) == [1.0, 1.0, 1.0]
    assert paired_stats.holm([0.02, 0.02]) == [_approx(0.04), _approx(0.04)]


@pytest.mark.parametrize("bad", [[0.1, 1.5], [-0.01], [0.2, math.nan]])
def test_holm_rejects_values_outside_zero_one(bad):
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        paired_stats.holm(bad)


# ---------------------------------------------------------------------------- McNemar


def test_mcnemar_counts_discordant_images_and_is_exact():
    # 2 images only b gets right, 8 only a, 30 both, 5 neither: the two-sided binomial p of 8 of
    # 10 at 1/2 is 2 (C(10,0) + C(10,1) + C(10,2)) / 2^10 = 112 / 1024.
    a = np.array([False] * 2 + [True] * 8 + [True] * 30 + [False] * 5)
    b = np.array([True] * 2 + [False] * 8 + [True] * 30 + [False] * 5)
    result = paired_stats.mcnemar(a, b)
    assert (result.n, result.n01, result.n10) == (45, 2, 8)
    assert result.p_value == _approx(112 / 1024)
    assert result.difference == _approx(100 * 6 / 45)
    assert paired_stats.mcnemar(b, a).p_value == _approx(112 / 1024)


def test_mcnemar_one_sided_disagreement_and_no_disagreement():
    a = np.array([1, 1, 1, 1, 1, 0, 1])
    b = np.array([0, 0, 0, 0, 0, 0, 1])
    assert paired_stats.mcnemar(a, b).p_value == _approx(2 / 32)  # 5 of 5
    same = paired_stats.mcnemar(a, a)
    assert (same.n01, same.n10, same.difference, same.p_value) == (0, 0, 0.0, 1.0)


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        ([True, False, True], [True, False], "same test images"),
        ([True, False], [2, 1], "booleans"),
        ([], [], "at least one test image"),
        ([[True]], [[True]], "1-D"),
    ],
)
def test_mcnemar_rejects_bad_input(a, b, message):
    with pytest.raises(ValueError, match=message):
        paired_stats.mcnemar(a, b)


def test_mcnemar_per_seed_uses_the_common_seeds():
    correct_a = {2: [True, True, False], 0: [True, False, False], 5: [True]}
    correct_b = {0: [False, False, False], 2: [True, True, True]}
    per_seed = paired_stats.mcnemar_per_seed(correct_a, correct_b)
    assert list(per_seed) == [0, 2]
    assert (per_seed[0].n10, per_seed[0].n01, per_seed[2].n10, per_seed[2].n01) == (1, 0, 0, 1)
    with pytest.raises(ValueError, match="share no seed"):
        paired_stats.mcnemar_per_seed({0: [True]}, {1: [True]})


# ---------------------------------------------------------------------------- contrast table


RESULTS = {
    "bn": {0: 97.22, 1: 97.50, 2: 96.94, 3: 97.78, 7: 50.0},
    "bn+sbn34": {3: 97.78, 2: 97.22, 1: 97.78, 0: 97.50, 4: 10.0},
    "2bn34": {0: 97.22, 1: 97.22, 2: 97.50, 3: 97.50},
}


def test_contrast_table_pairs_common_seeds_and_adjusts_each_family():
    contrasts = [("bn+sbn34", "bn"), ("2bn34", "bn"), ("bn+sbn34", "2bn34")]
    table = paired_stats.contrast_table(RESULTS, contrasts, margin=0.3)
    assert [(row["variant_a"], row["variant_b"]) for row in table] == contrasts
    assert all(row["seeds"] == [0, 1, 2, 3] for row in table)
    for row, (va, vb) in zip(table, contrasts, strict=True):
        a = [RESULTS[va][s] for s in range(4)]
        b = [RESULTS[vb][s] for s in range(4)]
        test = paired_stats.paired_difference(a, b)
        equivalence = paired_stats.equivalence_test(a, b, margin=0.3)
        assert row["mean_difference"] == test.mean and row["p_value"] == test.p_value
        assert (row["ci_low"], row["ci_high"], row["t"]) == (test.ci_low, test.ci_high, test.t)
        assert row["equivalence_p_value"] == equivalence.p_value
        assert row["equivalent"] == equivalence.equivalent and row["margin"] == 0.3
    for key in ("p_value", "equivalence_p_value"):
        expected = paired_stats.holm([row[key] for row in table])
        assert [row[f"{key}_holm"] for row in table] == expected
    assert table[0]["p_value_holm"] > table[0]["p_value"]
    json.dumps(table, allow_nan=False)  # plain, finite values only


def test_contrast_table_turns_a_degenerate_t_into_none():
    results = {"x": {0: 97.5, 1: 98.0}, "y": {0: 97.0, 1: 97.5}}
    (row,) = paired_stats.contrast_table(results, [("x", "y")])
    assert (row["t"], row["p_value"], row["std"]) == (None, 0.0, 0.0)
    json.dumps(row, allow_nan=False)


@pytest.mark.parametrize(
    ("contrasts", "message"),
    [
        ([("bn", "gn")], "no results for gn"),
        ([("bn", "bn+sbn34")], "needs at least 2 seeds"),
    ],
)
def test_contrast_table_rejects_bad_contrasts(contrasts, message):
    results = {"bn": {0: 97.0, 1: 98.0}, "bn+sbn34": {1: 97.5, 2: 98.0}}
    with pytest.raises(ValueError, match=message):
        paired_stats.contrast_table(results, contrasts)


def test_contrast_table_rejects_a_non_positive_margin():
    with pytest.raises(ValueError, match="margin must be a positive"):
        paired_stats.contrast_table(RESULTS, [("bn+sbn34", "bn")], margin=0)
