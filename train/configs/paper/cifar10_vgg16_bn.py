"""Table I: vgg16_bn on cifar10.

The paper's top-1 accuracy (mean ± std): bn 93.27 ± 0.12, 2bn4 93.29 ± 0.15, sbn4 93.48 ± 0.19.

python -m train --workdir DIR --config train/configs/paper/cifar10_vgg16_bn.py:VARIANT
with VARIANT one of bn, 2bn4, sbn4 (default: the last, the paper's SBN row).
"""

from train.configs.paper import common

ROWS = {"bn": "93.27 ± 0.12", "2bn4": "93.29 ± 0.15", "sbn4": "93.48 ± 0.19"}


def get_config(variant=None):
    return common.paper_config(
        dataset="cifar10", model="vgg16_bn", variant=variant, rows=ROWS, table="Table I"
    )
