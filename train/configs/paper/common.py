"""The paper's training recipes (Section IV) as configs, one file per table and model.

Each file's ``get_config(variant)`` takes the row's variant, ml_collections' way:
``--config=train/configs/paper/cifar10_resnet18.py:sbn34`` (the baseline is ``bn``,
the control e.g. ``2bn34``, the method e.g. ``sbn34``); without one it is the
paper's SBN row. Seeds: ``--config.seed=N``; Table V: ``--config.learning_rate=0.2``.

What the paper states and these recipes follow: SGD with momentum 0.9 (not
Nesterov), the learning rate as given (not scaled by the batch size), step
decays, weight decay on every parameter (PyTorch's SGD ``weight_decay``, which
the paper does not restrict), batch 128 (ImageNet: 256), random crop with
padding 4 and flips on CIFAR, the 9/1 train/validation split of CIFAR with the
best validation step scored on the test set. The paper's PyTorch layers have a
full affine map in the BatchNorm before SBN (and before the second BatchNorm of
2BN), which weight decay pins; ``redundant_affine=True`` keeps it. What the
paper leaves open and we chose: no warm-up; validation and checkpoints once per
epoch; the model's initialization as documented in :mod:`sbn_jax.models`.
"""

from __future__ import annotations

import ml_collections

from train.configs import default


def paper_config(
    *, dataset: str, model: str, variant: str | None, rows: dict[str, str], table: str
) -> ml_collections.ConfigDict:
    """The recipe of ``table``'s row ``variant`` of ``model`` on ``dataset``.

    Args:
      dataset: "cifar10", "cifar100", "tiny_imagenet" or "imagenet2012".
      model: a name in :data:`sbn_jax.models.MODELS`.
      variant: a key of ``rows``; None: the last (the paper's SBN row).
      rows: the table's variants for this model, each with the paper's accuracy.
      table: e.g. "Table I".

    Raises:
      ValueError: a variant the table does not have for this model.
    """
    if variant is None or variant == "":
        variant = list(rows)[-1]
    if variant not in rows:
        raise ValueError(
            f"{table} has the variants {sorted(rows)} for {model} on {dataset}; got {variant!r}"
        )
    config = default.get_config()
    config.dataset, config.model, config.norm = dataset, model, variant
    config.paper = ml_collections.ConfigDict(
        {"table": table, "variant": variant, "accuracy": rows[variant]}
    )
    paper_optimization(config)
    if dataset in ("cifar10", "cifar100"):
        config.image_size = 32
        resnet = dataset == "cifar10" and model.startswith("cifar_resnet")
        cifar_protocol(config, resnet_schedule=resnet)
    elif dataset == "imagenet2012":
        _imagenet(config)
    elif dataset == "tiny_imagenet":
        _tiny_imagenet(config)
    else:
        raise ValueError(f"no paper recipe for dataset {dataset!r}")
    return config


def paper_optimization(config: ml_collections.ConfigDict) -> None:
    """What every paper recipe shares: SGD with momentum 0.9 at the stated rate 0.1, no
    warm-up, step decays, weight decay on every parameter, the redundant affine map kept."""
    config.sbn_options = ml_collections.ConfigDict(
        {"per_frequency": False, "fft_norm": "backward", "redundant_affine": True}
    )
    config.activation = "relu"
    config.momentum, config.nesterov = 0.9, False
    config.scale_learning_rate = False
    config.learning_rate = 0.1
    config.warmup_epochs = 0.0
    config.lr_schedule = "step"
    config.weight_decay_on = "all"
    config.label_smoothing = 0.0
    config.log_every_steps = 100


def cifar_protocol(config: ml_collections.ConfigDict, *, resnet_schedule: bool) -> None:
    """The paper's CIFAR protocol: crops with padding 4 and flips, batch 128, 200 epochs, the
    last 10% of the training split held out and scored once per epoch (the loop's epochs, so
    also of a per-class subset and under another batch size), the best validation epoch
    scored on test, checkpoints once per epoch; the step decay of CIFAR-10's ResNets
    (``resnet_schedule``: x0.1 at epochs 90 and 136, weight decay 1e-4) or of the others
    (x0.2 at 60, 120 and 160, weight decay 5e-4)."""
    config.crop_padding, config.random_flip = 4, True
    config.batch_size, config.eval_batch_size = 128, 1000
    config.num_epochs = 200.0
    config.validation_fraction = 0.1
    config.eval_every_epochs = config.checkpoint_every_epochs = 1.0
    if resnet_schedule:
        config.lr_boundaries_epochs, config.lr_decay_factor = (90, 136), 0.1
        config.weight_decay = 1e-4
    else:  # CIFAR-100, and VGG on CIFAR-10.
        config.lr_boundaries_epochs, config.lr_decay_factor = (60, 120, 160), 0.2
        config.weight_decay = 5e-4


def _imagenet(config) -> None:
    config.image_size = 224
    config.shuffle_buffer_size = 16 * 128
    config.batch_size, config.eval_batch_size = 256, 256
    config.num_epochs = 400.0
    config.lr_boundaries_epochs, config.lr_decay_factor = (75, 150, 225, 300, 375), 0.1
    config.weight_decay = 1e-4
    config.parallelism = "jit"
    config.eval_every_epochs = config.checkpoint_every_epochs = 1.0


def _tiny_imagenet(config) -> None:
    # The validation split is the test set (Tiny ImageNet's test labels are not public).
    config.image_size = 224
    config.shuffle_buffer_size = 16 * 128
    config.batch_size, config.eval_batch_size = 128, 200
    config.num_epochs = 300.0
    config.lr_boundaries_epochs, config.lr_decay_factor = (75, 150, 225), 0.1
    config.weight_decay = 1e-4
    config.eval_every_epochs = config.checkpoint_every_epochs = 1.0
