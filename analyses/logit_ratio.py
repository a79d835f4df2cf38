"""How SBN34 changes a CIFAR ResNet-18's logits at initialization (issue 22's temperature control).

The argument: SBN (channel statistics, backward DFT) after a BatchNorm multiplies a map by
about ``1 / sqrt(H W)``. In the paper's ``sbn34`` it does so in *every* norm layer of modules
3 and 4, the shortcut norms included, so a block's residual branch and its shortcut shrink by
the same factor. BatchNorm is invariant to the scale of its input and ReLU is homogeneous, so
the shrinkage does not compound: module 3 leaves its output shrunk by 1/8 (maps 8x8), module
4's first block renormalizes (its branch and its projection shortcut start with a
convolution and a norm) and leaves the output shrunk by 1/4 (maps 4x4). At initialization the
head's bias is zero, so the logits of ``sbn34`` should be those of ``bn`` with the same
convolution and dense weights times 1/4, up to SBN's first-row pattern (the closed form's
correction, sbn_jax/_closed_form.py) and BatchNorm's epsilon.

This script measures it. For each seed it initializes the ``bn`` model, gives the ``sbn34``
model (and the shrunk-initialization control ``bn`` with ``shrink_init_modules=(3, 4)``) the
same convolution and dense weights, and compares their logits on the same batch of
Fashion-MNIST validation images (held out of the training split, padded to 32x32 and
normalized as the loop evaluates), in training mode (batch statistics: at initialization
the running statistics are still 0 and 1).
Reported per seed: the least-squares slope of the variant's logits on ``bn``'s through the
origin, the ratio of their RMS, and the relative residual ``|z - slope z_bn| / |z|``.

    python -m analyses.logit_ratio --out analyses/results/fashion_mnist_logit_ratio.json
"""

from __future__ import annotations

import argparse
import json
import platform

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from train import input_pipeline, train
from train.configs import fashion_mnist_resnet18

# name -> (recipe variant, extra config): what is compared with the bn model's logits.
CONTROLS = {
    "sbn34": ("sbn34", {}),
    "2bn34": ("2bn34", {}),
    "bn_shrunk_init34": ("bn", {"shrink_init_modules": (3, 4)}),
}


def _shared_weights(source: dict, target: dict) -> dict:
    """``target``'s params with every convolution and dense kernel taken from ``source``.

    The two models name their convolutions and the head alike; only the norm layers differ.
    """
    flat_source = traverse_util.flatten_dict(source)
    flat_target = traverse_util.flatten_dict(target)
    copied = 0
    for path, value in flat_target.items():
        if path[-1] == "kernel":
            if path not in flat_source or flat_source[path].shape != value.shape:
                raise ValueError(f"no kernel {'/'.join(path)} of the same shape in the bn model")
            flat_target[path] = flat_source[path]
            copied += 1
    if copied != sum(1 for path in flat_source if path[-1] == "kernel"):
        raise ValueError("the models do not have the same convolution and dense layers")
    return traverse_util.unflatten_dict(flat_target)


def _config(variant: str, extra: dict, args) -> object:
    config = train.with_defaults(fashion_mnist_resnet18.get_config(f"{variant},{args.per_class}"))
    config.base_width = args.base_width
    config.data_dir = args.data_dir
    for key, value in extra.items():
        config[key] = value
    return config


def _images(config, count: int) -> np.ndarray:
    """The first ``count`` validation images, padded and normalized as the loop evaluates."""
    config = config.copy_and_resolve_references()
    config.eval_batch_size = count
    return next(iter(input_pipeline.eval_batches(config, which="validation")))["image"]


def measure(args) -> dict:
    bn_config = _config("bn", {}, args)
    images = jnp.asarray(_images(bn_config, args.batch))
    shape = images.shape[1:]
    rows = []
    for seed in range(args.seeds):
        key = jax.random.key(seed)
        bn = train.create_model(bn_config, num_classes=10)
        bn_vars = bn.init(key, jnp.zeros((1, *shape)), train=False)
        z_bn, _ = bn.apply(bn_vars, images, train=True, mutable=["batch_stats"])
        row = {"seed": seed, "bn_logit_rms": float(jnp.sqrt(jnp.mean(z_bn**2)))}
        for name, (variant, extra) in CONTROLS.items():
            model = train.create_model(_config(variant, extra, args), num_classes=10)
            variables = dict(model.init(key, jnp.zeros((1, *shape)), train=False))
            variables["params"] = _shared_weights(bn_vars["params"], variables["params"])
            z, _ = model.apply(variables, images, train=True, mutable=["batch_stats"])
            slope = float(jnp.vdot(z, z_bn) / jnp.vdot(z_bn, z_bn))
            residual = float(jnp.linalg.norm(z - slope * z_bn) / jnp.linalg.norm(z))
            rms_ratio = float(jnp.sqrt(jnp.mean(z**2) / jnp.mean(z_bn**2)))
            row[name] = {"slope": slope, "rms_ratio": rms_ratio, "relative_residual": residual}
        rows.append(row)
    summary = {
        name: {
            stat: {
                "mean": float(np.mean([r[name][stat] for r in rows])),
                "std": float(np.std([r[name][stat] for r in rows], ddof=1)),
            }
            for stat in ("slope", "rms_ratio", "relative_residual")
        }
        for name in CONTROLS
    }
    return {
        "command": "python -m analyses.logit_ratio " + " ".join(args.argv),
        "machine": platform.processor() or platform.machine(),
        "jax": jax.__version__,
        "predicted_slope": 0.25,
        "images": args.batch,
        "base_width": args.base_width,
        "per_seed": rows,
        "summary": summary,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--base_width", type=int, default=16)
    parser.add_argument("--per_class", type=int, default=600)
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else __import__("sys").argv[1:]
    result = measure(args)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
