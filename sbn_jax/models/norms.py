"""The norm switch of the models: the kinds, the paper's placements, and the layer itself."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sbn_jax.linen import SpatialSpectralBatchNorm, SpectralBatchNorm, SpectralGroupNorm
from sbn_jax.options import SBNOptions

NORMS = ("none", "bn", "sbn", "bn+sbn", "2bn", "gn", "sgn", "gn+sgn")
# The per-example kinds (GroupNorm and the spectral group norm of sbn_jax.family), and the options
# of each family of kinds (``sbn_options``).
GROUP_KINDS = ("gn", "sgn", "gn+sgn")
GROUP_OPTIONS = frozenset({"num_groups", "group_size"})
SPECTRAL_GROUP_OPTIONS = frozenset(
    {"fft_norm", "impl", "spatial_axes", "use_bias", "use_scale", "complex_affine"}
)
# Every SBN option but those the model sets for all its norm layers alike, and the options of
# the modules' affine maps and of the BatchNorm before SBN.
MODEL_SET_OPTIONS = frozenset({"axis", "epsilon", "axis_name", "axis_index_groups", "dtype"})
SBN_OPTIONS = (frozenset(SBNOptions.names()) - MODEL_SET_OPTIONS) | {
    "use_bias",
    "use_scale",
    "redundant_affine",
    "complex_affine",
}
# The paper's names: "sbn34" = SBN after every BatchNorm of modules 3 and 4, "2bn4" = a second
# BatchNorm after every BatchNorm of module 4.
PAPER_NOTATION = re.compile(r"(sbn|2bn)([1-9]+)")
PAPER_KINDS = {"sbn": "bn+sbn", "2bn": "2bn"}
NORM_MOMENTUM = 0.9
NORM_EPSILON = 1e-5

Dtype = Any


def resolve_placement(
    norm: str, modules: Sequence[int] | None, num_modules: int, model: str
) -> tuple[str, tuple[int, ...] | None]:
    """The layer kind of ``norm`` and the modules it applies to (``None``: every norm layer).

    Accepts a kind from :data:`NORMS` with an optional ``modules`` restriction, or the
    paper's notation: ``"sbn34"`` is ``("bn+sbn", (3, 4))``, ``"2bn4"`` is
    ``("2bn", (4,))``. Modules are numbered from 1 and the stem belongs to none.

    Raises:
      ValueError: an unknown kind or notation, a module outside ``1..num_modules``,
        or a notation combined with ``modules``.
    """
    match = PAPER_NOTATION.fullmatch(norm)
    if match:
        if modules is not None:
            raise ValueError(f"norm={norm!r} names its modules already; do not also pass modules")
        kind, modules = PAPER_KINDS[match[1]], tuple(int(d) for d in match[2])
    elif norm in NORMS:
        kind = norm
    else:
        raise ValueError(
            f"norm must be one of {NORMS} or the paper's notation 'sbn<modules>' / "
            f"'2bn<modules>' with modules in 1..{num_modules} (e.g. 'sbn34'), got {norm!r}"
        )
    if modules is None:
        return kind, None
    modules = tuple(modules)
    bad = [m for m in modules if not isinstance(m, int) or not 1 <= m <= num_modules]
    if bad or not modules or len(set(modules)) != len(modules):
        raise ValueError(
            f"{model} has modules 1..{num_modules}; got modules {modules} (from norm={norm!r})"
        )
    return kind, tuple(sorted(modules))


def check_options(kind: str, options: Mapping[str, Any]) -> None:
    """Refuses ``sbn_options`` that no layer of ``kind`` takes.

    The batch kinds take :data:`~sbn_jax.models.norms.SBN_OPTIONS`; the group kinds take
    ``num_groups`` or ``group_size`` (for GroupNorm and its spectral twin alike;
    default ``num_groups=32``, as ``nn.GroupNorm``) and
    :data:`~sbn_jax.models.norms.SPECTRAL_GROUP_OPTIONS`.
    """
    allowed = GROUP_OPTIONS | SPECTRAL_GROUP_OPTIONS if kind in GROUP_KINDS else SBN_OPTIONS
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(
            f"sbn_options for norm kind {kind!r} may set {sorted(allowed)}; got {unknown}"
        )
    # The values too, now rather than at the first call.
    SBNOptions.build(None, {k: v for k, v in options.items() if k in SBNOptions.names()})


def layer_kind(kind: str, modules: tuple[int, ...] | None, module: int | None) -> str:
    """The norm of a layer in ``module`` (``None``: the stem or head): ``kind``, or outside the
    chosen modules the plain norm of its family, ``"gn"`` for the group kinds, else ``"bn"``."""
    if kind == "none" or modules is None or module in modules:
        return kind
    return "gn" if kind in GROUP_KINDS else "bn"


class Norm(nn.Module):
    """The normalization layer that ``kind`` names, or the identity for ``"none"``.

    ``zero_init`` starts the last scale at zero, which makes a residual branch
    start as zero (with ``"bn+sbn"`` SBN's, with ``"2bn"`` the second
    BatchNorm's). ``shrink_init`` starts it at ``1 / sqrt(H W)`` of the input's
    spatial size instead of one: the factor by which SBN (backward DFT) shrinks a
    unit-variance map, so that e.g. BatchNorm shrunk in modules 3-4 starts as the
    paper's SBN34 does and then trains as plain BatchNorm (``zero_init`` wins).
    ``"2bn"`` is the paper's control: a BatchNorm directly after a BatchNorm; like
    the BatchNorm before SBN, the first one keeps no affine parameters unless
    ``sbn_options["redundant_affine"]``.
    """

    kind: str
    train: bool
    zero_init: bool = False
    shrink_init: bool = False
    dtype: Dtype = jnp.float32
    axis_name: str | None = None
    sbn_options: Mapping[str, Any] | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.kind == "none":
            return x
        common = dict(
            use_running_average=not self.train,
            momentum=NORM_MOMENTUM,
            epsilon=NORM_EPSILON,
            dtype=self.dtype,
            axis_name=self.axis_name,
        )
        scale_init = nn.initializers.ones
        if self.zero_init:
            scale_init = nn.initializers.zeros
        elif self.shrink_init:
            scale_init = nn.initializers.constant(1.0 / math.sqrt(math.prod(x.shape[1:-1])))
        options = dict(self.sbn_options or {})
        if self.kind in GROUP_KINDS:
            return self._group_norms(x, options, scale_init)
        if self.kind == "bn":
            return nn.BatchNorm(scale_init=scale_init, **common, name="BatchNorm")(x)
        if self.kind == "sbn":
            options.pop("redundant_affine", None)  # No BatchNorm before it.
            return SpectralBatchNorm(
                scale_init=scale_init, **common, **options, name="SpectralBatchNorm"
            )(x)
        if self.kind == "bn+sbn":
            return SpatialSpectralBatchNorm(
                spectral_scale_init=scale_init, **common, **options, name="SpatialSpectralBatchNorm"
            )(x)
        if self.kind == "2bn":
            # The second BatchNorm ignores any per-channel affine map of its input, so the first
            # one's scale and bias are redundant, exactly as a BatchNorm's before SBN.
            keep = bool(options.get("redundant_affine", False))
            x = nn.BatchNorm(use_scale=keep, use_bias=keep, **common, name="BatchNorm")(x)
            return nn.BatchNorm(scale_init=scale_init, **common, name="SecondBatchNorm")(x)
        raise ValueError(f"norm must be one of {NORMS}, got {self.kind!r}")

    def _group_norms(
        self, x: jax.Array, options: dict[str, Any], scale_init: nn.initializers.Initializer
    ) -> jax.Array:
        group_size = options.pop("group_size", None)
        # nn.GroupNorm's default of 32 groups unless a group size is given.
        groups = {"num_groups": options.pop("num_groups", None if group_size else 32)}
        groups["group_size"] = group_size
        common = dict(epsilon=NORM_EPSILON, dtype=self.dtype)
        if self.kind == "gn":
            return nn.GroupNorm(**groups, **common, scale_init=scale_init, name="GroupNorm")(x)
        if self.kind == "gn+sgn":
            x = nn.GroupNorm(**groups, **common, name="GroupNorm")(x)
        return SpectralGroupNorm(
            **groups, **common, **options, scale_init=scale_init, name="SpectralGroupNorm"
        )(x)
