"""The options of Spectral Batch Normalization, declared once: :class:`SBNOptions`.

Every SBN option (its name, type, default and validation) is a field of
:class:`SBNOptions` and nowhere else. The rest of the package is built from it:
:func:`sbn_jax.functional.spectral_batch_norm` takes one (or its fields as
keyword arguments, mapped onto it by :meth:`SBNOptions.build`), the linen
modules get one attribute per field (generated, see :mod:`sbn_jax.linen`), the
NNX modules take the fields as keyword arguments and hold one value, and the
models check their ``sbn_options`` against it. Adding an option is its field
here, the code that reads it, and its test.

The modules' own arguments (``momentum``, ``running_variance``, the affine
parameters and their initializers) are not here: they are those of
``nn.BatchNorm`` and concern the running averages and parameters, which the
function does not keep.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import jax
import jax.numpy as jnp

from sbn_jax._layout import FFT_NORMS, white_spectrum_std

DIVIDE_BY = ("std", "constant", "none")
IMPLS = ("auto", "closed_form", "fft", "matmul")

_Tree = TypeVar("_Tree")


@dataclasses.dataclass(frozen=True)
class SBNOptions:
    """Every choice of SBN besides its arrays; validated when built.

    Attributes:
      axis: the feature axis (-1 for NHWC, 1 for NCHW).
      spatial_axes: the axes to transform; None: every axis but axis 0 and
        ``axis`` (see :func:`sbn_jax.functional.resolve_layout`). Stored as a
        tuple.
      per_frequency: one statistic per (frequency bin, channel) instead of per
        channel.
      fft_norm: "backward" (the paper's Eq. 1: an unnormalized forward
        transform and an inverse divided by the spatial size ``n``; the output
        then has RMS about ``scale / sqrt(n)``), "ortho" (unitary: unit RMS,
        so after a BatchNorm SBN is close to the identity) or "forward"; for
        both transforms, so that they are an exact inverse pair.
      epsilon: added to the variance; finite and >= 0 (0: no floor, the exact
        formula).
      axis_name: pmap/shard_map axis over which statistics are averaged.
      axis_index_groups: device groups within which they are averaged; stored
        as a tuple of tuples.
      impl: "auto", "fft", "closed_form" or "matmul"; all compute the same
        function (see :mod:`sbn_jax.functional`).
      dtype: output dtype; None: the input's. Spectra are float32 (float64 for
        float64 inputs).
      use_mean: subtract the spectral mean (False with ``divide_by="std"``:
        the paper's ablation "dividing by the standard deviation only").
      divide_by: "std" (the paper), "constant" (every bin by
        :func:`sbn_jax.functional.white_spectrum_std`: the feature map times
        ``1/sqrt(n)`` under "backward", the ablation "only down-scaling the
        spectrum") or "none" ("subtracting the mean only"; without
        ``use_mean``, "gamma/beta alone"). The statistics are computed in
        every case.
      separate_real_imag: normalize real and imaginary parts with their own
        variances (the paper's ablation, which it reports hurts); needs
        ``divide_by="std"``, and the statistics then carry ``var_imag``.
      gradient_through_statistics: differentiate through the batch statistics
        (True, as BatchNorm). False treats them as constants in the backward
        pass, as running statistics are: a control that separates what SBN's
        forward rescaling does from what its Jacobian (the projection that
        keeps the spectrum centered and of fixed power) does.
    """

    axis: int = -1
    spatial_axes: Sequence[int] | None = None
    per_frequency: bool = False
    fft_norm: str = "backward"
    epsilon: float = 1e-5
    axis_name: Any = None
    axis_index_groups: Any = None
    impl: str = "auto"
    dtype: Any = None
    use_mean: bool = True
    divide_by: str = "std"
    separate_real_imag: bool = False
    gradient_through_statistics: bool = True

    def __post_init__(self) -> None:
        # Tuples, so that the value is hashable: NNX keeps it as static module metadata.
        if self.spatial_axes is not None:
            object.__setattr__(self, "spatial_axes", tuple(self.spatial_axes))
        if self.axis_index_groups is not None:
            groups = tuple(tuple(group) for group in self.axis_index_groups)
            object.__setattr__(self, "axis_index_groups", groups)
        check_choice("fft_norm", self.fft_norm, FFT_NORMS)
        check_choice("impl", self.impl, IMPLS)
        check_choice("divide_by", self.divide_by, DIVIDE_BY)
        if self.separate_real_imag and self.divide_by != "std":
            raise ValueError(
                "separate_real_imag=True changes which standard deviations divide the spectrum, "
                f'so it needs divide_by="std"; got divide_by={self.divide_by!r}.'
            )
        # epsilon=0 is allowed: it is the exact normalization without a floor (what a comparison
        # with a reference formula wants), and divide_by="constant"/"none" never read epsilon; a
        # zero variance then divides by zero, as the formula does. A negative epsilon can make
        # var + epsilon negative: a NaN far from its cause. A traced epsilon (jit without
        # static_argnames) cannot be checked here.
        if not isinstance(self.epsilon, jax.core.Tracer) and not 0.0 <= self.epsilon < math.inf:
            raise ValueError(
                "epsilon must be a finite number >= 0 (added to the variance); "
                f"got epsilon={self.epsilon!r}."
            )

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The names of every option, in declaration order."""
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def build(
        cls, options: SBNOptions | None = None, overrides: Mapping[str, Any] | None = None
    ) -> SBNOptions:
        """``options`` (default: the defaults) with the fields in ``overrides`` replaced.

        The one place where keyword arguments become options.

        Raises:
          TypeError: a name in ``overrides`` that is no option (listing those there are).
          ValueError: a value the options refuse.
        """
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(cls.names()))
        if unknown:
            raise TypeError(
                f"Unknown SBN option(s) {unknown}; the options are {list(cls.names())} "
                "(see sbn_jax.SBNOptions)."
            )
        if options is None:
            return cls(**overrides)
        return dataclasses.replace(options, **overrides) if overrides else options

    def pmean(self, values: _Tree) -> _Tree:
        """Averages ``values`` across the devices of ``axis_name`` (identity without one)."""
        if self.axis_name is None:
            return values
        return jax.lax.pmean(values, self.axis_name, axis_index_groups=self.axis_index_groups)

    def fraction_selected(self, mask: jax.Array, dtype: Any) -> jax.Array:
        """The fraction of the examples (across devices) that a batch-axes ``mask`` selects.

        A mean over the selected examples is the mean over all of them with the
        others zeroed, divided by this; for equal shards on every device, as
        ``pmap`` has, that also holds across devices.
        """
        return self.pmean(jnp.mean(mask, dtype=dtype))

    def constant_std(self, spatial_size: int) -> float:
        """The divisor of ``divide_by="constant"``.

        See :func:`~sbn_jax.functional.white_spectrum_std`.
        """
        return white_spectrum_std(self.fft_norm, spatial_size)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """Refuses a ``value`` of the option ``name`` that is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}; got {value!r}.")
