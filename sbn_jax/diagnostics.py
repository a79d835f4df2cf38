"""Feature-map diagnostics: norms and spectra per block, for the paper's analyses.

Two steps. First collect the outputs of the blocks of a Flax linen model, in call
order, as a ``{name: array}`` dict: :func:`collect_block_outputs` runs the model
with ``capture_intermediates`` and a filter, :func:`flatten_collection` reads a
collection the model filled with ``self.sow``. Then measure each output with
the pure functions below; all of them take feature maps laid out NHWC
``(B, H, W, C)`` (pass ``axis=1`` for NCHW) unless stated otherwise.

Definitions used throughout:

* norm of a block: the **mean over the batch of the per-example Frobenius
  norm**, ``mean_b ||x_b||_F`` (:func:`feature_norm`); not the norm of the
  whole batch, so it does not grow with the batch size.
* power spectrum: ``|fft2(x_b[..., c], norm="ortho")|**2`` averaged over the
  batch, per channel (:func:`power_spectrum`); with the unitary transform its
  sum over the bins equals the mean squared norm of a channel.
* spectral flatness: the **ratio of the geometric to the arithmetic mean** of
  the power over the frequency bins (Wiener entropy, :func:`spectral_flatness`):
  1 for a flat (white) spectrum, near 0 when a few bins hold the energy.
  :func:`spectral_entropy` (normalized Shannon entropy) is the alternative.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Filter = Callable[[nn.Module, str], bool]


def block_filter(*block_types: type) -> Filter:
    """A ``capture_intermediates`` filter that keeps ``__call__`` of modules of ``block_types``."""

    def keep(module: nn.Module, method_name: str) -> bool:
        return isinstance(module, block_types) and method_name == "__call__"

    return keep


def flatten_collection(tree: Mapping[str, Any], separator: str = "/") -> dict[str, jax.Array]:
    """Flattens an ``intermediates`` or sown collection into ``{name: array}``.

    Dict insertion order is kept, which is call order when the collection comes
    from an un-jitted ``apply`` (``jax.jit`` returns dicts with sorted keys).
    Method names other than ``__call__`` stay in the name; a tuple of values
    (one per call, as ``sow`` stores them) yields ``name``, or ``name[i]`` when
    a module was called more than once.

    Args:
      tree: nested dict, e.g. ``state["intermediates"]``.
      separator: joins the path components of a name.

    Returns:
      An insertion-ordered dict from names to arrays.
    """
    flat: dict[str, jax.Array] = {}

    def visit(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, Mapping):
            for key, child in node.items():
                visit(child, path if key == "__call__" else (*path, str(key)))
        elif isinstance(node, tuple | list):
            name = separator.join(path)
            for i, value in enumerate(node):
                flat[name if len(node) == 1 else f"{name}[{i}]"] = value
        else:
            flat[separator.join(path)] = node

    visit(tree, ())
    return flat


def block_outputs_fn(
    model: nn.Module,
    *,
    capture: Filter | Sequence[type],
    mutable: Sequence[str] = (),
    jit: bool = True,
    **kwargs: Any,
) -> Callable[..., tuple[Any, dict[str, jax.Array]]]:
    """A reusable ``run(variables, *args, rngs=None) -> (y, outputs)``; see
    :func:`collect_block_outputs`, which calls it once.

    Build it once and call it on many variables (e.g. one checkpoint per
    epoch): it compiles once per input shape. ``rngs`` (e.g. ``{"dropout":
    key}`` for ``train=True``) is traced, not static.
    """
    keep = capture if callable(capture) else block_filter(*capture)
    mutable = [*mutable, "intermediates"]
    # jit returns dicts with sorted keys; the call order travels beside them as a list of names.
    names: list[str] = []

    def forward(variables: Any, args: tuple[Any, ...], rngs: Any) -> tuple[Any, list[jax.Array]]:
        y, state = model.apply(
            variables, *args, rngs=rngs, capture_intermediates=keep, mutable=mutable, **kwargs
        )
        outputs = flatten_collection(state["intermediates"])
        names[:] = list(outputs)
        return y, list(outputs.values())

    if jit:
        forward = jax.jit(forward)

    def run(variables: Any, *args: Any, rngs: Any = None) -> tuple[Any, dict[str, jax.Array]]:
        y, values = forward(variables, args, rngs)
        return y, dict(zip(names, values, strict=True))

    return run


def collect_block_outputs(
    model: nn.Module,
    variables: Mapping[str, Any],
    *args: Any,
    capture: Filter | Sequence[type],
    mutable: Sequence[str] = (),
    jit: bool = True,
    **kwargs: Any,
) -> tuple[Any, dict[str, jax.Array]]:
    """Runs ``model.apply`` and returns the outputs of the captured modules, in call order.

    Args:
      model: a flax.linen module.
      variables: its variables (``{"params": ..., "batch_stats": ...}``).
      *args: positional inputs of the model, e.g. ``x`` of shape ``(B, H, W, C)``.
      capture: a filter ``(module, method_name) -> bool`` as
        ``capture_intermediates`` takes it, or a sequence of module classes
        whose ``__call__`` outputs are kept (see :func:`block_filter`).
      mutable: further mutable collections, e.g. ``["batch_stats"]`` with
        ``train=True``; their updates are dropped.
      jit: compile the forward pass (one compilation per call of this
        function; :func:`block_outputs_fn` compiles once for many calls); the
        order of the outputs is the call order either way.
      **kwargs: keyword inputs of the model, e.g. ``train=False``; static
        under ``jit`` (Python values, not arrays).

    Returns:
      ``(y, outputs)``: the model's output and ``{module path: output}`` in
      the order the modules were called (a module called twice gives
      ``path[0]``, ``path[1]``).
    """
    run = block_outputs_fn(model, capture=capture, mutable=mutable, jit=jit, **kwargs)
    return run(variables, *args)


def _per_example(x: jax.Array) -> jax.Array:
    """``(B, ...) -> (B, prod(...))`` in float32."""
    return jnp.reshape(x, (x.shape[0], -1)).astype(jnp.promote_types(x.dtype, jnp.float32))


def per_example_norm(x: jax.Array) -> jax.Array:
    """Frobenius norm of each example: ``(B, ...) -> (B,)``."""
    return jnp.linalg.norm(_per_example(x), axis=1)


def feature_norm(x: jax.Array) -> jax.Array:
    """Mean over the batch of the per-example Frobenius norm: ``(B, ...) -> ()``."""
    return jnp.mean(per_example_norm(x))


def feature_rms(x: jax.Array) -> jax.Array:
    """Root mean square of all values: ``(B, ...) -> ()``; comparable across shapes."""
    return jnp.sqrt(jnp.mean(jnp.square(_per_example(x))))


def max_abs(x: jax.Array) -> jax.Array:
    """Largest absolute value: ``(...) -> ()``."""
    return jnp.max(jnp.abs(x))


def growth_factors(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ratios of consecutive values, ``values[1:] / values[:-1]``: ``(L,) -> (L - 1,)``."""
    values = np.asarray(values, dtype=np.float64)
    return values[1:] / values[:-1]


