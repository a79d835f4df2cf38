"""Spectral Layer, Group and Instance Norm against the float64 NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sbn_jax import family, linen
from sbn_jax import nnx as sbn_nnx
from tests.reference import reference_group_norm

# (shape, axis, spatial_axes): NHWC, NCHW, 1-D, 3-D, and two batch axes with explicit spatial axes.
LAYOUTS = [
    ((3, 6, 5, 4), -1, None),
    ((3, 4, 6, 5), 1, None),
    ((3, 9, 4), -1, None),
    ((2, 4, 5, 3, 4), -1, None),
    ((2, 3, 6, 5, 4), -1, (2, 3)),
]
# (num_groups, group_size) for 4 channels: layer, group, instance.
GROUPS = {"layer": (1, None), "group": (2, None), "instance": (None, 1)}
# Compiled, one program per case: eager dispatch compiles every operation at every new shape.
jitted_group_norm = jax.jit(
    family.spectral_group_norm,
    static_argnames=("num_groups", "group_size", "axis", "spatial_axes", "fft_norm", "impl"),
)


def _case(shape, axis, seed=0):
    rng = np.random.default_rng(seed)
    # Per-example offsets and scales, so that per-example statistics matter.
    x = rng.normal(size=shape) * rng.uniform(0.5, 3.0, size=(shape[0],) + (1,) * (len(shape) - 1))
    x = x + rng.normal(size=(shape[0],) + (1,) * (len(shape) - 1))
    channels = shape[axis]
    return x, rng.normal(size=channels), rng.normal(size=channels)


@pytest.mark.parametrize("impl", ["closed_form", "fft"])
@pytest.mark.parametrize("kind", list(GROUPS))
@pytest.mark.parametrize("fft_norm", ["backward", "ortho", "forward"])
@pytest.mark.parametrize("shape, axis, spatial_axes", LAYOUTS)
def test_group_norm_matches_reference(shape, axis, spatial_axes, fft_norm, kind, impl):
    x, scale, bias = _case(shape, axis)
    num_groups, group_size = GROUPS[kind]
    y = jitted_group_norm(
        jnp.asarray(x, jnp.float32),
        num_groups=num_groups,
        group_size=group_size,
        scale=jnp.asarray(scale, jnp.float32),
        bias=jnp.asarray(bias, jnp.float32),
        axis=axis,
        spatial_axes=spatial_axes,
        fft_norm=fft_norm,
        impl=impl,
    )
    groups = 4 // (group_size or 4 // num_groups)
    expected = reference_group_norm(
        x, groups, axis=axis, spatial_axes=spatial_axes, fft_norm=fft_norm, scale=scale, bias=bias
    )
    assert y.shape == x.shape and y.dtype == jnp.float32
    np.testing.assert_allclose(y, expected, atol=2e-5 * max(1.0, np.abs(expected).max()))


# Widths 1 (one bin a row), odd and even (the unpaired columns of the closed form), 1-D and 3-D.
EXACTNESS_LAYOUTS = [*LAYOUTS, ((2, 1, 7, 4), -1, None), ((2, 5, 1, 4), -1, None)]


@pytest.mark.parametrize("kind", list(GROUPS))
@pytest.mark.parametrize("fft_norm", ["backward", "ortho", "forward"])
@pytest.mark.parametrize("shape, axis, spatial_axes", EXACTNESS_LAYOUTS)
def test_closed_form_equals_the_transform_path_in_float64(
    shape, axis, spatial_axes, fft_norm, kind
):
    """Outputs and gradients (input, scale, bias) agree to float64 rounding: the closed form is
    the same function, not an approximation of it."""
    num_groups, group_size = GROUPS[kind]
    with jax.enable_x64(True):
        x, scale, bias = (jnp.asarray(v, jnp.float64) for v in _case(shape, axis, seed=3))
        cotangent = jnp.asarray(np.random.default_rng(4).normal(size=shape))

        def loss(impl, x, scale, bias):
            y = family.spectral_group_norm(
                x,
                num_groups=num_groups,
                group_size=group_size,
                scale=scale,
                bias=bias,
                axis=axis,
                spatial_axes=spatial_axes,
                fft_norm=fft_norm,
                impl=impl,
            )
            return jnp.sum(y * cotangent), y

        # Jitted: one compilation per case instead of one per operation and shape (eager).
        grad = jax.jit(jax.grad(loss, argnums=(1, 2, 3), has_aux=True), static_argnums=0)
        (*closed, y_closed), (*transform, y_transform) = (
            (*g, y) for g, y in (grad("closed_form", x, scale, bias), grad("fft", x, scale, bias))
        )
        for a, b in [(y_closed, y_transform), *zip(closed[0], transform[0], strict=True)]:
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * max(1.0, float(jnp.abs(b).max())))


def test_auto_takes_the_closed_form_for_a_real_map_and_the_transform_for_a_complex_one():
    x = jnp.asarray(_case((2, 6, 5, 4), -1)[0], jnp.float32)
    real, cplx = jnp.ones(4), jnp.ones(4, jnp.complex64) * (1 + 0.5j)

    def transforms(**kwargs):  # The fft primitive, also inside nested jaxprs, has an fft_type.
        return "fft_type=" in str(
            jax.make_jaxpr(lambda x: family.spectral_layer_norm(x, **kwargs))(x)
        )

    assert not transforms(scale=real) and not transforms(scale=real, impl="closed_form")
    assert transforms(scale=cplx) and transforms(scale=real, impl="fft")
    with pytest.raises(ValueError, match='impl="closed_form" needs a real scale and bias'):
        family.spectral_layer_norm(x, bias=cplx, impl="closed_form")
    with pytest.raises(ValueError, match="impl must be one of"):
        family.spectral_layer_norm(x, impl="matmul")


def test_layer_and_instance_norm_are_group_norm_with_one_group_and_one_channel():
    x = jnp.asarray(_case((3, 6, 5, 4), -1)[0], jnp.float32)
    np.testing.assert_array_equal(
        family.spectral_layer_norm(x), family.spectral_group_norm(x, num_groups=1)
    )
    np.testing.assert_array_equal(
        family.spectral_instance_norm(x), family.spectral_group_norm(x, group_size=1)
    )


def test_each_example_is_normalized_on_its_own():
    x = jnp.asarray(_case((4, 6, 5, 4), -1)[0], jnp.float32)
    changed = x.at[1:].multiply(7.0).at[1:].add(3.0)
    for normalize in (family.spectral_layer_norm, family.spectral_instance_norm):
        np.testing.assert_allclose(normalize(changed)[0], normalize(x)[0], atol=1e-6)
        np.testing.assert_allclose(normalize(x[:1])[0], normalize(x)[0], atol=1e-6)


def test_bfloat16_input_gives_bfloat16_output_close_to_float32():
    x = jnp.asarray(_case((3, 8, 8, 4), -1)[0], jnp.float32)
    y16 = family.spectral_layer_norm(x.astype(jnp.bfloat16), fft_norm="ortho")
    assert y16.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        y16.astype(jnp.float32), family.spectral_layer_norm(x, fft_norm="ortho"), atol=0.05
    )


@pytest.mark.parametrize(
    "shape, options, message",
    [
        ((2, 4, 4, 6), {"num_groups": 4}, "num_groups=4 must be a positive divisor of the 6"),
        ((2, 4, 4, 6), {"group_size": 4}, "group_size=4 must be a positive divisor of the 6"),
        ((2, 4, 4, 6), {"num_groups": 2, "group_size": 3}, "exactly one of num_groups"),
        ((2, 4, 4, 6), {}, "exactly one of num_groups"),
        ((2, 1, 1, 6), {"group_size": 1}, "one frequency bin and one channel per group"),
    ],
)
def test_bad_groups_are_refused(shape, options, message):
    with pytest.raises(ValueError, match=message):
        family.spectral_group_norm(jnp.ones(shape), **options)


def test_bad_inputs_are_refused_as_by_sbn():
    with pytest.raises(TypeError, match="floating-point"):
        family.spectral_layer_norm(jnp.ones((2, 4, 4, 3), jnp.int32))
    with pytest.raises(ValueError, match="fft_norm must be one of"):
        family.spectral_layer_norm(jnp.ones((2, 4, 4, 3)), fft_norm="unitary")
    with pytest.raises(ValueError, match="at least one spatial axis"):
        family.spectral_layer_norm(jnp.ones((2, 3)))


@pytest.mark.parametrize(
    "linen_cls, nnx_cls, options",
    [
        (linen.SpectralLayerNorm, sbn_nnx.SpectralLayerNorm, {}),
        (linen.SpectralGroupNorm, sbn_nnx.SpectralGroupNorm, {"num_groups": 2}),
        (linen.SpectralGroupNorm, sbn_nnx.SpectralGroupNorm, {"num_groups": None, "group_size": 2}),
        (linen.SpectralInstanceNorm, sbn_nnx.SpectralInstanceNorm, {"fft_norm": "ortho"}),
        (linen.SpectralLayerNorm, sbn_nnx.SpectralLayerNorm, {"impl": "fft"}),
    ],
)
def test_linen_and_nnx_modules_equal_the_function_and_each_other(linen_cls, nnx_cls, options):
    x = jnp.asarray(_case((3, 6, 5, 4), -1)[0], jnp.float32)
    module = linen_cls(**options)
    variables = module.init(jax.random.key(0), x)
    assert set(variables) == {"params"}  # No running statistics.
    params = {
        "scale": jnp.asarray([0.5, 1.0, 2.0, -1.0]),
        "bias": jnp.asarray([0.1, 0.0, -0.2, 0.3]),
    }
    y = module.apply({"params": params}, x)
    groups = {k: v for k, v in options.items() if k in ("num_groups", "group_size")}
    if linen_cls is linen.SpectralLayerNorm:
        groups = {"num_groups": 1}
    elif linen_cls is linen.SpectralInstanceNorm:
        groups = {"group_size": 1}
    expected = family.spectral_group_norm(
        x,
        **groups,
        scale=params["scale"],
        bias=params["bias"],
        fft_norm=options.get("fft_norm", "backward"),
        impl=options.get("impl", "auto"),
    )
    np.testing.assert_allclose(y, expected, atol=1e-6)
    model = nnx_cls(4, rngs=nnx.Rngs(0), **options)
    model.scale[...], model.bias[...] = params["scale"], params["bias"]
    np.testing.assert_allclose(model(x), y, atol=1e-6)
    # Both pass impl on: only impl="fft" transforms.
    for call in (lambda x: module.apply({"params": params}, x), model):
        assert ("fft_type=" in str(jax.make_jaxpr(call)(x))) == (options.get("impl") == "fft")
