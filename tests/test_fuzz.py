"""A fuzzed contract for ``spectral_batch_norm``: refuse by name, or agree with the reference.

Hypothesis draws an input (rank 2-5, a feature axis and spatial axes that may be
out of range, repeated or overlapping, spatial sizes 1-9 and rarely 0, batch
sizes 0-5, float32/bfloat16/float16/int32/complex64, normal values of standard
deviation 2 around 0, 0.5 or 3), a per-channel scale and bias or none, the options
(``per_frequency``, ``fft_norm``, ``epsilon``, an unknown ``impl`` now and
then) and training or evaluation with running statistics that fit, do not fit
or are missing. The test works out on its own which arguments are wrong; then,
for every impl:

* with a wrong argument the call raises a ``ValueError`` or ``TypeError`` whose
  message names one of the wrong arguments (the library reports the first it
  checks);
* otherwise the output and the statistics agree with the float64 reference of
  tests/reference.py within a tolerance made of the compute dtype's rounding,
  the case's conditioning and the output dtype's rounding, with no NaN or Inf
  (the input is finite), and evaluation returns the running statistics given.

Any other exception fails the test. The number of examples and the seed come
from the Hypothesis profiles in tests/conftest.py: "fuzz" (the default, fixed
seed, what ``make test`` runs), "inner-loop" (a third of the examples, ``make
test-fast``) and "thorough" (``--hypothesis-profile=thorough``).
"""

import dataclasses
import functools
import math
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from sbn_jax import functional as F
from tests.reference import reference_sbn

# Valid values are repeated so that about a fifth of the examples pass every check and are
# computed (a second or so of XLA compiles each, for all impls) and the rest test refusals
# (milliseconds each), which keeps 300 examples within about a minute.
DTYPES = ("float32",) * 3 + ("bfloat16", "bfloat16", "float16", "float16", "int32", "complex64")
FFT_NORMS = (*F.FFT_NORMS * 5, "unitary")
EPSILONS = (1e-5,) * 15 + (-1e-3, math.inf)
SPATIAL_SIZES = (0, *range(1, 10), *range(1, 10), *range(1, 10))
BATCH_SIZES = (0, *range(1, 6), *range(1, 6))
RUNNING = ("fit",) * 4 + ("misfit", "missing")
# float32 rounding: the spectrum, the statistics and the output are computed in float32.
ROUNDING = 2.0**-24
# Half an ulp of the output dtype, relative (the result is rounded to it once at the end).
OUTPUT_ROUNDING = {"float32": 0.0, "bfloat16": 2.0**-8, "float16": 2.0**-11}
# The scale of the inverse transform for n positions, per fft_norm.
INVERSE_SCALE = {"backward": lambda n: 1 / n, "ortho": lambda n: n**-0.5, "forward": lambda n: 1}
MARGIN = 8.0


@dataclasses.dataclass
class Case:
    """One drawn call; ``defects`` lists (what is wrong, the argument names that may be named)."""

    x: jax.Array
    axis: int
    spatial_axes: tuple[int, ...] | None
    per_frequency: bool
    fft_norm: str
    epsilon: float
    use_running_average: bool
    running: F.Statistics | None
    scale: jax.Array | None
    bias: jax.Array | None
    extra_impls: tuple[str, ...]
    defects: list[tuple[str, tuple[str, ...]]]

    def options(self, impl):
        return {
            "axis": self.axis,
            "spatial_axes": self.spatial_axes,
            "per_frequency": self.per_frequency,
            "fft_norm": self.fft_norm,
            "epsilon": self.epsilon,
            "use_running_average": self.use_running_average,
            "impl": impl,
        }

    def defects_for(self, impl):
        """The case's defects plus those of calling it with ``impl``."""
        if impl not in F.IMPLS:
            return [*self.defects, (f"unknown impl {impl!r}", ("impl",))]
        if impl == "closed_form" and self.per_frequency:
            return [*self.defects, ("closed_form with per-frequency statistics", ("impl",))]
        return self.defects