def geometric_mean_growth(values: Sequence[float] | np.ndarray) -> float:
    """Mean growth factor per step: ``(values[-1] / values[0]) ** (1 / (L - 1))``."""
    values = np.asarray(values, dtype=np.float64)
    return float((values[-1] / values[0]) ** (1.0 / (len(values) - 1)))


def power_spectrum(x: jax.Array, *, axis: int = -1, shift: bool = False) -> jax.Array:
    """Per-channel 2-D power spectrum averaged over the batch.

    ``P[c, u, v] = mean_b |fft2(x[b, :, :, c], norm="ortho")[u, v]|**2``. The
    transform is unitary, so ``P[c].sum()`` is the mean over the batch of
    ``||x[b, :, :, c]||**2``.

    Args:
      x: real feature maps ``(B, H, W, C)``; with ``axis=1``, ``(B, C, H, W)``.
      axis: the channel axis, -1 or 1.
      shift: apply ``fftshift`` so that frequency 0 sits in the middle (for
        display). The other functions of this module expect ``shift=False``.

    Returns:
      ``(C, H, W)`` float32, channel first so that ``P[c]`` is an image.
    """
    if x.ndim != 4:
        raise ValueError(f"power_spectrum expects a 4-D batch of feature maps; got {x.shape}.")
    x = jnp.moveaxis(x, axis, 1).astype(jnp.promote_types(x.dtype, jnp.float32))
    spectrum = jnp.fft.fft2(x, norm="ortho")
    power = jnp.mean(jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2, axis=0)
    return jnp.fft.fftshift(power, axes=(-2, -1)) if shift else power


