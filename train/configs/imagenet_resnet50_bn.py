"""The BN-only baseline of ``imagenet_resnet50.py``: same recipe, ``norm="bn"``."""

from train.configs import imagenet_resnet50


def get_config():
    config = imagenet_resnet50.get_config()
    config.norm = "bn"
    return config
