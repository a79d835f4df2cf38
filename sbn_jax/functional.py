"""Spectral Batch Normalization as pure functions.

This module is the public entry to the math, which is written once in the
private modules below it (:mod:`sbn_jax._layout` the shared vocabulary,
:mod:`sbn_jax._spectrum` and :mod:`sbn_jax._closed_form` the implementations,
:mod:`sbn_jax._checks` the input checks); the Flax modules in
:mod:`sbn_jax.linen` and :mod:`sbn_jax.nnx` are thin shells over
:func:`apply_with_running_statistics`. Everything here works on plain arrays,
so it can be used from raw JAX, Equinox or Haiku.

For an input ``x`` with one feature axis, one or more spatial axes and batch
axes (every other axis), SBN computes

1. ``X = rfftn(x, axes=spatial, norm=fft_norm)`` in float32 (or float64),
2. statistics over the batch axes (and, for channel statistics, over all
   frequency bins): a complex mean ``mu`` and a real, biased variance
   ``var = mean(|X - mu|**2)``,
3. ``Y = scale * (X - mu) / sqrt(var + epsilon) + bias`` (``bias`` is real and
   lands on the real part of every bin),
4. ``y = irfftn(Y, s=spatial sizes, axes=spatial, norm=fft_norm)``.

Spatial axes are kept in increasing order; the last of them carries the half
spectrum (``n // 2 + 1`` bins), as in ``jnp.fft.rfftn``.

Three implementations compute the same function (``impl``), each an
:class:`Implementation` in :data:`IMPLEMENTATIONS` (a transform, the
statistics, the normalization), chosen in :func:`resolve_impl`:

* ``"fft"``: the four steps above, literally (with the spatial axes moved last
  once, where XLA's FFT wants them). The readable reference
  (:mod:`sbn_jax._spectrum`).
* ``"closed_form"`` (channel statistics only): no transform at all. See
  :mod:`sbn_jax._closed_form` for the derivation: SBN with channel
  statistics is ``a * x`` plus two fixed patterns on the first row.
* ``"matmul"``: the transforms written as small dense DFT matrices, which beat
  FFT libraries at ResNet sizes on accelerators (see :mod:`sbn_jax._dft`).
* ``"auto"``: ``closed_form`` for channel statistics (as fast as BatchNorm);
  for per-frequency statistics, ``matmul`` on GPU/TPU when every spatial size
  is at most ``MATMUL_MAX_SIZE`` and ``fft`` otherwise. On CPU ``fft`` always
  wins: measured with ``python -m benchmarks`` (BENCHMARKS.md), a forward plus
  backward round trip through the matmul DFT costs 1.3x to 2.4x the XLA FFT's at
  spatial sizes 7, 14, 32 and 56, because the CPU dot kernels run far below
  peak with contraction sizes this small. The accelerator threshold is the
  design's (matmul DFTs beat FFT libraries at ResNet sizes 7-56 on matrix
  units), not yet measured.

Sharding. Under ``jit`` with sharded inputs every implementation computes the
one-device function (tests/test_mesh2d.py, a 2-D mesh). What it costs
differs (BENCHMARKS.md): the closed form needs only the all-reduces of its
statistics, whichever axes are sharded; an FFT along a sharded spatial axis
gathers that axis, and XLA's FFT also gathers sharded channels; the matmul DFT
keeps sharded channels but contracts a sharded spatial axis with all-reduces.

Errors. Every bad input raises a ``TypeError`` (an integer or complex ``x``)
or a ``ValueError`` that names the argument and what is expected:

* the layout: no spatial axis; an axis out of range or repeated; a spatial
  axis that is the feature axis; a spatial axis of size 0;
* the options: an unknown ``fft_norm``, ``impl``, ``divide_by`` or
  ``running_variance``; ``separate_real_imag`` without ``divide_by="std"``;
  ``impl="closed_form"`` beyond its cases; ``epsilon`` negative or not finite
  (0, no floor, is allowed); ``momentum`` outside [0, 1] (checked in
  :func:`update_running_statistics`, so on a module's first training step);
* training on an empty batch (a batch axis of size 0: its statistics, and the
  running averages with them, would be NaN) or with a single value per
  statistic (as torch's BatchNorm refuses it);
* running statistics missing with ``use_running_average``, or (checked
  whenever given) of another shape than the input's statistics, such as
  per-frequency ones of another spatial size;
* a ``mask`` that is not boolean (``TypeError``), does not broadcast to
  ``x``, varies along a feature or spatial axis (it can only select
  examples), or, when its values are known outside ``jit``, selects none.

With ``use_running_average`` an empty batch gives an empty output: nothing is
learned from it. NaN and Inf in ``x`` propagate, as in BatchNorm.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sbn_jax import _checks, _closed_form, _spectrum
from sbn_jax._layout import (
    FFT_NORMS,
    Layout,
    Statistics,
    is_complex_affine,
    resolve_layout,
    spectrum_shape,
    statistics_shape,
    white_spectrum_std,
)
from sbn_jax._spectrum import normalize_spectrum, spectrum_statistics
from sbn_jax.options import DIVIDE_BY, IMPLS, SBNOptions, check_choice

__all__ = [
    "DIVIDE_BY",
    "FFT_NORMS",
    "IMPLEMENTATIONS",
    "IMPLS",
    "RUNNING_VARIANCES",
    "Implementation",
    "Layout",
    "SBNOptions",
    "Statistics",
    "apply_with_running_statistics",
    "batch_norm_affine_before_sbn",
    "check_mask",
    "compute_dtype",
    "init_statistics",
    "normalize_spectrum",
    "resolve_impl",
    "resolve_layout",
    "running_variance_factor",
    "spectral_batch_norm",
    "spectrum_shape",
    "spectrum_statistics",
    "statistics_shape",
    "update_running_statistics",
    "white_spectrum_std",
]


class Implementation(NamedTuple):
    """One way to compute SBN, as three steps; every one computes the same function.

    Attributes:
      prepare: ``(x, layout, options) -> prepared``, what the other two steps
        read: ``x`` itself for the closed form, its spectrum for the transforms
        (so that statistics and normalization share one forward transform).
      statistics: ``(prepared, layout, options, mask) -> Statistics``, the
        batch statistics (of the examples ``mask`` selects, when given).
      normalize: ``(prepared, stats, scale, bias, layout, options) -> y``, the
        output for given statistics (the batch's or the running ones).

    ``x`` is in the compute dtype (:func:`compute_dtype`); ``mask`` is None or
    checked and of ``x``'s rank (see :func:`spectral_batch_norm`).
    """

    prepare: Callable[[jax.Array, Layout, SBNOptions], Any]
    statistics: Callable[[Any, Layout, SBNOptions, jax.Array | None], Statistics]
    normalize: Callable[
        [Any, Statistics, jax.Array | None, jax.Array | None, Layout, SBNOptions], jax.Array
    ]


IMPLEMENTATIONS: dict[str, Implementation] = {
    "closed_form": Implementation(
        _closed_form.prepare, _closed_form.statistics, _closed_form.apply
    ),
    "fft": Implementation(_spectrum.fft, _spectrum.statistics, _spectrum.normalize),
    "matmul": Implementation(_spectrum.matmul, _spectrum.statistics, _spectrum.normalize),
}
RUNNING_VARIANCES = ("biased", "paper")
# Largest spatial size for which "auto" uses the matmul DFT on accelerators.
MATMUL_MAX_SIZE = 64


def init_statistics(shape: Sequence[int], separate_real_imag: bool = False) -> Statistics:
    """Initial running statistics: mean 0 + 0j, variance(s) 1, float32."""
    zeros, ones = jnp.zeros(shape, jnp.float32), jnp.ones(shape, jnp.float32)
    return Statistics(zeros, zeros, ones, ones if separate_real_imag else None)


def update_running_statistics(
    running: Statistics, batch: Statistics, momentum: float, variance_factor: float = 1.0
) -> Statistics:
    """Moving average, Flax convention: ``momentum * running + (1 - momentum) * batch``.

    The batch variance is multiplied by ``variance_factor`` first (1: the biased
    batch variance; see :func:`running_variance_factor`). PyTorch's and the
    paper's ``momentum`` (lambda) is ``1 - momentum`` here.

    Raises:
      ValueError: ``momentum`` outside [0, 1] (0 keeps the batch's statistics,
        1 freezes the running ones; beyond, the average diverges). Every module
        updates through here, so they refuse it on their first training step.
    """
    _checks.check_momentum(momentum)
    batch = batch._replace(
        var=batch.var * variance_factor,
        var_imag=None if batch.var_imag is None else batch.var_imag * variance_factor,
    )
    return jax.tree.map(
        lambda r, b: momentum * r + (1.0 - momentum) * b.astype(r.dtype), running, batch
    )


def running_variance_factor(
    running_variance: str, shape: Sequence[int], layout: Layout, per_frequency: bool
) -> float:
    """The factor applied to the batch variance before it enters the running average.

    ``"biased"`` (default): 1, the variance that normalized the batch, as Flax's
    BatchNorm keeps it. ``"paper"``: Algorithm 1 of the paper, ``n / (n - 1)``
    with ``n = C * H * W / 2`` as written there (C channels, ``H * W`` the
    product of the spatial sizes) -- not the count actually averaged per
    channel, ``B * H * (W // 2 + 1)``. Defined for channel statistics only, the
    paper's.

    Raises:
      ValueError: an unknown name, or ``"paper"`` with per-frequency statistics.
    """
    check_choice("running_variance", running_variance, RUNNING_VARIANCES)
    if running_variance == "biased":
        return 1.0
    if per_frequency:
        raise ValueError(
            'running_variance="paper" is Algorithm 1 of the paper, which has channel statistics '
            "only; use per_frequency=False or running_variance='biased'."
        )
    n = shape[layout.feature_axis] * math.prod(layout.spatial_sizes(shape)) / 2
    return n / (n - 1)


def batch_norm_affine_before_sbn(
    per_frequency: bool,
    use_scale: bool,
    use_bias: bool,
    redundant_affine: bool = False,
    use_mean: bool = True,
) -> tuple[bool, bool]:
    """``(use_scale, use_bias)`` of a BatchNorm that feeds SBN directly.

    SBN's training-mode output does not change when a channel of its input is
    multiplied by a positive constant (up to ``epsilon``): the spectral variance
    divides it out. With per-frequency statistics it does not change either when
    a constant is added to a channel: that only moves the DC bin, whose batch
    mean is subtracted. So the BatchNorm's scale is redundant before SBN, and
    with per-frequency statistics its bias too: their exact gradient is zero,
    their float32 gradient is rounding noise, and, with weight decay on kernels
    only, nothing holds them (they random-walk with the rounding, and the
    running statistics then carry the walk into eval). Without them the pair
    computes the same functions (a BatchNorm scale ``g > 0`` and bias ``b`` act
    as a bias ``b / g``; a negative ``g`` as a sign flip of SBN's scale).

    Under the ablations the scale stays redundant (without the division it
    multiplies SBN's own scale, or, with ``use_scale=False``, is absent anyway),
    and the bias is kept whenever SBN does not subtract a per-frequency mean.

    Args:
      per_frequency: the SBN's statistics.
      use_scale: the caller's ``use_scale`` for both layers.
      use_bias: the caller's ``use_bias`` for both layers.
      redundant_affine: keep the BatchNorm's affine map as asked, as in the
        paper's PyTorch layers (whose recipes decay every parameter, which pins
        the redundant directions).
      use_mean: the SBN subtracts its mean (see :func:`spectral_batch_norm`).

    Returns:
      The BatchNorm's ``(use_scale, use_bias)``.
    """
    if redundant_affine:
        return use_scale, use_bias
    return False, use_bias and not (per_frequency and use_mean)


def compute_dtype(dtype: Any) -> jnp.dtype:
    """The real dtype the spectrum is computed in: float32, or float64 for float64 inputs."""
    return jnp.promote_types(dtype, jnp.float32)


def _use_matmul(shape: Sequence[int], layout: Layout) -> bool:
    on_accelerator = jax.default_backend() in ("gpu", "tpu", "cuda", "rocm")
    return on_accelerator and all(n <= MATMUL_MAX_SIZE for n in layout.spatial_sizes(shape))


def resolve_impl(
    impl: str,
    per_frequency: bool,
    shape: Sequence[int],
    layout: Layout,
    separate_real_imag: bool = False,
    complex_affine: bool = False,
) -> str:
    """The implementation (a key of :data:`IMPLEMENTATIONS`) that ``impl`` stands for.

    ``"auto"`` picks the closed form for joint channel statistics with a real
    affine map, else the matmul DFT on accelerators at sizes up to
    :data:`MATMUL_MAX_SIZE`, else the FFT (see the module docstring).
    """
    check_choice("impl", impl, IMPLS)
    beyond_closed_form = {
        "per_frequency=True": per_frequency,
        "separate_real_imag=True": separate_real_imag,
        "a complex scale or bias": complex_affine,
    }
    reasons = [what for what, present in beyond_closed_form.items() if present]
    if impl == "closed_form" and reasons:
        raise ValueError(
            'impl="closed_form" exists for joint channel statistics only, with a real affine '
            f'map; {reasons[0]} needs impl="fft", "matmul" or "auto".'
        )
    if impl != "auto":
        return impl
    if not reasons:
        return "closed_form"
    return "matmul" if _use_matmul(shape, layout) else "fft"


def spectral_batch_norm(
    x: jax.Array,
    *,
    scale: jax.Array | None = None,
    bias: jax.Array | None = None,
    running: Statistics | None = None,
    use_running_average: bool = False,
    mask: jax.Array | None = None,
    options: SBNOptions | None = None,
    **option_values: Any,
) -> tuple[jax.Array, Statistics]:
    """Spectral Batch Normalization of ``x``.

    Args:
      x: real floating input, e.g. ``(N, H, W, C)``; bfloat16 is fine, the
        spectrum is computed in float32.
      scale: ``(C,)`` multiplier, or None for 1; complex for a complex affine map.
      bias: ``(C,)`` offset added to every bin (a real one to the real parts),
        or None for 0; complex for a complex affine map.
      running: running statistics, needed when ``use_running_average``.
      use_running_average: normalize with ``running`` instead of batch statistics.
      mask: None, or a boolean array that selects the examples the batch
        statistics come from, as ``nn.BatchNorm``'s ``mask``: broadcastable to
        ``x`` and of size 1 on the feature and spatial axes (SBN's statistics
        cover whole feature maps), e.g. ``(N, 1, 1, 1)`` for NHWC. Every
        example is normalized. Unused with ``use_running_average``.
      options: an :class:`SBNOptions`; default ``SBNOptions()``.
      **option_values: fields of :class:`SBNOptions` (``axis``,
        ``spatial_axes``, ``per_frequency``, ``fft_norm``, ``epsilon``,
        ``axis_name``, ``axis_index_groups``, ``impl``, ``dtype``,
        ``use_mean``, ``divide_by``, ``separate_real_imag``), which replace
        those of ``options``.

    Returns:
      ``(y, stats)``: ``y`` with the shape of ``x`` and the statistics used:
      the batch's in training (to feed :func:`update_running_statistics`), or
      ``running`` when ``use_running_average`` (an empty batch: an empty ``y``).

    Raises:
      TypeError, ValueError: as listed under "Errors" in the module docstring.
    """
    options = SBNOptions.build(options, option_values)
    _checks.check_input(x)
    layout = resolve_layout(x.ndim, options.axis, options.spatial_axes)
    return _normalize(x, layout, options, scale, bias, running, use_running_average, mask)


def _normalize(
    x: jax.Array,
    layout: Layout,
    options: SBNOptions,
    scale: jax.Array | None,
    bias: jax.Array | None,
    running: Statistics | None,
    use_running_average: bool,
    mask: jax.Array | None,
) -> tuple[jax.Array, Statistics]:
    """:func:`spectral_batch_norm` for a checked input, its layout and its options."""
    complex_affine = is_complex_affine(scale, bias)
    name = resolve_impl(
        options.impl,
        options.per_frequency,
        x.shape,
        layout,
        options.separate_real_imag,
        complex_affine,
    )
    implementation = IMPLEMENTATIONS[name]
    mask = _checks.check_mask(mask, x, layout)
    running = _checks.statistics_to_use(x, layout, options, running, use_running_average, mask)
    prepared = implementation.prepare(x.astype(compute_dtype(x.dtype)), layout, options)
    stats = running
    if stats is None:
        stats = implementation.statistics(prepared, layout, options, mask)
        if not options.gradient_through_statistics:
            stats = jax.lax.stop_gradient(stats)
    y = implementation.normalize(prepared, stats, scale, bias, layout, options)
    return y.astype(x.dtype if options.dtype is None else options.dtype), stats


def check_mask(mask: Any, x: jax.Array, options: SBNOptions) -> None:
    """Refuses a ``mask`` that does not select examples of ``x`` (see :func:`spectral_batch_norm`).

    For callers that hand the mask to another layer first, as the pairs do to
    their BatchNorm, so that a bad mask gets SBN's error before anything runs.
    """
    _checks.check_input(x)
    layout = resolve_layout(x.ndim, options.axis, options.spatial_axes)
    _checks.check_mask(mask, x, layout)
    if mask is not None:
        _checks.check_statistic_count(x.shape, layout, options.per_frequency, 1, mask)


def apply_with_running_statistics(
    x: jax.Array,
    running: Statistics,
    *,
    scale: jax.Array | None,
    bias: jax.Array | None,
    use_running_average: bool,
    momentum: float,
    running_variance: str,
    options: SBNOptions,
    mask: jax.Array | None = None,
    layout: Layout | None = None,
) -> tuple[jax.Array, Statistics]:
    """The step of the Flax modules: :func:`spectral_batch_norm`, then the running averages.

    Args:
      x: the input.
      running: the current running statistics.
      scale, bias: the per-channel parameters, or None.
      use_running_average: normalize with ``running`` (eval, or
        initialization); otherwise with the batch statistics, which are then
        folded into the running ones.
      momentum: decay of the moving average.
      running_variance: ``"biased"`` or ``"paper"`` (see
        :func:`running_variance_factor`).
      options: the :class:`SBNOptions`.
      mask: the examples the statistics come from, as in
        :func:`spectral_batch_norm`.
      layout: ``x``'s layout, when the caller has resolved it from the options
        already; resolved here otherwise.

    Returns:
      ``(y, running)``: the output and the running statistics to store, which
      are the ones given when ``use_running_average``.

    Raises:
      ValueError: as :func:`spectral_batch_norm` and, when it updates,
        :func:`update_running_statistics` (``momentum`` outside [0, 1]).
    """
    _checks.check_input(x)
    if layout is None:
        layout = resolve_layout(x.ndim, options.axis, options.spatial_axes)
    factor = running_variance_factor(running_variance, x.shape, layout, options.per_frequency)
    y, batch = _normalize(x, layout, options, scale, bias, running, use_running_average, mask)
    if not use_running_average:
        batch = jax.lax.stop_gradient(batch)
        running = update_running_statistics(running, batch, momentum, factor)
    return y, running
