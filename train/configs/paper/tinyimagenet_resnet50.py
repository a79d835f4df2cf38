"""Table III: resnet50 on tiny_imagenet (the ImageNet architecture, 224x224 inputs).

The paper's top-1 accuracy (mean ± std): bn 65.42 ± 0.60, 2bn4 65.35 ± 0.26, sbn4 67.79 ± 0.22.

python -m train --workdir DIR --config train/configs/paper/tinyimagenet_resnet50.py:VARIANT
with VARIANT one of bn, 2bn4, sbn4 (default: the last, the paper's SBN row). Needs the
tiny-imagenet-200 folder in --config.manual_dir (see train/tiny_imagenet.py).
"""

from train.configs.paper import common

ROWS = {"bn": "65.42 ± 0.60", "2bn4": "65.35 ± 0.26", "sbn4": "67.79 ± 0.22"}


def get_config(variant=None):
    return common.paper_config(
        dataset="tiny_imagenet", model="resnet50", variant=variant, rows=ROWS, table="Table III"
    )