def _layout(rank, axis, spatial_axes):
    """(feature, spatial, batch) axes, or the name of the argument that makes them invalid."""
    if not -rank <= axis < rank:
        return "axis"
    feature = axis % rank
    if spatial_axes is None:
        spatial = [i for i in range(1, rank) if i != feature]
    elif any(not -rank <= a < rank for a in spatial_axes):
        return "spatial_axes"
    else:
        spatial = sorted(a % rank for a in spatial_axes)
        if len(set(spatial)) < len(spatial) or feature in spatial:
            return "spatial_axes"
    if not spatial:
        return "spatial_axes"
    return feature, spatial, [i for i in range(rank) if i != feature and i not in spatial]


def _statistics_shape(shape, feature, spatial, batch, per_frequency):
    if not per_frequency:
        return (shape[feature],)
    half = [n // 2 + 1 if i == spatial[-1] else n for i, n in enumerate(shape)]
    return tuple(n for i, n in enumerate(half) if i not in batch)


@st.composite
def _spatial_axes(draw, rank, axis):
    """None (the default), a valid choice (shuffled, either sign), or any list of integers."""
    others = [i for i in range(rank) if not -rank <= axis < rank or i != axis % rank]
    kind = draw(st.sampled_from(("default", "valid", "any")))
    if kind == "default":
        return None
    if kind == "any":
        return tuple(draw(st.lists(st.integers(-rank - 1, rank), max_size=rank)))
    count = draw(st.integers(1, min(3, len(others))))
    chosen = draw(st.permutations(others))[:count]
    return tuple(draw(st.sampled_from((a, a - rank))) for a in chosen)


@st.composite
def _shape(draw, rank, layout):
    if isinstance(layout, str):
        return tuple(draw(st.lists(st.integers(1, 5), min_size=rank, max_size=rank)))
    feature, spatial, _ = layout
    sizes = {
        "feature": st.integers(1, 4),
        "spatial": st.sampled_from(SPATIAL_SIZES),
        "batch": st.sampled_from(BATCH_SIZES),
    }
    roles = [
        "feature" if i == feature else "spatial" if i in spatial else "batch" for i in range(rank)
    ]
    return tuple(draw(sizes[role]) for role in roles)


def _training_defects(shape, spatial, batch, per_frequency):
    """Training needs a non-empty batch and more than one value per statistic."""
    batch_sizes = [shape[i] for i in batch]
    if 0 in batch_sizes:
        return [("training on an empty batch", ("x",))]
    count = math.prod(batch_sizes)
    if not per_frequency:
        count *= math.prod(shape[i] // 2 + 1 if i == spatial[-1] else shape[i] for i in spatial)
    if count == 1:
        return [("one value per statistic in training", ("x", "use_running_average"))]
    return []


def _running(draw, rng, stats_shape, use_running_average):
    """Running statistics that fit, do not fit or are missing, and their defects."""
    kind = draw(st.sampled_from(RUNNING))
    if kind == "missing":
        defects = [("no running statistics", ("running", "use_running_average"))]
        return None, defects if use_running_average else []
    if kind == "misfit":
        stats_shape = (stats_shape[0] + 1, *stats_shape[1:])
    mean = rng.normal(size=(2, *stats_shape))
    var = rng.uniform(0.5, 3.0, size=stats_shape)
    running = F.Statistics(*(jnp.asarray(v, jnp.float32) for v in (mean[0], mean[1], var)))
    return running, [("running statistics of another shape", ("running",))] * (kind == "misfit")


def _data(rng, shape, dtype, offset):
    """Finite values, rounded to ``dtype``; complex and integer inputs for the refusals."""
    values = rng.normal(size=shape) * 2.0 + offset
    if dtype == "complex64":
        values = values + 1j * rng.normal(size=shape)
    elif dtype == "int32":
        values = np.round(values)
    return jnp.asarray(values, dtype)


@st.composite
def cases(draw):
    rank = draw(st.integers(2, 5))
    axis = draw(st.sampled_from((*range(-rank, rank),) * 3 + (-rank - 1, rank)))
    spatial_axes = draw(_spatial_axes(rank, axis))
    layout = _layout(rank, axis, spatial_axes)
    shape = draw(_shape(rank, layout))
    dtype, fft_norm, epsilon = (draw(st.sampled_from(v)) for v in (DTYPES, FFT_NORMS, EPSILONS))
    per_frequency, use_running_average = draw(st.booleans()), draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    defects = [(f"{dtype} input", ("x",))] * (dtype in ("int32", "complex64"))
    defects += [("unknown fft_norm", ("fft_norm",))] * (fft_norm not in F.FFT_NORMS)
    defects += [("epsilon not finite and >= 0", ("epsilon",))] * (not 0 <= epsilon < math.inf)
    running = scale = bias = None
    if isinstance(layout, str):
        defects.append((f"invalid {layout}", (layout,)))
        if use_running_average:
            defects.append(("no running statistics", ("running", "use_running_average")))
    else:
        feature, spatial, batch = layout
        if 0 in [shape[i] for i in spatial]:
            defects.append(("a spatial axis of size 0", ("x",)))
        elif not use_running_average:
            defects += _training_defects(shape, spatial, batch, per_frequency)
        stats_shape = _statistics_shape(shape, feature, spatial, batch, per_frequency)
        running, running_defects = _running(draw, rng, stats_shape, use_running_average)
        defects += running_defects
        if draw(st.booleans()):
            scale = jnp.asarray(rng.uniform(0.5, 2.0, size=shape[feature]), jnp.float32)
            bias = jnp.asarray(rng.normal(size=shape[feature]), jnp.float32)
    return Case(
        x=_data(rng, shape, dtype, offset=draw(st.sampled_from((0.5, 0.0, 3.0)))),
        axis=axis,
        spatial_axes=spatial_axes,
        per_frequency=per_frequency,
        fft_norm=fft_norm,
        epsilon=epsilon,
        use_running_average=use_running_average,
        running=running,
        scale=scale,
        bias=bias,
        extra_impls=draw(st.sampled_from(((),) * 5 + (("fast",),))),
        defects=defects,
    )


@functools.cache
def _compiled(**options):
    """One jitted function per set of static options: examples that share them share compiles."""

    def run(x, scale, bias, running):
        return F.spectral_batch_norm(x, scale=scale, bias=bias, running=running, **options)

    return jax.jit(run)


def _names(message, name):
    """Whether ``message`` names the argument ``name`` (as a word, any case)."""
    return re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", message, re.IGNORECASE) is not None


def _assert_refused(case, impl, defects):
    names = sorted({name for _, names in defects for name in names})
    # Called as a user would, without jit: the checks run before any computation.
    with pytest.raises((ValueError, TypeError)) as raised:
        F.spectral_batch_norm(
            case.x, scale=case.scale, bias=case.bias, running=case.running, **case.options(impl)
        )
    message = str(raised.value)
    assert any(_names(message, name) for name in names), (
        f"impl={impl}: {type(raised.value).__name__}({message!r}) names none of {names}, "
        f"the arguments wrong here: {[what for what, _ in defects]}"
    )


def _reference(case):
    """(x, y, mean, var) in float64: the input as the library sees it, and the reference's."""
    x = np.asarray(case.x.astype(jnp.float32), np.float64)
    running = None
    if case.use_running_average:
        r = case.running
        running = (np.asarray(r.mean_real) + 1j * np.asarray(r.mean_imag), np.asarray(r.var))
    y, (mean, var) = reference_sbn(
        x,
        axis=case.axis,
        spatial_axes=case.spatial_axes,
        per_frequency=case.per_frequency,
        fft_norm=case.fft_norm,
        epsilon=case.epsilon,
        scale=None if case.scale is None else np.asarray(case.scale),
        bias=None if case.bias is None else np.asarray(case.bias),
        running=running,
    )
    return x, y, np.asarray(mean, np.complex128), np.asarray(var, np.float64)


def _tolerances(case, x, y, mean, var):
    """Absolute tolerances for the output, the mean and the variance of one case.

    float32 rounding moves every bin and the mean by about ``u * m`` (``m`` the
    largest ``|bin|``). Normalizing divides that by ``s``, the smallest
    standard deviation, and carries the variance's relative error, about
    ``u * m / s``, into every bin. The inverse transform adds the bins'
    independent errors in quadrature and keeps a relative error as it is; the
    output dtype then rounds once. (No allowance for the closed form's
    ``mean(|X|**2) - |mean|**2``: it cancels only for one bin per channel and
    inputs far from 0, which are not drawn.)
    """
    _, spatial, _ = _layout(x.ndim, case.axis, case.spatial_axes)
    n = math.prod(x.shape[i] for i in spatial)
    u = ROUNDING * (1 + math.log2(x.size))
    mean_peak = np.abs(mean).max()
    m = max(np.abs(np.fft.rfftn(x, axes=spatial, norm=case.fft_norm)).max(), mean_peak)
    s = math.sqrt(var.min() + case.epsilon)
    relative = u * (1 + 2 * m / s)
    scale = 1.0 if case.scale is None else max(1.0, float(np.abs(case.scale).max()))
    spread = scale * math.sqrt(n) * INVERSE_SCALE[case.fft_norm](n)
    y_peak = np.abs(y).max()
    y_tol = MARGIN * (u * m / s * spread + relative * y_peak)
    y_tol += OUTPUT_ROUNDING[str(case.x.dtype)] * y_peak
    mean_tol = MARGIN * u * m
    var_tol = MARGIN * u * (m * np.sqrt(var) + var)
    return y_tol, mean_tol, var_tol


def _assert_close(what, got, want, tolerance):
    error = np.abs(np.asarray(got, np.float64) - want)
    assert np.all(error <= tolerance), (
        f"{what}: largest error {error.max():.3g}, up to {np.max(error / tolerance):.3g} times "
        "the tolerance"
    )


def _assert_matches(case, impl, reference):
    y, stats = _compiled(**case.options(impl))(case.x, case.scale, case.bias, case.running)
    assert (y.shape, y.dtype) == (case.x.shape, case.x.dtype), impl
    if case.use_running_average:
        chex.assert_trees_all_equal(stats, case.running)
    if y.size == 0:  # Evaluation of an empty batch.
        return
    x, want, mean, var = reference
    got = np.asarray(y.astype(jnp.float32), np.float64)
    finite = [np.isfinite(np.asarray(v)).all() for v in (got, *stats[:3])]
    assert all(finite), f"impl={impl}: NaN or Inf from a finite input (y, mean, var: {finite})"
    y_tol, mean_tol, var_tol = _tolerances(case, x, want, mean, var)
    _assert_close(f"impl={impl}: y", got, want, y_tol)
    if not case.use_running_average:
        _assert_close(f"impl={impl}: mean_real", stats.mean_real, mean.real, mean_tol)
        _assert_close(f"impl={impl}: mean_imag", stats.mean_imag, mean.imag, mean_tol)
        _assert_close(f"impl={impl}: var", stats.var, var, var_tol)


@given(case=cases())
def test_every_call_is_refused_by_name_or_agrees_with_the_reference(case):
    """Every impl (and an unknown one now and then) on the drawn case, as the module says."""
    reference = None
    for impl in (*F.IMPLS, *case.extra_impls):
        defects = case.defects_for(impl)
        # Shown by --hypothesis-show-statistics: how often each check and each impl is reached.
        event(f"impl={impl}: " + (f"refused ({defects[0][0]})" if defects else "computed"))
        if defects:
            _assert_refused(case, impl, defects)
            continue
        if reference is None:
            reference = _reference(case)
        _assert_matches(case, impl, reference)