# The percentiles of feature-map values the paper plots per epoch (its Fig. 2).
PAPER_PERCENTILES = (100.0, 93.0, 84.0, 69.0, 50.0, 31.0, 16.0, 7.0, 0.0)


def value_percentiles(x: jax.Array, percentiles: Sequence[float] = PAPER_PERCENTILES) -> jax.Array:
    """Percentiles of all the values of ``x`` (any shape), as the paper's Fig. 2 tracks them.

    Returns:
      ``(len(percentiles),)`` float32, in the order given (default: max, 93, 84,
      69, 50, 31, 16, 7, min), linear interpolation between order statistics.
    """
    if not all(0.0 <= p <= 100.0 for p in percentiles):
        raise ValueError(f"percentiles must lie in [0, 100]; got {tuple(percentiles)}.")
    ordered = jnp.sort(jnp.ravel(x).astype(jnp.promote_types(x.dtype, jnp.float32)))
    # Positions in float64 on the host, so that 100 and 0 are exactly the max and the min.
    positions = np.asarray(percentiles, np.float64) / 100.0 * (ordered.shape[0] - 1)
    low = np.floor(positions).astype(np.int64)
    high = np.minimum(low + 1, ordered.shape[0] - 1)
    fraction = jnp.asarray(positions - low, ordered.dtype)
    return ordered[low] * (1 - fraction) + ordered[high] * fraction


def magnitude_spectra(
    x: jax.Array, *, example: int = 0, axis: int = -1, norm: str = "backward"
) -> jax.Array:
    """``|fft2|`` of every channel of one example, zero frequency in the middle (paper's Fig. 3).

    Args:
      x: real feature maps ``(B, H, W, C)``; with ``axis=1``, ``(B, C, H, W)``.
      example: which example of the batch.
      axis: the channel axis, -1 or 1.
      norm: the transform's norm; "backward" is the paper's Eq. (1).

    Returns:
      ``(C, H, W)`` float32 magnitudes, ``fftshift``-ed.
    """
    if x.ndim != 4:
        raise ValueError(f"magnitude_spectra expects a 4-D batch of feature maps; got {x.shape}.")
    if not -x.shape[0] <= example < x.shape[0]:
        raise ValueError(f"example {example} is out of range for a batch of {x.shape[0]}.")
    image = jnp.moveaxis(x, axis, 1)[example].astype(jnp.promote_types(x.dtype, jnp.float32))
    return jnp.fft.fftshift(jnp.abs(jnp.fft.fft2(image, norm=norm)), axes=(-2, -1))


def radial_frequency(height: int, width: int) -> np.ndarray:
    """Radial frequency of every bin of an unshifted ``(H, W)`` FFT, in cycles per pixel.

    ``sqrt(fy**2 + fx**2)`` with ``fy = fftfreq(H)``, ``fx = fftfreq(W)``;
    from 0 (DC) to ``sqrt(0.5)`` (the corner, Nyquist in both directions).
    """
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[None, :]
    return np.sqrt(fy**2 + fx**2)


def radial_bands(height: int, width: int) -> np.ndarray:
    """Integer radial band of every bin: ``round(radius * min(H, W))``, shape ``(H, W)``.

    For a square ``N x N`` map band ``k`` holds the frequencies ``k`` cycles
    per image away from DC (rounded), so a tone of ``k`` cycles lands in band
    ``k``; bands run from 0 to ``round(N / sqrt(2))``.
    """
    return np.rint(radial_frequency(height, width) * min(height, width)).astype(np.int32)


