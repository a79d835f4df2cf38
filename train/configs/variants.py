"""The normalization variants the studies compare: a name to a :class:`Variant`.

``norm`` is a :data:`sbn_jax.models.NORMS` kind or the paper's notation; ``sbn_options`` are
added to the run's ``sbn_options`` and ``model_options`` (config keys of the model, e.g.
``shrink_init_modules``, ``logit_scale``) set on the config. ``analyses/open_question.py``
sweeps them on the digits and ``train/configs/fashion_mnist_resnet18.py`` trains them on
Fashion-MNIST. In every ``*34`` variant modules 3 and 4 change and the rest of the model
keeps plain BatchNorm.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

# What SBN34 does to a CIFAR ResNet-18 at initialization, argued and measured in
# analyses/logit_ratio.py: its logits are the BatchNorm net's times 1/sqrt(4 x 4) of module 4.
SBN34_LOGIT_RATIO = 0.25


class Variant(NamedTuple):
    norm: str
    sbn_options: Mapping[str, Any] = MappingProxyType({})
    model_options: Mapping[str, Any] = MappingProxyType({})


VARIANTS: dict[str, Variant] = {
    "bn": Variant("bn"),
    "bn+sbn34": Variant("sbn34"),
    "2bn34": Variant("2bn34"),
    "bn+rescale34": Variant("sbn34", {"use_mean": False, "divide_by": "constant"}),
    # Issue 22's controls for what SBN34 changes at initialization: plain BatchNorm whose scales
    # in modules 3-4 (shortcut norms included) start at 1/sqrt(H W), SBN34's forward pass at init
    # with BatchNorm's training; and plain BatchNorm with its logits times SBN34's ratio at init.
    "bn:shrunk_init34": Variant("bn", model_options={"shrink_init_modules": (3, 4)}),
    "bn:temperature": Variant("bn", model_options={"logit_scale": SBN34_LOGIT_RATIO}),
    # The paper's other ablations (section V), run with --variants; "only down-scaling the
    # spectrum" is bn+rescale34 above.
    "sbn34:mean_only": Variant("sbn34", {"divide_by": "none"}),
    "sbn34:std_only": Variant("sbn34", {"use_mean": False}),
    "sbn34:no_affine": Variant("sbn34", {"use_scale": False, "use_bias": False}),
    "sbn34:separate_real_imag": Variant("sbn34", {"separate_real_imag": True}),
    # Beyond the paper: per-example norms in every norm layer, spatial and spectral.
    "family:gn": Variant("gn", {"num_groups": 8}),
    "family:sgn": Variant("sgn", {"num_groups": 8}),
    "family:gn+sgn": Variant("gn+sgn", {"num_groups": 8}),
    "family:ln": Variant("gn", {"num_groups": 1}),
    "family:sln": Variant("sgn", {"num_groups": 1}),
    "family:in": Variant("gn", {"group_size": 1}),
    "family:sin": Variant("sgn", {"group_size": 1}),
}
