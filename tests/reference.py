"""An independent float64 NumPy reference of SBN, written from DESIGN.md §1.

It shares no code with the library: layouts, statistics and the affine step
are spelled out again here with numpy.fft.
"""

import numpy as np


def reference_layout(ndim, axis=-1, spatial_axes=None):
    feature = axis % ndim
    if spatial_axes is None:
        spatial = [i for i in range(1, ndim) if i != feature]
    else:
        spatial = sorted(a % ndim for a in spatial_axes)
    batch = [i for i in range(ndim) if i != feature and i not in spatial]
    return feature, spatial, batch


def reference_sbn(
    x,
    *,
    axis=-1,
    spatial_axes=None,
    per_frequency=False,
    fft_norm="backward",
    epsilon=1e-5,
    scale=None,
    bias=None,
    running=None,
):
    """Returns (y, (mean, var)) in float64; ``running`` = (mean complex, var) in stats shape."""
    x = np.asarray(x, np.float64)
    feature, spatial, batch = reference_layout(x.ndim, axis, spatial_axes)
    spectrum = np.fft.rfftn(x, axes=spatial, norm=fft_norm)
    reduce = tuple(batch) if per_frequency else tuple(batch + spatial)

    def expand(stat):
        if per_frequency:
            return np.expand_dims(stat, tuple(batch))
        shape = [1] * x.ndim
        shape[feature] = -1
        return np.reshape(stat, shape)

    if running is None:
        mean = spectrum.mean(axis=reduce, keepdims=True)
        var = (np.abs(spectrum - mean) ** 2).mean(axis=reduce, keepdims=True)
        stats = (np.squeeze(mean, reduce), np.squeeze(var, reduce))
    else:
        mean, var = expand(np.asarray(running[0])), expand(np.asarray(running[1]))
        stats = running
    out = (spectrum - mean) / np.sqrt(var + epsilon)
    channel_shape = [1] * x.ndim
    channel_shape[feature] = -1
    if scale is not None:
        out = out * np.reshape(np.asarray(scale, np.float64), channel_shape)
    if bias is not None:
        out = out + np.reshape(np.asarray(bias, np.float64), channel_shape)
    sizes = [x.shape[i] for i in spatial]
    y = np.fft.irfftn(out, s=sizes, axes=spatial, norm=fft_norm)
    return y, stats
