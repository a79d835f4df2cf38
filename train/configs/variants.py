"""The normalization variants the studies compare: a name to ``(norm, sbn_options)``.

``norm`` is a :data:`sbn_jax.models.NORMS` kind or the paper's notation; the options are
added to the run's ``sbn_options``. ``analyses/open_question.py`` sweeps them on the digits
and ``train/configs/fashion_mnist_resnet18.py`` trains them on Fashion-MNIST. In every
``*34`` variant modules 3 and 4 change and the rest of the model keeps plain BatchNorm.
"""

from __future__ import annotations

from typing import Any

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "bn": ("bn", {}),
    "bn+sbn34": ("sbn34", {}),
    "2bn34": ("2bn34", {}),
    "bn+rescale34": ("sbn34", {"use_mean": False, "divide_by": "constant"}),
    # The paper's other ablations (section V), run with --variants; "only down-scaling the
    # spectrum" is bn+rescale34 above.
    "sbn34:mean_only": ("sbn34", {"divide_by": "none"}),
    "sbn34:std_only": ("sbn34", {"use_mean": False}),
    "sbn34:no_affine": ("sbn34", {"use_scale": False, "use_bias": False}),
    "sbn34:separate_real_imag": ("sbn34", {"separate_real_imag": True}),
    # Beyond the paper: per-example norms in every norm layer, spatial and spectral.
    "family:gn": ("gn", {"num_groups": 8}),
    "family:sgn": ("sgn", {"num_groups": 8}),
    "family:gn+sgn": ("gn+sgn", {"num_groups": 8}),
    "family:ln": ("gn", {"num_groups": 1}),
    "family:sln": ("sgn", {"num_groups": 1}),
    "family:in": ("gn", {"group_size": 1}),
    "family:sin": ("sgn", {"group_size": 1}),
}
