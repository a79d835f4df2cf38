"""ImageNet ResNet-50 with SBN in module 4: the Flax ImageNet example's recipe (TPU v3-8 and up).

The faster alternative to the paper's 400-epoch recipe (train/configs/paper/imagenet_resnet50.py):
batch 1024, learning rate 0.1 * batch / 256, 100 epochs with 5 of linear warm-up and cosine
decay, Nesterov momentum 0.9, weight decay 1e-4 on kernels, bfloat16. The variant is the
paper's placement: ``sbn4`` (default; SBN after every BatchNorm of module 4), or the
controls ``bn`` and ``2bn4``:
``--config=train/configs/imagenet_resnet50.py:bn``. Needs ``imagenet2012`` prepared in
``data_dir`` (see docs/training.md).
"""

from train.configs import default

VARIANTS = ("bn", "2bn4", "sbn4")


def get_config(variant=None):
    variant = variant or "sbn4"
    if variant not in VARIANTS:
        raise ValueError(f"imagenet_resnet50 variants are {VARIANTS}; got {variant!r}")
    config = default.get_config()
    config.dataset = "imagenet2012"
    config.image_size = 224
    config.shuffle_buffer_size = 16 * 128  # Per process.
    config.model = "resnet50"
    config.norm = variant
    config.zero_init_residual = True  # As the anchor's bottleneck blocks (SBN's scale, 2BN's 2nd).
    config.half_precision = True
    config.batch_size = 1024
    config.eval_batch_size = 1024
    config.num_epochs = 100.0
    config.warmup_epochs = 5.0
    config.learning_rate = 0.1
    config.momentum = 0.9
    config.weight_decay = 1e-4
    config.label_smoothing = 0.0
    config.parallelism = "jit"
    config.log_every_steps = 100
    config.eval_every_epochs = 1.0  # 1251 steps at batch 1024.
    config.checkpoint_every_epochs = 1.0
    return config
