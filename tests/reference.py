"""An independent float64 NumPy reference of SBN, written from its definition (the four steps in
the docstring of sbn_jax/functional.py, the paper's Eqs. 1-4).

It shares no code with the library: layouts, statistics and the affine step
are spelled out again here with numpy.fft.
"""

import numpy as np


def _as_float64(values):
    """float64, or complex128 for a complex affine map."""
    return np.asarray(values, np.complex128 if np.iscomplexobj(values) else np.float64)


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
    use_mean=True,
    divide_by="std",
    separate_real_imag=False,
):
    """Returns (y, (mean, var)) in float64; ``running`` = (mean complex, var) in stats shape.

    With ``separate_real_imag`` the variance in ``stats``/``running`` is a pair
    (variance of the real parts, variance of the imaginary parts).
    """
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
        centered = spectrum - mean
        if separate_real_imag:
            var = tuple(
                (part**2).mean(axis=reduce, keepdims=True)
                for part in (centered.real, centered.imag)
            )
            stats = (np.squeeze(mean, reduce), tuple(np.squeeze(v, reduce) for v in var))
        else:
            var = (np.abs(centered) ** 2).mean(axis=reduce, keepdims=True)
            stats = (np.squeeze(mean, reduce), np.squeeze(var, reduce))
    else:
        mean = expand(np.asarray(running[0]))
        if separate_real_imag:
            var = tuple(expand(np.asarray(v)) for v in running[1])
        else:
            var = expand(np.asarray(running[1]))
        stats = running
    out = spectrum - mean if use_mean else spectrum
    if divide_by == "std" and separate_real_imag:
        out = out.real / np.sqrt(var[0] + epsilon) + 1j * out.imag / np.sqrt(var[1] + epsilon)
    elif divide_by == "std":
        out = out / np.sqrt(var + epsilon)
    elif divide_by == "constant":
        # The standard deviation of a bin of the transform of white unit-variance noise.
        n = np.prod([x.shape[i] for i in spatial])
        out = out / {"backward": np.sqrt(n), "ortho": 1.0, "forward": 1 / np.sqrt(n)}[fft_norm]
    channel_shape = [1] * x.ndim
    channel_shape[feature] = -1
    if scale is not None:
        out = out * np.reshape(_as_float64(scale), channel_shape)
    if bias is not None:
        out = out + np.reshape(_as_float64(bias), channel_shape)
    sizes = [x.shape[i] for i in spatial]
    y = np.fft.irfftn(out, s=sizes, axes=spatial, norm=fft_norm)
    return y, stats


def reference_group_norm(
    x,
    groups,
    *,
    axis=-1,
    spatial_axes=None,
    fft_norm="backward",
    epsilon=1e-5,
    scale=None,
    bias=None,
):
    """Spectral group norm in float64: per example and group, over its channels and all bins."""
    x = np.asarray(x, np.float64)
    feature, spatial, _ = reference_layout(x.ndim, axis, spatial_axes)
    spectrum = np.moveaxis(np.fft.rfftn(x, axes=spatial, norm=fft_norm), feature, -1)
    channels = spectrum.shape[-1]
    grouped = spectrum.reshape(*spectrum.shape[:-1], groups, channels // groups)
    # The spatial axes' places once the feature axis has moved last; then a group's channels.
    reduce = (*(s - (s > feature) for s in spatial), grouped.ndim - 1)
    mean = grouped.mean(axis=reduce, keepdims=True)
    var = (np.abs(grouped - mean) ** 2).mean(axis=reduce, keepdims=True)
    out = ((grouped - mean) / np.sqrt(var + epsilon)).reshape(spectrum.shape)
    if scale is not None:
        out = out * _as_float64(scale)
    if bias is not None:
        out = out + _as_float64(bias)
    out = np.moveaxis(out, -1, feature)
    return np.fft.irfftn(out, s=[x.shape[i] for i in spatial], axes=spatial, norm=fft_norm)
