"""Table II: vgg16_bn on cifar100.

The paper's top-1 accuracy (mean ± std): bn 72.48 ± 0.35, 2bn4 72.45 ± 0.17, sbn4 72.79 ± 0.27.

python -m train --workdir DIR --config train/configs/paper/cifar100_vgg16_bn.py:VARIANT
with VARIANT one of bn, 2bn4, sbn4 (default: the last, the paper's SBN row).
"""

from train.configs.paper import common

ROWS = {"bn": "72.48 ± 0.35", "2bn4": "72.45 ± 0.17", "sbn4": "72.79 ± 0.27"}


def get_config(variant=None):
    return common.paper_config(
        dataset="cifar100", model="vgg16_bn", variant=variant, rows=ROWS, table="Table II"
    )
