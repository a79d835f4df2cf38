"""ImageNet ResNet-50 with BN + SBN: the Flax ImageNet example's recipe (TPU v3-8 and up).

Batch 1024, learning rate 0.1 * batch / 256, 100 epochs with 5 of linear warm-up and
cosine decay, Nesterov momentum 0.9, weight decay 1e-4, bfloat16. Needs
``imagenet2012`` prepared in ``data_dir`` (see README).
"""

from train.configs import default


def get_config():
    config = default.get_config()
    config.dataset = "imagenet2012"
    config.image_size = 224
    config.shuffle_buffer_size = 16 * 128  # Per process.
    config.model = "resnet50"
    config.norm = "bn+sbn"
    config.zero_init_residual = True  # As the anchor's bottleneck blocks (SBN's scale only).
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
    config.eval_every_steps = 1251  # Every epoch.
    config.checkpoint_every_steps = 1251
    return config
