"""Table IV: resnet50 on imagenet2012.

The paper's top-1 accuracy (mean ± std): bn 76.80 ± 0.11, 2bn4 76.90 ± 0.08, sbn4 77.51 ± 0.07.

python -m train --workdir DIR --config train/configs/paper/imagenet_resnet50.py:VARIANT
with VARIANT one of bn, 2bn4, sbn4 (default: the last, the paper's SBN row).
"""

from train.configs.paper import common

ROWS = {"bn": "76.80 ± 0.11", "2bn4": "76.90 ± 0.08", "sbn4": "77.51 ± 0.07"}


def get_config(variant=None):
    return common.paper_config(
        dataset="imagenet2012", model="resnet50", variant=variant, rows=ROWS, table="Table IV"
    )
