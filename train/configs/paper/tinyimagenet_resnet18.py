"""Table III: resnet18 on tiny_imagenet (the ImageNet architecture, 224x224 inputs).

The paper's top-1 accuracy (mean ± std): bn 63.52 ± 0.25, 2bn34 63.60 ± 0.07, sbn34 64.69 ± 0.23.

python -m train --workdir DIR --config train/configs/paper/tinyimagenet_resnet18.py:VARIANT
with VARIANT one of bn, 2bn34, sbn34 (default: the last, the paper's SBN row). Needs the
tiny-imagenet-200 folder in --config.manual_dir (see train/tiny_imagenet.py).
"""

from train.configs.paper import common

ROWS = {"bn": "63.52 ± 0.25", "2bn34": "63.60 ± 0.07", "sbn34": "64.69 ± 0.23"}


def get_config(variant=None):
    return common.paper_config(
        dataset="tiny_imagenet", model="resnet18", variant=variant, rows=ROWS, table="Table III"
    )
