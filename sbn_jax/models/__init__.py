"""Image classifiers with a normalization switch: ResNets, CIFAR ResNets, WideResNets, VGG.

Every model is a ``flax.linen`` module called as ``model.apply(variables, x,
train=bool, mutable=["batch_stats"])`` on NHWC images ``(B, H, W, 3)`` and
returns float32 logits ``(B, num_classes)``. The ``norm`` field picks what
follows each convolution:

* ``"none"``: nothing (the convolutions get biases instead);
* ``"bn"``: ``flax.linen.BatchNorm``;
* ``"sbn"``: :class:`sbn_jax.SpectralBatchNorm` in place of BatchNorm;
* ``"bn+sbn"``: :class:`sbn_jax.SpatialSpectralBatchNorm`, BatchNorm then SBN,
  the paper's layer;
* ``"2bn"``: a BatchNorm then a second BatchNorm, the paper's control;
* ``"gn"``: ``flax.linen.GroupNorm``; ``"sgn"``: :class:`sbn_jax.SpectralGroupNorm`
  in its place; ``"gn+sgn"``: GroupNorm then the spectral group norm (beyond the
  paper; no statistics are kept; ``sbn_options`` ``num_groups``, default 32, or
  ``group_size`` for both, so 1 group is the (spectral) layer norm and groups
  of one channel the instance norm);
* the paper's notation ``"sbn<modules>"`` / ``"2bn<modules>"``, e.g.
  ``"sbn34"``: ``"bn+sbn"`` for every norm layer of modules 3 and 4 (shortcut
  norms included) and plain BatchNorm elsewhere, stem included; ``"2bn4"``:
  the 2BN control in module 4.

Modules are the paper's: the residual stages numbered from 1 (the stem is in
none), VGG's five pooling stages. ``modules=(3, 4)`` with a plain kind says the
same as the notation; outside the modules the group kinds use ``"gn"``.
``sbn_options`` go to every SBN layer (e.g. ``per_frequency``, ``fft_norm``,
``impl``; ``redundant_affine`` to every BN+SBN and 2BN pair), or for the group
kinds to every group norm (see :func:`sbn_jax.models.norms.check_options`).
Norm layers use momentum 0.9 and epsilon 1e-5, the PyTorch defaults the
published results were trained with. With ``axis_name`` the batch
statistics are averaged over that pmap/shard_map axis. ``dtype`` is the
computation dtype (e.g. ``jnp.bfloat16``); parameters stay float32.
``activation`` (``"relu"``, the published models' choice, ``"gelu"`` or
``"silu"``) follows every norm and every residual sum. Two controls for the
study of what SBN does (docs/claims.md, "07 · Fashion-MNIST"): ``shrink_init_modules``
starts the last scale of every norm layer of those modules (shortcut norms
included) at ``1 / sqrt(H W)`` instead of one, and ``logit_scale`` multiplies
the logits by a constant.

Parameter counts equal the published ones (with ``norm="bn"``): ResNet-18
11,689,512, ResNet-50 25,557,032 (1000 classes), CIFAR ResNet-18/34/50
11,173,962 / 21,282,122 / 23,520,842 and ResNet-20 0.27M, ResNet-110 1.7M,
WRN-28-10 36.5M, VGG16-BN / VGG19-BN 15,249,354 / 20,560,330 (10 classes; the
published 15,253,578 / 20,565,834 count convolution biases, which a following
BatchNorm makes redundant and which these models leave out). SBN has the same
two vectors per layer as BatchNorm; in ``bn+sbn`` the BatchNorm keeps only its
bias (SBN makes its scale redundant, see
:class:`sbn_jax.SpatialSpectralBatchNorm`), so ``bn+sbn`` adds one vector per
norm layer to ``bn`` (none with per-frequency statistics, where the BatchNorm
keeps no parameter); ``2bn``'s first BatchNorm keeps none either.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from flax.core import FrozenDict

from sbn_jax.models.classifier import INITS, _Classifier, check_width
from sbn_jax.models.norms import (
    GROUP_KINDS,
    NORM_EPSILON,
    NORM_MOMENTUM,
    NORMS,
    PAPER_KINDS,
    PAPER_NOTATION,
    Norm,
    check_options,
    layer_kind,
    resolve_placement,
)
from sbn_jax.models.resnet import (
    BasicBlock,
    BottleneckBlock,
    CifarResNet,
    PreActBlock,
    ResNet,
    WideResNet,
)
from sbn_jax.models.vgg import VGG, VGG_LAYOUTS, ConvBlock

__all__ = [
    "ACTIVATIONS",
    "BLOCK_TYPES",
    "GROUP_KINDS",
    "INITS",
    "MODELS",
    "NORMS",
    "NORM_EPSILON",
    "NORM_MOMENTUM",
    "PAPER_KINDS",
    "PAPER_NOTATION",
    "VGG",
    "VGG_LAYOUTS",
    "BasicBlock",
    "BottleneckBlock",
    "CifarResNet",
    "ConvBlock",
    "Norm",
    "PreActBlock",
    "ResNet",
    "WideResNet",
    "check_options",
    "check_width",
    "create_model",
    "layer_kind",
    "resolve_placement",
]

# ReLU is what the published models use. The smooth ones have no kink, so their gradients are
# continuous in the parameters; see docs/reproducibility.md, "Across device counts".
ACTIVATIONS: dict[str, Callable] = {"relu": nn.relu, "gelu": nn.gelu, "silu": nn.silu}
BLOCK_TYPES = (BasicBlock, BottleneckBlock, PreActBlock, ConvBlock)

Dtype = Any

MODELS: dict[str, Callable[..., _Classifier]] = {
    "resnet18": functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block=BasicBlock),
    "resnet34": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=BasicBlock),
    "resnet50": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=BottleneckBlock),
    "resnet101": functools.partial(ResNet, stage_sizes=(3, 4, 23, 3), block=BottleneckBlock),
    "resnet152": functools.partial(ResNet, stage_sizes=(3, 8, 36, 3), block=BottleneckBlock),
    # The paper's CIFAR ResNets: 3x3 stem, no max pool, PyTorch's default initialization.
    **{
        f"cifar_resnet{depth}": functools.partial(
            ResNet, stage_sizes=sizes, block=block, stem="cifar", weight_init="pytorch"
        )
        for depth, sizes, block in (
            (18, (2, 2, 2, 2), BasicBlock),
            (34, (3, 4, 6, 3), BasicBlock),
            (50, (3, 4, 6, 3), BottleneckBlock),
        )
    },
    **{
        f"cifar_resnet{depth}": functools.partial(CifarResNet, depth=depth)
        for depth in (8, 20, 32, 44, 56, 110)
    },
    "wrn28_10": functools.partial(WideResNet, depth=28, width=10),
    "vgg11": functools.partial(VGG, depth=11),
    "vgg16": functools.partial(VGG, depth=16),
    # The paper's VGG16-BN / VGG19-BN for CIFAR: convolutions He-normal over fan-out (its
    # normal(0, sqrt(2 / (k * k * out_channels)))), dense layers PyTorch's default.
    **{
        f"vgg{depth}_bn": functools.partial(
            VGG, depth=depth, classifier="mlp", dropout_rate=0.5, weight_init="vgg"
        )
        for depth in (16, 19)
    },
}


def create_model(
    name: str,
    *,
    num_classes: int,
    norm: str = "bn",
    modules: Sequence[int] | None = None,
    sbn_options: Mapping[str, Any] | None = None,
    zero_init_residual: bool = False,
    activation: str = "relu",
    dtype: Dtype = jnp.float32,
    axis_name: str | None = None,
    **kwargs: Any,
) -> _Classifier:
    """The model registered as ``name`` in :data:`MODELS`; see the module docstring.

    Raises:
      ValueError: unknown ``name``, ``norm`` (a kind in :data:`NORMS` or the
        paper's notation such as ``"sbn34"``) or ``activation`` (a name in
        :data:`ACTIVATIONS`), modules the model does not have,
        ``num_classes < 1``, SBN options that
        :class:`sbn_jax.SpectralBatchNorm` does not take, or ``kwargs`` that
        are not fields of the model (e.g. ``base_width`` of ResNet and VGG).
    """
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    sbn_options = dict(sbn_options or {})
    fields = set(inspect.signature(MODELS[name]).parameters)
    unknown = sorted(set(kwargs) - set(fields))
    if unknown:
        raise ValueError(
            f"{name} has no field(s) {unknown}; it takes {sorted(set(fields) - {'parent', 'name'})}"
        )
    model = MODELS[name](
        num_classes=num_classes,
        norm=norm,
        modules=None if modules is None else tuple(modules),
        sbn_options=FrozenDict(sbn_options),
        zero_init_residual=zero_init_residual,
        activation=ACTIVATIONS[activation],
        dtype=dtype,
        axis_name=axis_name,
        **kwargs,
    )
    try:
        kind, _ = model.placement()
        check_options(kind, sbn_options)
    except ValueError as error:  # Name the registered model, not its class.
        raise ValueError(f"{name}: {error}") from None
    return model