def radial_profile(power: jax.Array, *, average: bool = False) -> tuple[jax.Array, np.ndarray]:
    """Fraction of the energy in each radial frequency band.

    Args:
      power: unshifted power spectra ``(..., H, W)``, e.g. from
        :func:`power_spectrum`.
      average: use the mean power per bin of a band instead of its total.
        Outer bands hold more bins, so totals rise with radius even for a
        white spectrum; averages are flat for white noise.

    Returns:
      ``(profile, frequencies)``: ``profile`` of shape ``(..., K)`` sums to 1
      over its last axis; ``frequencies`` ``(K,)`` are the bands' centres in
      cycles per pixel (band ``k`` is ``k / min(H, W)``).
    """
    height, width = power.shape[-2:]
    bands = radial_bands(height, width).reshape(-1)
    num_bands = int(bands.max()) + 1
    membership = np.eye(num_bands, dtype=np.float32)[bands]
    if average:
        membership = membership / membership.sum(axis=0, keepdims=True)
    flat = jnp.reshape(power, (*power.shape[:-2], height * width))
    energy = flat @ jnp.asarray(membership, dtype=flat.dtype)
    profile = energy / jnp.sum(energy, axis=-1, keepdims=True)
    return profile, np.arange(num_bands) / min(height, width)


def _bins(power: jax.Array, exclude_dc: bool) -> jax.Array:
    """``(..., H, W) -> (..., H * W)``, dropping the DC bin ``[0, 0]`` when asked."""
    flat = jnp.reshape(power, (*power.shape[:-2], -1))
    return flat[..., 1:] if exclude_dc else flat


def spectral_flatness(
    power: jax.Array, *, exclude_dc: bool = False, floor: float = 1e-12
) -> jax.Array:
    """Geometric mean over arithmetic mean of the power over the bins: ``(..., H, W) -> (...)``.

    1 for a flat spectrum, near 0 when a few bins hold the energy. Each bin's
    power is floored at ``floor`` times the arithmetic mean, so a spectrum with
    empty bins gives a small positive number instead of 0.

    Args:
      power: unshifted power spectra ``(..., H, W)``.
      exclude_dc: leave the DC bin out (post-ReLU maps carry most energy there).
      floor: relative floor of the power of a bin.
    """
    bins = _bins(power, exclude_dc)
    mean = jnp.mean(bins, axis=-1, keepdims=True)
    log_geometric = jnp.mean(jnp.log(jnp.maximum(bins, floor * mean)), axis=-1)
    return jnp.exp(log_geometric) / mean[..., 0]


def spectral_entropy(power: jax.Array, *, exclude_dc: bool = False) -> jax.Array:
    """Normalized Shannon entropy of the power over the bins: ``(..., H, W) -> (...)`` in [0, 1].

    ``-sum p log p / log(n)`` with ``p = power / power.sum()`` over the ``n``
    bins: 1 for a flat spectrum, 0 for a single bin.
    """
    bins = _bins(power, exclude_dc)
    p = bins / jnp.sum(bins, axis=-1, keepdims=True)
    plogp = jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)
    return -jnp.sum(plogp, axis=-1) / np.log(bins.shape[-1])


def summarize(
    outputs: Mapping[str, jax.Array], *, axis: int = -1, exclude_dc: bool = False
) -> dict[str, np.ndarray]:
    """Per-block scalars for a dict of feature maps, e.g. from :func:`collect_block_outputs`.

    Args:
      outputs: ``{name: (B, H, W, C)}`` in depth order (``(B, C, H, W)`` with
        ``axis=1``).
      axis: the channel axis.
      exclude_dc: passed to :func:`spectral_flatness`.

    Returns:
      ``{"norm", "rms", "max_abs", "flatness"}``, each a float64 array ``(L,)``
      over the ``L`` blocks: :func:`feature_norm`, :func:`feature_rms`,
      :func:`max_abs` and the channel mean of :func:`spectral_flatness` of
      :func:`power_spectrum`.
    """
    rows: dict[str, list[jax.Array]] = {"norm": [], "rms": [], "max_abs": [], "flatness": []}
    for x in outputs.values():
        rows["norm"].append(feature_norm(x))
        rows["rms"].append(feature_rms(x))
        rows["max_abs"].append(max_abs(x))
        power = power_spectrum(x, axis=axis)
        rows["flatness"].append(jnp.mean(spectral_flatness(power, exclude_dc=exclude_dc)))
    return {key: np.asarray(jnp.stack(values), np.float64) for key, values in rows.items()}
