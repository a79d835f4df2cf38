"""rfftn / irfftn as dense DFT matrices, one small matmul per spatial axis.

At ResNet sizes (7 to 56) a DFT matrix of ``n x n`` is tiny, and matrix units
on GPUs and TPUs run it faster than an FFT library call with its layout
changes. The matrices include the norm's scaling, and the contractions run at
``Precision.HIGHEST`` so that the result matches ``jnp.fft`` to float32
precision. Spectra are complex arrays, as from ``jnp.fft``.
"""

from __future__ import annotations

import functools
import string

import jax
import jax.numpy as jnp
import numpy as np

from sbn_jax._layout import FORWARD_SCALE, INVERSE_SCALE


@functools.lru_cache(maxsize=256)
def _dft_matrix(n: int, norm: str, inverse: bool) -> np.ndarray:
    """``(n, n)`` complex matrix ``M[t, k]`` of the full DFT along one axis (input index first)."""
    sign = 1.0 if inverse else -1.0
    scale = (INVERSE_SCALE if inverse else FORWARD_SCALE)[norm](n)
    t = np.arange(n)[:, None]
    return scale * np.exp(sign * 2j * np.pi * t * np.arange(n)[None, :] / n)


@functools.lru_cache(maxsize=256)
def _real_dft_matrix(n: int, norm: str) -> np.ndarray:
    """``(n, n // 2 + 1)`` complex matrix of the real-to-half-spectrum DFT."""
    return _dft_matrix(n, norm, False)[:, : n // 2 + 1]


@functools.lru_cache(maxsize=256)
def _half_to_real_matrices(n: int, norm: str) -> tuple[np.ndarray, np.ndarray]:
    """``(n // 2 + 1, n)`` real matrices taking (Re Y, Im Y) of a half spectrum to ``irfft(Y)``.

    Every bin but 0 and (for even n) n/2 stands for itself and its mirror, so it
    counts twice; the imaginary parts of those two bins are ignored, as irfft does.
    """
    bins = n // 2 + 1
    k = np.arange(bins)[:, None]
    t = np.arange(n)[None, :]
    counts = np.full((bins, 1), 2.0)
    counts[0] = 1.0
    if n % 2 == 0:
        counts[-1] = 1.0
    angle = 2 * np.pi * k * t / n
    scale = INVERSE_SCALE[norm](n) * counts
    return scale * np.cos(angle), -scale * np.sin(angle)


def _contract(x: jax.Array, matrix: jax.Array, axis: int) -> jax.Array:
    """Multiplies ``x`` along ``axis`` by ``matrix`` ``(n_in, n_out)``; the axis keeps its place."""
    letters = string.ascii_letters[: x.ndim]
    new = string.ascii_letters[x.ndim]
    out = letters[:axis] + new + letters[axis + 1 :]
    return jnp.einsum(
        f"{letters},{letters[axis]}{new}->{out}", x, matrix, precision=jax.lax.Precision.HIGHEST
    )


def _complex_contract(
    re: jax.Array, im: jax.Array, matrix: np.ndarray, axis: int
) -> tuple[jax.Array, jax.Array]:
    m_re = jnp.asarray(matrix.real, re.dtype)
    m_im = jnp.asarray(matrix.imag, re.dtype)
    return (
        _contract(re, m_re, axis) - _contract(im, m_im, axis),
        _contract(re, m_im, axis) + _contract(im, m_re, axis),
    )


def rfftn(x: jax.Array, axes: tuple[int, ...], norm: str) -> jax.Array:
    """Same as ``jnp.fft.rfftn(x, axes=axes, norm=norm)`` for real ``x`` and increasing ``axes``."""
    last = axes[-1]
    half = _real_dft_matrix(x.shape[last], norm)
    re = _contract(x, jnp.asarray(half.real, x.dtype), last)
    im = _contract(x, jnp.asarray(half.imag, x.dtype), last)
    for axis in axes[:-1]:
        re, im = _complex_contract(re, im, _dft_matrix(x.shape[axis], norm, False), axis)
    return jax.lax.complex(re, im)


def irfftn(
    spectrum: jax.Array, axes: tuple[int, ...], sizes: tuple[int, ...], norm: str
) -> jax.Array:
    """Same as ``jnp.fft.irfftn(spectrum, s=sizes, axes=axes, norm=norm)``; ``axes`` increasing."""
    re, im = jnp.real(spectrum), jnp.imag(spectrum)
    for axis, size in zip(axes[:-1], sizes[:-1], strict=True):
        re, im = _complex_contract(re, im, _dft_matrix(size, norm, True), axis)
    from_real, from_imag = _half_to_real_matrices(sizes[-1], norm)
    return _contract(re, jnp.asarray(from_real, re.dtype), axes[-1]) + _contract(
        im, jnp.asarray(from_imag, re.dtype), axes[-1]
    )
