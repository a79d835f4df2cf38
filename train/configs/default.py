"""CIFAR ResNet-20 with BN + SBN on scikit-learn's digits: minutes on a laptop CPU, no network.

python -m train --workdir runs/default --config train/configs/default.py
"""

import ml_collections
from ml_collections import config_dict

# The checkpoint cadence when the config sets neither checkpoint_every_steps nor _epochs.
CHECKPOINT_EVERY_STEPS = 200


def get_config() -> ml_collections.ConfigDict:
    """Every setting the loop reads, with its default: the one list of settings."""
    config = ml_collections.ConfigDict()
    _data(config)
    _model(config)
    _optimization(config)
    _devices_logging_and_outputs(config)
    return config


def _data(config: ml_collections.ConfigDict) -> None:
    # A name in train.datasets.DATASETS, or "tfds:NAME" for any tfds image classification data
    # set (a plain tfds name works too where the registry lacks it; see train/any_tfds.py).
    config.dataset = "digits"
    config.data_dir = config_dict.placeholder(str)  # None: tfds's default (~/tensorflow_datasets).
    # Where manually provided files sit (fashion_mnist, tiny_imagenet); None: the data set's
    # default (fashion_mnist: /usr/share/datasets/fashion-mnist, where Debian's
    # dataset-fashion-mnist puts them), else <data_dir>/downloads/manual.
    config.manual_dir = config_dict.placeholder(str)
    # For "tfds:NAME" only: the tfds split trained on (validation_fraction and train_examples
    # carve from it; its pixel statistics normalize) and the split scored as the test set.
    config.tfds_train_split = "train"
    config.tfds_eval_split = "test"
    # Per-channel normalization (pixel units), both or neither; None: the registry's values,
    # or for "tfds:NAME" those of its training split (computed once, cached in data_dir).
    config.image_mean = config_dict.placeholder(tuple)
    config.image_std = config_dict.placeholder(tuple)
    config.image_size = config_dict.placeholder(int)  # None: the native size (8x8 for digits).
    # None: no padding; S: zero-pad the images (centered) to S x S instead of resizing them.
    config.pad_to = config_dict.placeholder(int)
    # None: the whole training split; K: only its first K examples (a harder task, same data).
    config.train_examples = config_dict.placeholder(int)
    # None: every class's examples; N: N examples of each class, drawn from the training split
    # (after any validation hold-out) by the seed alone, so every variant of a seed sees them.
    config.train_examples_per_class = config_dict.placeholder(int)
    # Training augmentation; None: the data set's own (train.datasets.SPECS: digits 1 pixel, no
    # flip; CIFAR and Fashion-MNIST 4 pixels and flips; "tfds:NAME" 1 pixel, no flip).
    # crop_padding: random translation by up to this many pixels (zero-pad, then crop back), for
    # array images only: ImageNet and Tiny ImageNet take Inception-style random resized crops.
    # random_flip: random horizontal flips (any data set; ImageNet's own: True).
    config.crop_padding = config_dict.placeholder(int)
    config.random_flip = config_dict.placeholder(bool)
    # Streamed data sets (ImageNet, Tiny ImageNet): examples in each process's shuffle buffer;
    # None: 16 times this process's share of batch_size.
    config.shuffle_buffer_size = config_dict.placeholder(int)
    # For dataset="fake" (random images and labels, no data read) only: its number of classes
    # (None: 1000), training steps per epoch and evaluation steps.
    config.num_classes = config_dict.placeholder(int)
    config.fake_steps_per_epoch = 100
    config.fake_eval_steps = 2


