"""What every model shares: its fields, convolution and dense constructors, norm plumbing."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sbn_jax.models.norms import Norm, layer_kind, resolve_placement

Dtype = Any
Initializer = Callable[..., Any]
ModuleDef = Callable[..., nn.Module]

# Weight initializations, as PyTorch code does them.
# "torchvision": convolutions He-normal over fan-out (torchvision's ResNets; also the CIFAR VGG
# code's normal(0, sqrt(2 / (k * k * out_channels)))), dense layers Flax's LeCun normal.
# "pytorch": PyTorch's default for Conv2d and Linear, Kaiming-uniform with a = sqrt(5), i.e.
# uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)): what the paper's CIFAR ResNets used.
# "vgg": the paper's CIFAR VGGs, convolutions as "torchvision", dense layers as "pytorch".
# Biases start at zero throughout (PyTorch draws Linear biases uniformly; a documented choice).
HE_NORMAL_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
PYTORCH_DEFAULT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
INITS = {
    "torchvision": (HE_NORMAL_FAN_OUT, nn.initializers.lecun_normal()),
    "pytorch": (PYTORCH_DEFAULT, PYTORCH_DEFAULT),
    "vgg": (HE_NORMAL_FAN_OUT, PYTORCH_DEFAULT),
}


def conv(
    features: int,
    kernel: int,
    strides: int = 1,
    name: str | None = None,
    *,
    use_bias: bool,
    dtype: Dtype,
    kernel_init: Initializer,
) -> nn.Conv:
    """A ``kernel x kernel`` convolution with PyTorch's symmetric padding."""
    pad = (kernel - 1) // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(strides, strides),
        padding=((pad, pad), (pad, pad)),
        use_bias=use_bias,
        dtype=dtype,
        kernel_init=kernel_init,
        name=name,
    )


class _Classifier(nn.Module):
    """Fields and norm plumbing shared by every model.

    Subclasses set ``num_modules``: the stages the paper's notation numbers
    from 1 (residual stages; VGG's pooling stages).

    Two controls for what SBN does at initialization (docs/claims.md, "07 · Fashion-MNIST"):
    ``shrink_init_modules`` starts the last scale of every norm layer of those
    modules (shortcut norms included) at ``1 / sqrt(H W)`` (see ``Norm``);
    ``logit_scale`` multiplies the logits by a constant, a fixed temperature.
    """

    num_classes: int
    norm: str = "bn"
    modules: Sequence[int] | None = None
    sbn_options: Mapping[str, Any] | None = None
    zero_init_residual: bool = False
    shrink_init_modules: Sequence[int] = ()
    logit_scale: float = 1.0
    activation: Callable = nn.relu
    weight_init: str = "torchvision"
    dtype: Dtype = jnp.float32
    axis_name: str | None = None

    @property
    def num_modules(self) -> int:
        raise NotImplementedError

    def placement(self) -> tuple[str, tuple[int, ...] | None]:
        """``(kind, modules)`` of :func:`resolve_placement`; raises on a bad ``norm``, or
        ``shrink_init_modules`` the model lacks or that have no norm to shrink."""
        kind, modules = resolve_placement(
            self.norm, self.modules, self.num_modules, type(self).__name__
        )
        shrunk = tuple(self.shrink_init_modules)
        if shrunk:
            if any(not isinstance(m, int) or not 1 <= m <= self.num_modules for m in shrunk):
                raise ValueError(
                    f"{type(self).__name__} has modules 1..{self.num_modules}; got "
                    f"shrink_init_modules {shrunk}"
                )
            if kind == "none":
                raise ValueError('shrink_init_modules needs norm layers; norm is "none"')
        return kind, modules

    def norm_for(self, module: int | None, train: bool) -> ModuleDef:
        """A ``Norm`` constructor for a layer of ``module`` (1-based; ``None`` for the stem)."""
        kind, modules = self.placement()
        return functools.partial(
            Norm,
            kind=layer_kind(kind, modules, module),
            train=train,
            shrink_init=module is not None and module in tuple(self.shrink_init_modules),
            dtype=self.dtype,
            axis_name=self.axis_name,
            sbn_options=self.sbn_options,
        )

    @property
    def conv(self) -> ModuleDef:
        """A convolution constructor ``(features, kernel, strides=1, name=None)``."""
        if self.weight_init not in INITS:
            raise ValueError(
                f"weight_init must be one of {sorted(INITS)}, got {self.weight_init!r}"
            )
        return functools.partial(
            conv,
            use_bias=self.placement()[0] == "none",
            dtype=self.dtype,
            kernel_init=INITS[self.weight_init][0],
        )

    def dense(self, features: int, name: str | None = None) -> nn.Dense:
        """A dense layer with the model's ``weight_init``."""
        kernel_init = INITS[self.weight_init][1]
        return nn.Dense(features, dtype=self.dtype, kernel_init=kernel_init, name=name)

    def head(self, x: jax.Array) -> jax.Array:
        """Global average pool and :meth:`logits`: ``(B, H, W, C) -> (B, num_classes)``."""
        return self.logits(jnp.mean(x, axis=(1, 2)))

    def logits(self, features: jax.Array) -> jax.Array:
        """The dense layer ``(B, C) -> (B, num_classes)``, float32, times ``logit_scale``."""
        if isinstance(self.logit_scale, bool) or not (
            isinstance(self.logit_scale, int | float) and self.logit_scale > 0
        ):
            raise ValueError(f"logit_scale must be a positive number, got {self.logit_scale!r}")
        logits = jnp.asarray(self.dense(self.num_classes, name="head")(features), jnp.float32)
        return logits if self.logit_scale == 1 else logits * self.logit_scale

    def check_input(self, x: jax.Array) -> None:
        if x.ndim != 4:
            raise ValueError(
                f"{type(self).__name__} expects NHWC images of shape (B, H, W, C), got shape "
                f"{x.shape}"
            )


def check_width(base_width: int) -> None:
    """Refuses a channel count that is not a positive integer."""
    if not isinstance(base_width, int) or base_width < 1:
        raise ValueError(
            f"base_width must be a positive integer (64: the published models), got {base_width!r}"
        )
