"""Per-example image transforms for training and evaluation, in TensorFlow.

A preprocessor maps ``(image, seeds)`` to a normalized float32 ``(H, W, C)`` image:
``image`` is a uint8 ``(h, w, c)`` array (digits, CIFAR) or JPEG bytes (ImageNet,
Tiny ImageNet); ``seeds`` is a ``(2, 2)`` int64 pair of stateless seeds for the random
augmentation of training, ignored (and passed as ``None``) in evaluation. Using only
stateless ops keeps the batches a function of ``(seed, epoch, position)``.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from train.datasets import DatasetSpec, augmentation

# ImageNet evaluation crops the centre ``size / (size + 32)`` of the shorter side (224 of 256).
IMAGENET_CROP_PADDING = 32

# Datasets stored as JPEG bytes, which get the Inception-style crops decoded from the JPEG.
_JPEG_DATASETS = ("imagenet2012", "tiny_imagenet")


def preprocessor(config, spec: DatasetSpec, shape, *, train: bool) -> Callable:
    """The transform of ``spec``'s examples to ``shape`` (H, W, C): the random training
    augmentation if ``train``, else the deterministic evaluation transform.

    ``config.crop_padding`` and ``config.random_flip`` set the training augmentation, each
    where not None, else the data set's own (:func:`train.datasets.augmentation`: digits 1
    pixel and no flip, CIFAR 4 pixels and flips; the JPEG data sets, ImageNet and Tiny
    ImageNet, Inception-style crops and flips). With ``config.pad_to`` the images reach
    ``shape`` by centered zero padding (black borders) rather than by resizing.

    Raises:
      ValueError: ``pad_to`` or ``crop_padding`` on a JPEG data set, which is cropped.
    """
    pad_to = bool(config.pad_to)
    pad, flip = augmentation(config, spec)
    if spec.name in _JPEG_DATASETS:
        if pad_to:
            raise ValueError(f"pad_to applies to array images, not to {spec.name!r}'s JPEGs")
        return imagenet_train(spec, shape, flip) if train else imagenet_eval(spec, shape)
    if not train:
        return small_image_eval(spec, shape, pad_to=pad_to)
    return small_image_train(spec, shape, pad or 0, flip, pad_to=pad_to)


def _normalize(image, spec: DatasetSpec):
    image = tf.cast(image, tf.float32)
    return (image - tf.constant(spec.mean)) / tf.constant(spec.std)


def _resize(image, shape):
    if tuple(image.shape[:2]) == tuple(shape[:2]):
        return image
    return tf.image.resize(image, shape[:2], method="bilinear")


def _pad_to(image, shape):
    """Zero-pads ``image`` to ``shape[:2]``, centered (the odd pixel, if any, after)."""
    extra_h, extra_w = shape[0] - image.shape[0], shape[1] - image.shape[1]
    return tf.pad(
        image,
        [[extra_h // 2, extra_h - extra_h // 2], [extra_w // 2, extra_w - extra_w // 2], [0, 0]],
    )


def _resize_bicubic(image, shape):
    # Bicubic interpolation overshoots; clip back to the pixel range.
    return tf.clip_by_value(tf.image.resize(image, shape[:2], method="bicubic"), 0.0, 255.0)


def _pad_crop(image, seed, pad: int):
    """Zero-pads by ``pad`` pixels and crops back to the original size at a random offset."""
    height, width, channels = image.shape
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    return tf.image.stateless_random_crop(padded, (height, width, channels), seed=seed)


def small_image_train(
    spec: DatasetSpec, shape, pad: int, flip: bool, *, pad_to: bool = False
) -> Callable:
    """Training augmentation of array images: resize (or with ``pad_to`` zero-pad) to
    ``shape``, pad-and-crop, optional flip, normalize."""
    fit = _pad_to if pad_to else _resize

    def preprocess(image, seeds):
        # Pads with black (raw zeros), as torchvision's RandomCrop(padding=...) does.
        image = fit(tf.cast(image, tf.float32), shape)
        if pad:
            image = _pad_crop(image, seeds[0], pad)
        if flip:
            image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
        return _normalize(image, spec)

    return preprocess


def small_image_eval(spec: DatasetSpec, shape, *, pad_to: bool = False) -> Callable:
    """Evaluation of array images: normalize and resize, or with ``pad_to`` zero-pad (black,
    raw zeros, as in training) to ``shape`` and normalize."""

    def preprocess(image, seeds):
        del seeds
        if pad_to:
            return _normalize(_pad_to(tf.cast(image, tf.float32), shape), spec)
        return _resize(_normalize(image, spec), shape)

    return preprocess


def imagenet_train(spec: DatasetSpec, shape, flip: bool = True) -> Callable:
    """Inception-style random resized crop (area 8-100%, ratio 3/4-4/3) of a JPEG, and with
    ``flip`` a random horizontal flip."""

    def preprocess(image_bytes, seeds):
        jpeg_shape = tf.image.extract_jpeg_shape(image_bytes)
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            jpeg_shape,
            bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=(1, 1, 4)),
            seed=seeds[0],
            min_object_covered=0.1,
            aspect_ratio_range=(3 / 4, 4 / 3),
            area_range=(0.08, 1.0),
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        window = tf.stack([begin[0], begin[1], size[0], size[1]])
        image = tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)
        image = _resize_bicubic(image, shape)
        if flip:
            image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
        return _normalize(image, spec)

    return preprocess


def imagenet_eval(spec: DatasetSpec, shape) -> Callable:
    """Center crop of ``size / (size + 32)`` of the shorter side, resized to ``size``."""
    size = shape[0]

    def preprocess(image_bytes, seeds):
        del seeds
        jpeg_shape = tf.image.extract_jpeg_shape(image_bytes)
        height, width = jpeg_shape[0], jpeg_shape[1]
        crop = tf.cast(
            size / (size + IMAGENET_CROP_PADDING) * tf.cast(tf.minimum(height, width), tf.float32),
            tf.int32,
        )
        window = tf.stack([(height - crop + 1) // 2, (width - crop + 1) // 2, crop, crop])
        image = tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)
        image = _resize_bicubic(image, shape)
        return _normalize(image, spec)

    return preprocess