def _model(config: ml_collections.ConfigDict) -> None:
    config.model = "cifar_resnet20"  # A name in sbn_jax.models.MODELS.
    config.base_width = config_dict.placeholder(int)  # ResNet/VGG channels of module 1; None: 64.
    # "none", "bn", "sbn", "bn+sbn", "2bn", or the paper's notation such as "sbn34" / "2bn4".
    config.norm = "bn+sbn"
    config.modules = config_dict.placeholder(tuple)  # None: every norm layer (or the notation's).
    # Passed to SpectralBatchNorm; listed so that --config.sbn_options.KEY=V can change them.
    config.sbn_options = ml_collections.ConfigDict({"per_frequency": False, "fft_norm": "backward"})
    config.zero_init_residual = False  # Zero scale of each residual block's last norm.
    # Modules whose norm layers start their scale at 1/sqrt(H W), as SBN shrinks a map at init.
    config.shrink_init_modules = ()
    config.logit_scale = 1.0  # A fixed constant times the logits (a temperature of 1/it).
    config.activation = "relu"  # or "gelu"/"silu": smooth, see docs/reproducibility.md.
    config.half_precision = False  # bfloat16 activations.


def _optimization(config: ml_collections.ConfigDict) -> None:
    config.seed = 0  # Initialization, data order, augmentation and dropout.
    config.batch_size = 64  # Global (over all devices and processes); sets steps per epoch.
    config.eval_batch_size = 120  # Global; the last batch is padded and masked.
    config.num_epochs = 30.0
    config.num_train_steps = -1  # > 0 overrides num_epochs.
    config.warmup_epochs = 2.0  # Linear warm-up of the learning rate from 0.
    config.learning_rate = 0.4  # Scaled by batch_size / 256 (see scale_learning_rate).
    config.scale_learning_rate = True
    config.lr_schedule = "cosine"  # or "step": times lr_decay_factor at lr_boundaries_epochs.
    config.lr_boundaries_epochs = ()  # Counted from the end of the warm-up.
    config.lr_decay_factor = 0.1
    config.momentum = 0.9  # SGD's.
    config.nesterov = True
    config.weight_decay = 5e-4  # L2: weight_decay * w added to the gradients.
    config.weight_decay_on = "kernels"  # or "all" (PyTorch's SGD weight_decay, as the paper).
    config.label_smoothing = 0.0  # Of the cross-entropy's one-hot targets.


def _devices_logging_and_outputs(config: ml_collections.ConfigDict) -> None:
    config.parallelism = "pmap"  # or "jit" (a Mesh with a "data" axis).
    config.num_devices = -1  # -1: all devices.
    # Logging, evaluation and checkpoints. Evaluation and checkpoints in steps or in epochs of
    # the loop's steps per epoch (an epoch cadence keeps its meaning under --config.batch_size),
    # one key of each pair at most (train/cadences.py).
    config.log_every_steps = 20  # Training metrics to TensorBoard and the progress bar.
    config.eval_every_steps = 0  # 0: evaluate at the end only (unless eval_every_epochs).
    config.eval_every_epochs = 0.0  # > 0: evaluate every this many epochs (rounded to steps).
    # > 0: hold out this fraction of the training split; every evaluation scores it, and the test
    # score is that of the step with the best validation accuracy (the paper's CIFAR protocol).
    config.validation_fraction = 0.0
    # None: every CHECKPOINT_EVERY_STEPS steps, unless checkpoint_every_epochs > 0. The last
    # step is always checkpointed.
    config.checkpoint_every_steps = config_dict.placeholder(int)
    config.checkpoint_every_epochs = 0.0  # > 0: checkpoint every this many epochs.
    config.max_checkpoints_to_keep = 3  # The newest ones in DIR/checkpoints.
    config.progress_bar = True  # tqdm's, on process 0.
    # Opt-in outputs for comparing runs per image and per block (train/evaluation.py).
    # True: the test pass summary.json reports (the last state, or the best validation step's)
    # also writes test_predictions.npz: "prediction" (argmax class) and "label" of every test
    # image in the split's order (uint8; int16 above 256 classes), named in summary.json.
    config.save_test_predictions = False
    # True: at step 0 and every evaluation, appends {"step", "norms": {block path: mean L2 norm
    # of its output}} to block_norms.jsonl (blocks: sbn_jax.models.BLOCK_TYPES; eval mode, on the
    # first eval_batch_size images of the split evaluated: validation if held out, else test).
    config.record_block_norms = False
