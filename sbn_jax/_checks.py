"""The checks that give every bad input to SBN a clear error naming what was expected.

The options check themselves when an :class:`sbn_jax.options.SBNOptions` is built.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sbn_jax._layout import Layout, Statistics, spectrum_shape, statistics_shape
from sbn_jax.options import SBNOptions


def check_input(x: jax.Array) -> None:
    dtype = jnp.result_type(x)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(
            f"SpectralBatchNorm expects a real floating-point input x; got complex {dtype}. "
            "The spectrum is computed inside the layer."
        )
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"SpectralBatchNorm expects a floating-point input x (float32, bfloat16, ...); "
            f"got {dtype}. Cast it first, e.g. x.astype(jnp.float32)."
        )


def reduction_group_size(axis_name: Any, axis_index_groups: Any) -> int:
    if axis_name is None:
        return 1
    if axis_index_groups is not None:
        return len(axis_index_groups[0])
    return int(jax.lax.psum(1, axis_name))


def check_spatial_sizes(shape: Sequence[int], layout: Layout) -> None:
    """Refuses a spatial axis of size 0: it has no frequency bin to transform or normalize."""
    sizes = layout.spatial_sizes(shape)
    if 0 in sizes:
        raise ValueError(
            f"Every spatial axis of x needs size >= 1; got shape {tuple(shape)}, whose spatial "
            f"axes {layout.spatial_axes} have sizes {sizes}."
        )


def check_mask(mask: Any, x: jax.Array, layout: Layout) -> jax.Array | None:
    """A ``mask`` that selects examples, reshaped to the rank of ``x``; else a clear error.

    SBN's statistics cover whole feature maps (every frequency bin mixes every
    position), so a mask can select examples only: boolean, broadcastable to
    ``x`` (NumPy rules) and of size 1 on the feature and spatial axes.
    """
    if mask is None:
        return None
    dtype = jnp.result_type(mask)
    if dtype != jnp.bool_:
        raise TypeError(f"mask must be a boolean array (True: use the example); got {dtype}.")
    shape = tuple(jnp.shape(mask))
    example = tuple(n if i in layout.batch_axes else 1 for i, n in enumerate(x.shape))
    full = (1,) * (x.ndim - len(shape)) + shape
    if len(shape) > x.ndim or any(m not in (1, n) for m, n in zip(full, x.shape, strict=True)):
        raise ValueError(
            f"mask of shape {shape} does not broadcast to x of shape {tuple(x.shape)}; a mask "
            f"that selects examples has size 1 on the feature and spatial axes, e.g. shape "
            f"{example}."
        )
    whole_maps = [i for i in range(x.ndim) if i not in layout.batch_axes and full[i] != 1]
    if whole_maps:
        raise ValueError(
            f"mask of shape {shape} varies along axes {tuple(whole_maps)} of x (shape "
            f"{tuple(x.shape)}), which are feature or spatial axes. SBN's statistics cover "
            "whole feature maps, so a mask selects examples: it must have size 1 on every axis "
            f"but the batch axes {layout.batch_axes}, e.g. shape {example}."
        )
    return jnp.reshape(mask, full)


def check_statistic_count(
    shape: Sequence[int],
    layout: Layout,
    per_frequency: bool,
    group: int,
    mask: jax.Array | None = None,
) -> None:
    """Refuses training statistics made from no value or from one (as torch's BatchNorm does).

    An empty local batch is an empty global one: every device of a ``pmap``
    sees the same shape. A ``mask`` is counted when its values are known
    (outside ``jit``); a traced mask that selects nothing gives NaN statistics,
    as a masked ``nn.BatchNorm`` does.
    """
    batch_sizes = tuple(shape[i] for i in layout.batch_axes)
    if 0 in batch_sizes:
        # Its statistics would be 0/0: NaN, then NaN running averages in every later eval.
        raise ValueError(
            f"Training needs a non-empty batch: x has shape {tuple(shape)}, whose batch axes "
            f"{layout.batch_axes} have sizes {batch_sizes}, so there is nothing to compute "
            "statistics from. Skip empty batches (e.g. drop_remainder=True in the input "
            "pipeline), or use_running_average=True, which maps an empty batch to an empty "
            "output."
        )
    count = math.prod(batch_sizes)
    if mask is not None and not isinstance(mask, jax.core.Tracer):
        batch_shape = tuple(n if i in layout.batch_axes else 1 for i, n in enumerate(shape))
        count = int(np.sum(np.broadcast_to(np.asarray(mask), batch_shape)))
        if count * group == 0:
            raise ValueError(
                f"mask selects no example of x of shape {tuple(shape)}: training needs "
                "statistics from at least one example."
            )
    if not per_frequency:
        count *= math.prod(spectrum_shape(shape, layout)[i] for i in layout.spatial_axes)
    if count * group == 1:
        what = "example" if per_frequency else "example with a single frequency bin"
        raise ValueError(
            f"Expected more than one value per statistic when training, got x of shape "
            f"{tuple(shape)} (one {what}, batch axes {layout.batch_axes}). Use a larger batch, "
            "or use_running_average=True."
        )


def check_running(
    running: Statistics | None,
    stats_shape: tuple[int, ...],
    x: jax.Array,
    options: SBNOptions,
) -> Statistics:
    """The running statistics, if they fit the input and the options; else a clear error."""
    if running is None:
        raise ValueError("use_running_average=True needs running statistics; got None.")
    if tuple(running.var.shape) != stats_shape:
        why = (
            "Per-frequency statistics only apply to the spatial size they were computed for."
            if options.per_frequency
            else "Channel statistics hold one value per feature."
        )
        raise ValueError(
            f"Running statistics of shape {tuple(running.var.shape)} do not fit an input of "
            f"shape {tuple(x.shape)}: expected {stats_shape}. {why}"
        )
    if (running.var_imag is not None) != options.separate_real_imag:
        raise ValueError(
            f"separate_real_imag={options.separate_real_imag} needs running statistics "
            f"{'with' if options.separate_real_imag else 'without'} var_imag; got "
            f"var_imag={'None' if running.var_imag is None else 'an array'}."
        )
    return running


def statistics_to_use(
    x: jax.Array,
    layout: Layout,
    options: SBNOptions,
    running: Statistics | None,
    use_running_average: bool,
    mask: jax.Array | None = None,
) -> Statistics | None:
    """The checked running statistics in eval, or None in training (after checking the count).

    Running statistics given in training are checked too: the caller is about
    to fold the batch's into them (see ``apply_with_running_statistics``).
    """
    check_spatial_sizes(x.shape, layout)
    if use_running_average or running is not None:
        shape = statistics_shape(x.shape, layout, options.per_frequency)
        checked = check_running(running, shape, x, options)
        if use_running_average:
            return checked
    group = reduction_group_size(options.axis_name, options.axis_index_groups)
    check_statistic_count(x.shape, layout, options.per_frequency, group, mask)
    return None


def check_momentum(momentum: Any) -> None:
    """Refuses a moving-average decay outside [0, 1], where the running statistics diverge.

    Both ends are useful: 0 keeps the last batch's statistics, 1 freezes them. A
    traced momentum (a schedule under ``jit``) cannot be checked here.
    """
    if isinstance(momentum, jax.core.Tracer):
        return
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(
            f"momentum must be in [0, 1] (the decay of the running averages, Flax convention); "
            f"got momentum={momentum!r}."
        )
