"""The checks that give every bad input to SBN a clear error naming what was expected."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from sbn_jax._layout import (
    DIVIDE_BY,
    FFT_NORMS,
    Layout,
    Options,
    Statistics,
    spectrum_shape,
    statistics_shape,
)


def check_input(x: jax.Array) -> None:
    dtype = jnp.result_type(x)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(
            f"SpectralBatchNorm expects a real floating-point input; got complex {dtype}. "
            "The spectrum is computed inside the layer."
        )
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"SpectralBatchNorm expects a floating-point input (float32, bfloat16, ...); "
            f"got {dtype}. Cast it first, e.g. x.astype(jnp.float32)."
        )


def check_fft_norm(fft_norm: str) -> None:
    if fft_norm not in FFT_NORMS:
        raise ValueError(f"fft_norm must be one of {FFT_NORMS}; got {fft_norm!r}.")


def check_ablation(divide_by: str, separate_real_imag: bool) -> None:
    """Validates the ablation options of :func:`spectral_batch_norm`."""
    if divide_by not in DIVIDE_BY:
        raise ValueError(f"divide_by must be one of {DIVIDE_BY}; got {divide_by!r}.")
    if separate_real_imag and divide_by != "std":
        raise ValueError(
            "separate_real_imag=True changes which standard deviations divide the spectrum, so "
            f'it needs divide_by="std"; got divide_by={divide_by!r}.'
        )


def reduction_group_size(axis_name: Any, axis_index_groups: Any) -> int:
    if axis_name is None:
        return 1
    if axis_index_groups is not None:
        return len(axis_index_groups[0])
    return int(jax.lax.psum(1, axis_name))


def check_statistic_count(
    shape: Sequence[int], layout: Layout, per_frequency: bool, group: int
) -> None:
    """Refuses training statistics made from a single value (as torch's BatchNorm does)."""
    count = math.prod(shape[i] for i in layout.batch_axes)
    if not per_frequency:
        count *= math.prod(spectrum_shape(shape, layout)[i] for i in layout.spatial_axes)
    if count * group == 1:
        what = "example" if per_frequency else "example with a single frequency bin"
        raise ValueError(
            f"Expected more than one value per statistic when training, got input shape "
            f"{tuple(shape)} (one {what}, batch axes {layout.batch_axes}). Use a larger batch, "
            "or use_running_average=True."
        )


def check_running(
    running: Statistics | None, stats_shape: tuple[int, ...], x: jax.Array, separate_real_imag: bool
) -> Statistics:
    """The running statistics, if they fit the input and the options; else a clear error."""
    if running is None:
        raise ValueError("use_running_average=True needs running statistics; got None.")
    if tuple(running.var.shape) != stats_shape:
        raise ValueError(
            f"Running statistics of shape {tuple(running.var.shape)} do not fit an input of "
            f"shape {tuple(x.shape)}: expected {stats_shape}. Per-frequency statistics only "
            "apply to the spatial size they were computed for."
        )
    if (running.var_imag is not None) != separate_real_imag:
        raise ValueError(
            f"separate_real_imag={separate_real_imag} needs running statistics "
            f"{'with' if separate_real_imag else 'without'} var_imag; got "
            f"var_imag={'None' if running.var_imag is None else 'an array'}."
        )
    return running


def statistics_to_use(
    x: jax.Array,
    layout: Layout,
    options: Options,
    running: Statistics | None,
    use_running_average: bool,
) -> Statistics | None:
    """The checked running statistics in eval, or None in training (after checking the count)."""
    if use_running_average:
        shape = statistics_shape(x.shape, layout, options.per_frequency)
        return check_running(running, shape, x, options.separate_real_imag)
    group = reduction_group_size(options.axis_name, options.axis_index_groups)
    check_statistic_count(x.shape, layout, options.per_frequency, group)
    return None
