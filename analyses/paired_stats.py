"""Paired-seed statistics for comparing classifier variants (issue 22).

Every variant is trained with the same seeds, which fix the initialization and the data order,
so the runs of two variants pair by seed: the quantity compared is the per-seed difference of
test accuracy, and its spread over seeds, not the spread of each variant apart, measures the
noise. Accuracies are in percentage points (0-100) throughout, and so are differences, standard
errors, intervals and equivalence margins.

* :func:`paired_difference`: the mean of ``a - b`` over seeds with its Student-t interval and
  the paired t test (is there a difference?);
* :func:`equivalence_test`: the paired TOST (two one-sided t tests) against ``±margin``
  (is any difference smaller than ``margin``?);
* :func:`holm`: Holm–Bonferroni adjusted p-values for a family of tests;
* :func:`mcnemar`, :func:`mcnemar_per_seed`: the exact McNemar test of two runs on the same
  test images, from which of the images each run classified correctly;
* :func:`contrast_table`: paired difference and equivalence for a list of contrasts over the
  seeds both variants have, with Holm adjustment over the contrasts, as JSON-ready rows.

A non-significant t test is no evidence of equality; the equivalence test is the one that can
conclude "the variants differ by less than ``margin`` points". At level ``alpha`` (0.05), a
contrast is significantly different when its (Holm-adjusted) t-test p-value is below ``alpha``
and equivalent within ``±margin`` when its (Holm-adjusted) equivalence p-value is below
``alpha``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, overload

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

# Differences whose range over seeds is at most this many points count as identical, and a mean
# of at most this size as zero: accuracies computed from the same image counts differ only by
# float rounding (~1e-14 points), while one test image of even a million moves accuracy by 1e-4.
CONSTANT_ATOL = 1e-9
DEFAULT_MARGIN = 0.3  # points; about one of 360 test images (0.28 points).


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """The mean paired difference ``a - b`` over seeds, in percentage points.

    Attributes:
        n: the number of pairs (seeds).
        mean: the mean of ``a - b``.
        std: the standard deviation of ``a - b`` over seeds (ddof=1).
        standard_error: ``std / sqrt(n)``.
        confidence: the coverage of the interval, e.g. 0.95.
        ci_low, ci_high: the two-sided Student-t interval ``mean ± t(n-1) * standard_error``.
        t: the paired t statistic ``mean / standard_error`` (n - 1 degrees of freedom).
        p_value: its two-sided p-value against a mean difference of 0.
    """

    n: int
    mean: float
    std: float
    standard_error: float
    confidence: float
    ci_low: float
    ci_high: float
    t: float
    p_value: float


@dataclasses.dataclass(frozen=True)
class Equivalence:
    """The paired TOST of ``|mean(a - b)| < margin``, in percentage points.

    Attributes:
        n: the number of pairs (seeds).
        mean: the mean of ``a - b``.
        margin: the equivalence margin; the null hypothesis is ``|true mean| >= margin``.
        alpha: the level of each one-sided test.
        p_lower: one-sided p-value of ``H0: true mean <= -margin``.
        p_upper: one-sided p-value of ``H0: true mean >= +margin``.
        p_value: ``max(p_lower, p_upper)``; equivalence at level ``alpha`` means
            ``p_value < alpha``.
        ci_low, ci_high: the ``1 - 2 alpha`` (90% for alpha 0.05) Student-t interval.
        equivalent: whether that interval lies strictly inside ``(-margin, +margin)``; the same
            decision as ``p_value < alpha``.
    """

    n: int
    mean: float
    margin: float
    alpha: float
    p_lower: float
    p_upper: float
    p_value: float
    ci_low: float
    ci_high: float
    equivalent: bool


@dataclasses.dataclass(frozen=True)
class McNemar:
    """The exact McNemar test of two runs on the same ``n`` test images.

    Attributes:
        n: the number of test images.
        n01: images run ``a`` got wrong and run ``b`` right.
        n10: images run ``a`` got right and run ``b`` wrong.
        difference: accuracy of ``a`` minus accuracy of ``b``, ``100 (n10 - n01) / n`` points.
        p_value: the exact two-sided binomial p-value of ``n10`` out of ``n01 + n10`` at 1/2
            (1 when the runs disagree on no image).
    """

    n: int
    n01: int
    n10: int
    difference: float
    p_value: float


def _differences(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """``a - b`` as a float array, after checking the two are equal-length finite 1-D data."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(
            f"a and b must be 1-D: one accuracy per seed; got shapes {a.shape} and {b.shape}"
        )
    if len(a) != len(b):
        raise ValueError(
            f"a and b must have the same length (one accuracy per seed, in the same seed order); "
            f"got {len(a)} and {len(b)}"
        )
    if len(a) < 2:
        raise ValueError(f"a paired comparison needs at least 2 pairs (seeds); got {len(a)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("a and b must hold finite accuracies (percentage points); got NaN or inf")
    return a - b


def _spread(d: np.ndarray) -> tuple[float, float, float]:
    """Mean, std (ddof=1) and standard error of ``d``; std 0 when ``d`` is constant."""
    mean = float(np.mean(d))
    if np.ptp(d) <= CONSTANT_ATOL:
        return (0.0 if abs(mean) <= CONSTANT_ATOL else mean), 0.0, 0.0
    std = float(np.std(d, ddof=1))
    return mean, std, std / math.sqrt(len(d))


def paired_difference(a: ArrayLike, b: ArrayLike, confidence: float = 0.95) -> PairedDifference:
    """The mean of ``a - b`` with its Student-t interval and the paired t test.

    Args:
        a, b: shape ``(n,)``, ``n >= 2``: accuracies in percentage points, one per seed, in the
            same seed order.
        confidence: the coverage of the two-sided interval, in (0, 1).

    Returns:
        A :class:`PairedDifference`. If every seed gives the same difference (within
        ``CONSTANT_ATOL`` points) the std is 0 and the t test is degenerate: the interval has
        width 0 at the mean, ``t`` is ``±inf`` and the p-value 0 when the mean is not 0, and
        ``t`` is 0 and the p-value 1 when it is.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), e.g. 0.95; got {confidence}")
    d = _differences(a, b)
    n = len(d)
    mean, std, se = _spread(d)
    if se == 0:
        t = math.copysign(math.inf, mean) if mean else 0.0
        p, half_width = (0.0 if mean else 1.0), 0.0
    else:
        t = mean / se
        p = float(2 * stats.t.sf(abs(t), n - 1))
        half_width = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * se
    return PairedDifference(
        n, mean, std, se, confidence, mean - half_width, mean + half_width, t, p
    )


def equivalence_test(
    a: ArrayLike, b: ArrayLike, margin: float = DEFAULT_MARGIN, alpha: float = 0.05
) -> Equivalence:
    """The paired TOST: is the mean of ``a - b`` within ``±margin`` points?

    Two one-sided paired t tests, of ``H0: mean <= -margin`` and of ``H0: mean >= +margin``;
    equivalence is concluded at level ``alpha`` when both reject, that is when
    ``p_value = max(p_lower, p_upper) < alpha``, equivalently when the ``1 - 2 alpha`` interval
    (90% for alpha 0.05) lies inside ``(-margin, +margin)``.

    Args:
        a, b: shape ``(n,)``, ``n >= 2``: accuracies in percentage points, one per seed, in the
            same seed order.
        margin: the equivalence margin in percentage points, > 0.
        alpha: the level of each one-sided test, in (0, 0.5).

    Returns:
        An :class:`Equivalence`. With constant differences (std 0, see
        :func:`paired_difference`) the interval has width 0 and the p-value is 0 when
        ``|mean| < margin``, else 1.
    """
    if not margin > 0:
        raise ValueError(f"margin must be a positive number of percentage points; got {margin}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must lie in (0, 0.5), e.g. 0.05; got {alpha}")
    d = _differences(a, b)
    n = len(d)
    mean, _, se = _spread(d)
    if se == 0:
        p_lower = 0.0 if mean > -margin else 1.0
        p_upper = 0.0 if mean < margin else 1.0
        half_width = 0.0
    else:
        p_lower = float(stats.t.sf((mean + margin) / se, n - 1))
        p_upper = float(stats.t.cdf((mean - margin) / se, n - 1))
        half_width = float(stats.t.ppf(1 - alpha, n - 1)) * se
    low, high = mean - half_width, mean + half_width
    return Equivalence(
        n=n,
        mean=mean,
        margin=float(margin),
        alpha=float(alpha),
        p_lower=p_lower,
        p_upper=p_upper,
        p_value=max(p_lower, p_upper),
        ci_low=low,
        ci_high=high,
        equivalent=bool(-margin < low and high < margin),
    )


@overload
def holm(p_values: Mapping[str, float]) -> dict[str, float]: ...
@overload
def holm(p_values: Sequence[float]) -> list[float]: ...
def holm(p_values: Mapping[str, float] | Sequence[float]) -> dict[str, float] | list[float]:
    """Holm–Bonferroni adjusted p-values of a family of ``m`` tests.

    The ``k``-th smallest p-value (k = 1..m) becomes ``(m - k + 1) p``, then the running maximum
    over the sorted order (so that the adjusted values keep the order of the raw ones), capped
    at 1. Rejecting the tests whose adjusted p-value is below ``alpha`` controls the
    family-wise error rate at ``alpha``.

    Args:
        p_values: a mapping name -> p-value, or a sequence of p-values, each in [0, 1].

    Returns:
        A dict with the same keys in the same order for a mapping, else a list in input order.
    """
    if isinstance(p_values, Mapping):
        names: list[str] | None = list(p_values)
        raw = np.asarray([p_values[name] for name in p_values], dtype=float)
    else:
        names, raw = None, np.asarray(list(p_values), dtype=float)
    if raw.ndim != 1:
        raise ValueError(f"p_values must be a flat sequence or a mapping; got shape {raw.shape}")
    if not ((raw >= 0) & (raw <= 1)).all():  # also catches NaN
        raise ValueError(f"p-values must lie in [0, 1]; got {raw.tolist()}")
    m = len(raw)
    order = np.argsort(raw, kind="stable")
    scaled = (m - np.arange(m)) * raw[order]
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    values = [float(p) for p in adjusted]
    return dict(zip(names, values, strict=True)) if names is not None else values


def _correct(values: ArrayLike, name: str) -> np.ndarray:
    x = np.asarray(values)
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D, one entry per test image; got shape {x.shape}")
    if x.dtype != bool and not np.isin(x, (0, 1)).all():
        raise ValueError(f"{name} must be booleans (or 0/1): whether each test image is correct")
    return x.astype(bool)


def mcnemar(correct_a: ArrayLike, correct_b: ArrayLike) -> McNemar:
    """The exact McNemar test of two classifiers on the same test images.

    Args:
        correct_a, correct_b: shape ``(n_images,)``, booleans (or 0/1): whether run ``a``
            (``b``) classified each test image correctly, both over the same images in the
            same order (e.g. ``predictions == labels`` of each run on the test split).

    Returns:
        A :class:`McNemar`: the discordant counts and the exact two-sided binomial p-value
        (``scipy.stats.binomtest`` of ``n10`` successes in ``n01 + n10`` trials at 1/2).
    """
    a, b = _correct(correct_a, "correct_a"), _correct(correct_b, "correct_b")
    if len(a) != len(b):
        raise ValueError(
            "correct_a and correct_b must be over the same test images; got predictions of "
            f"{len(a)} and {len(b)} images"
        )
    if len(a) == 0:
        raise ValueError("correct_a and correct_b must cover at least one test image; got 0")
    n01, n10 = int(np.sum(~a & b)), int(np.sum(a & ~b))
    p = float(stats.binomtest(n10, n01 + n10, 0.5).pvalue) if n01 + n10 else 1.0
    return McNemar(len(a), n01, n10, 100.0 * (n10 - n01) / len(a), p)


def mcnemar_per_seed(
    correct_a: Mapping[Hashable, ArrayLike], correct_b: Mapping[Hashable, ArrayLike]
) -> dict[Hashable, McNemar]:
    """:func:`mcnemar` for every seed both mappings (seed -> per-image correctness) have.

    Seeds come back sorted (they must be mutually comparable). The per-seed tests are separate
    tests; combine them only through their own family adjustment (e.g. :func:`holm`).
    """
    seeds = sorted(set(correct_a) & set(correct_b))  # type: ignore[type-var]
    if not seeds:
        raise ValueError("correct_a and correct_b share no seed")
    return {seed: mcnemar(correct_a[seed], correct_b[seed]) for seed in seeds}


def _plain(x: float) -> float | None:
    """A JSON-safe float: non-finite values (a degenerate t statistic) become None."""
    return float(x) if math.isfinite(x) else None


def contrast_table(
    results: Mapping[str, Mapping[Hashable, float]],
    contrasts: Sequence[tuple[str, str]],
    margin: float = DEFAULT_MARGIN,
    confidence: float = 0.95,
    alpha: float = 0.05,
) -> list[dict]:
    """Paired difference and equivalence test of each contrast, Holm-adjusted over contrasts.

    Args:
        results: variant name -> {seed: test accuracy in percentage points}. Seeds must be
            mutually comparable (all ints, or all strings).
        contrasts: ``(variant_a, variant_b)`` pairs; each row compares ``a - b`` over the seeds
            both variants have, sorted.
        margin, alpha: as in :func:`equivalence_test`; confidence: as in
            :func:`paired_difference`.

    Returns:
        One dict per contrast, in the order given, of plain Python values (JSON-serializable
        with ``allow_nan=False``): ``variant_a``, ``variant_b``, ``seeds`` (the list used), the
        fields of :class:`PairedDifference` (``mean`` as ``mean_difference``; a non-finite
        ``t`` as None) and ``p_value_holm``; and the equivalence fields ``margin``, ``alpha``,
        ``equivalence_p_value``, ``equivalence_p_value_holm``, ``equivalence_ci_low``,
        ``equivalence_ci_high`` and ``equivalent`` (the unadjusted decision). Holm runs over the
        contrasts given, separately for the t tests and for the equivalence tests.
    """
    rows: list[dict[str, Any]] = []
    for variant_a, variant_b in contrasts:
        for variant in (variant_a, variant_b):
            if variant not in results:
                raise ValueError(f"contrast {variant_a} - {variant_b}: no results for {variant}")
        seeds = sorted(set(results[variant_a]) & set(results[variant_b]))  # type: ignore[type-var]
        if len(seeds) < 2:
            raise ValueError(
                f"contrast {variant_a} - {variant_b}: needs at least 2 seeds both variants have; "
                f"got {seeds}"
            )
        a = [results[variant_a][s] for s in seeds]
        b = [results[variant_b][s] for s in seeds]
        test = paired_difference(a, b, confidence)
        equivalence = equivalence_test(a, b, margin, alpha)
        rows.append(
            {
                "variant_a": variant_a,
                "variant_b": variant_b,
                "seeds": [int(s) if isinstance(s, numbers.Integral) else s for s in seeds],
                "n": test.n,
                "mean_difference": test.mean,
                "std": test.std,
                "standard_error": test.standard_error,
                "confidence": test.confidence,
                "ci_low": test.ci_low,
                "ci_high": test.ci_high,
                "t": _plain(test.t),
                "p_value": test.p_value,
                "margin": equivalence.margin,
                "alpha": equivalence.alpha,
                "equivalence_p_value": equivalence.p_value,
                "equivalence_ci_low": equivalence.ci_low,
                "equivalence_ci_high": equivalence.ci_high,
                "equivalent": equivalence.equivalent,
            }
        )
    for key in ("p_value", "equivalence_p_value"):
        for row, adjusted in zip(rows, holm([row[key] for row in rows]), strict=True):
            row[f"{key}_holm"] = adjusted
    return rows
