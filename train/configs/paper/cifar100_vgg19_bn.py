"""Table II: vgg19_bn on cifar100.

The paper's top-1 accuracy (mean ± std): bn 71.34 ± 0.14, 2bn4 71.30 ± 0.30, sbn4 72.00 ± 0.26.

python -m train --workdir DIR --config train/configs/paper/cifar100_vgg19_bn.py:VARIANT
with VARIANT one of bn, 2bn4, sbn4 (default: the last, the paper's SBN row).
"""

from train.configs.paper import common

ROWS = {"bn": "71.34 ± 0.14", "2bn4": "71.30 ± 0.30", "sbn4": "72.00 ± 0.26"}


def get_config(variant=None):
    return common.paper_config(
        dataset="cifar100", model="vgg19_bn", variant=variant, rows=ROWS, table="Table II"
    )
