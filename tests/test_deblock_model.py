"""The de-blocking network M (paper §3.2) and its layers: any input size, identity groups at
initialisation, the no-DC ablation's parameters and receptive fields, the trunk·mask + trunk
modulation, the windowed non-local block against a NumPy embedded-Gaussian non-local, and the
sub-pixel shuffle (padding in the non-local block: tests/test_nonlocal_mask.py).

The module turns on JAX's persistent compilation cache (in a temporary folder), as test_train.py.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from cqrnet_jax.models.build import attention_settings, deblock_from_config
from cqrnet_jax.models.layers import (
    AttentionGroup,
    MultiScaleDilatedConv,
    WindowedNonLocal,
    conv3x3,
    depth_to_space,
)

TINY = dict(features=8, num_local_groups=1, nl_inner=4, nl_window=8)


@pytest.fixture(scope="module")
def tiny():
    """(model, variables, jitted apply) of a tiny DeblockNet at initialisation."""
    model = deblock_from_config(TINY)
    key = jax.random.key(0, impl="unsafe_rbg")  # compiles in a third of threefry's time
    variables = jax.jit(model.init)(key, jnp.zeros((1, 16, 16), jnp.float32))
    return model, variables, jax.jit(model.apply)


def _random_params(abstract, seed: int, scale: float = 0.3):
    """N(0, scale^2) values for every parameter of an abstract tree (none of them zero)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda a: jnp.asarray(scale * rng.standard_normal(a.shape), jnp.float32), abstract
    )


def _nonlocal_numpy(x, params, subsample: int = 1):
    """Plain embedded-Gaussian non-local over each whole image of x (N, H, W, C), float64:
    z = W·softmax_k(θ(x_q)·φ(x_k)) g(x_k) + x, keys/values max-pooled by `subsample`."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    n, h, w, c = x.shape
    tokens = np.asarray(x, np.float64).reshape(n, h * w, c)

    def dense(name, t):
        return t @ p[name]["kernel"] + p[name]["bias"]

    theta, phi, g = dense("theta", tokens), dense("phi", tokens), dense("g", tokens)
    if subsample > 1:
        f = subsample

        def pool(t):
            t = t.reshape(n, h // f, f, w // f, f, -1)
            return t.max(axis=(2, 4)).reshape(n, (h // f) * (w // f), -1)

        phi, g = pool(phi), pool(g)
    logits = np.einsum("nqc,nkc->nqk", theta, phi)
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    y = dense("out", np.einsum("nqk,nkc->nqc", weights, g))
    return x + y.reshape(n, h, w, c)


def _windowed_nonlocal_numpy(x, params, window: int, subsample: int = 1):
    """The NumPy non-local applied separately to each window-sized tile (H, W multiples of it)."""
    out = np.empty(x.shape, np.float64)
    for i in range(0, x.shape[1], window):
        for j in range(0, x.shape[2], window):
            crop = x[:, i : i + window, j : j + window]
            out[:, i : i + window, j : j + window] = _nonlocal_numpy(crop, params, subsample)
    return out


def _non_local(inner, window, **kw):
    """A WindowedNonLocal of these settings (chunk=, subsample=, attention=), the rest at the
    config's defaults."""
    given = {"nl_inner": inner, "nl_window": window, **{f"nl_{k}": v for k, v in kw.items()}}
    return WindowedNonLocal(attention_settings(given))


def _random_block(window, x_shape, seed, **kw):
    """(jitted apply, random non-zero params, random input) of a WindowedNonLocal, inner width 4."""
    block = _non_local(4, window, **kw)
    x = jnp.asarray(np.random.default_rng(seed).standard_normal(x_shape), jnp.float32)
    abstract = jax.eval_shape(block.init, jax.random.key(0), x)["params"]
    return jax.jit(block.apply), _random_params(abstract, seed + 1), x


# --- the whole network ------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 5, 7), (2, 37, 53), (3, 8, 8), (1, 1, 1), (2, 9, 11, 1)])
def test_any_shape_comes_back_and_the_long_skip_is_exact(tiny, shape):
    """Odd, tiny and window-sized images, with or without the channel axis: the output has the
    input's shape, finite and changed by the network; with the tail conv's kernel and bias zeroed
    it is exactly the input (the long skip), so padding and cropping put every pixel back."""
    _, variables, apply = tiny
    x = jax.random.uniform(jax.random.key(1), shape)
    out = apply(variables, x)
    assert out.shape == shape and out.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(out))) and float(jnp.max(jnp.abs(out - x))) > 1e-4
    params = dict(variables["params"])
    params["tail"] = jax.tree.map(jnp.zeros_like, params["tail"])
    np.testing.assert_array_equal(np.asarray(apply({"params": params}, x)), np.asarray(x))


def test_groups_are_the_identity_at_initialisation(tiny):
    """At init every group is the identity (zero-initialised DC fusion), so the network is
    x + tail(body_conv(head(x))), and it is not the identity itself."""
    _, variables, apply = tiny
    p = variables["params"]
    assert not np.any(np.asarray(p["group_nl_low"]["dilated"]["fuse"]["kernel"]))
    x = jax.random.uniform(jax.random.key(3), (2, 37, 53))  # a shape compiled above
    f = conv3x3(TINY["features"], "head").apply({"params": p["head"]}, x[..., None])
    f = conv3x3(TINY["features"], "body_conv").apply({"params": p["body_conv"]}, f)
    expected = x + conv3x3(1, "tail").apply({"params": p["tail"]}, f)[..., 0]
    out = apply(variables, x)
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), rtol=1e-5, atol=1e-6)
    assert float(jnp.max(jnp.abs(out - x))) > 1e-3


def test_no_dc_runs_the_default_networks_parameters_with_other_dilations(deblock_config):
    """no_dc only changes the dilations to (1, 1, 1): its network has the default's parameters
    (names and shapes, so the same count) and runs them (random, so the DC units matter),
    to a different output."""
    dc, no_dc = (deblock_config(p).model for p in ("smoke", "smoke,no_dc"))
    assert tuple(dc.dilations) == (1, 2, 4) and tuple(no_dc.dilations) == (1, 1, 1)
    nets = [deblock_from_config(m) for m in (dc, no_dc)]
    x = jax.random.uniform(jax.random.key(4), (1, 48, 48))
    abstract = [jax.eval_shape(n.init, jax.random.key(0), x) for n in nets]
    assert jax.tree.map(lambda a: a.shape, abstract[0]) == jax.tree.map(
        lambda a: a.shape, abstract[1]
    )
    variables = {"params": _random_params(abstract[0].pop("params"), 7, scale=0.1)}
    variables.update(jax.tree.map(lambda a: jnp.ones(a.shape, a.dtype), abstract[0]))
    outs = [np.asarray(jax.jit(n.apply)(variables, x)) for n in nets]
    assert np.all(np.isfinite(outs[0])) and np.all(np.isfinite(outs[1]))
    assert np.max(np.abs(outs[0] - outs[1])) > 1e-3


# --- what a group computes: dilation sets the receptive field, the mask modulates the trunk ----


def _support(apply, params, x):
    """Offsets (dy, dx) from the centre pixel of the input pixels that the centre output pixel
    depends on: the non-zero entries of its gradient with respect to the input."""
    c = x.shape[1] // 2
    grad = jax.grad(lambda x: jnp.sum(apply(params, x)[0, c, c]))(x)
    return {(int(i) - c, int(j) - c) for i, j in np.argwhere(np.any(grad[0] != 0, axis=-1))}


@pytest.mark.parametrize("dilations", [(1, 2, 4), (1, 1, 1)])
def test_dilations_set_the_receptive_field_of_the_dc_unit(dilations):
    """The DC unit's output pixel depends on the input exactly at the offsets {-d, 0, d}^2 of
    each dilation d (random weights): a sparse 9x9 field for (1, 2, 4), 3x3 for no_dc's
    (1, 1, 1), with the same parameters."""
    unit = MultiScaleDilatedConv(8, dilations)
    x = jnp.asarray(np.random.default_rng(5).standard_normal((1, 15, 15, 8)), jnp.float32)
    abstract = jax.eval_shape(unit.init, jax.random.key(0), x)
    params = _random_params(abstract, 6)
    expected = {(i * d, j * d) for d in dilations for i in (-1, 0, 1) for j in (-1, 0, 1)}
    assert _support(jax.jit(unit.apply), params, x) == expected


def test_every_dc_unit_of_a_preset_network_has_its_dilations_receptive_field(deblock_config):
    """In the networks built from the smoke and smoke,no_dc configs, every DC unit (found by
    intercepting the calls of one initialisation) sees the offsets of the config's dilations:
    no_dc's units see 3x3 and the default's 9x9, so the ablation reaches the layers."""
    for presets in ("smoke", "smoke,no_dc"):
        dilations = tuple(deblock_config(presets).model.dilations)
        model = deblock_from_config(deblock_config(presets).model)
        units = {}

        def record(next_fun, args, kwargs, context):
            if isinstance(context.module, MultiScaleDilatedConv):
                units[context.module.path] = context.module.clone(parent=None)  # noqa: B023
            return next_fun(*args, **kwargs)

        x = jax.ShapeDtypeStruct((1, 48, 48), jnp.float32)
        with nn.intercept_methods(record):
            abstract = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
        assert len(units) == model.num_local_groups + 2
        expected = {(i * d, j * d) for d in dilations for i in (-1, 0, 1) for j in (-1, 0, 1)}
        for path, unit in units.items():
            sub = functools.reduce(lambda tree, key: tree[key], path, abstract)
            x = jnp.asarray(np.random.default_rng(5).standard_normal((1, 15, 15, unit.features)))
            params = {"params": _random_params(sub, 6)}
            assert _support(unit.apply, params, x.astype(jnp.float32)) == expected, (presets, path)


def test_attention_group_modulates_the_trunk_as_trunk_times_mask_plus_trunk():
    """What enters the group's output blocks is trunk·mask + trunk (docs/method.md), recorded from
    trunk's and the mask branch's outputs during one call (random weights, mask in (0, 1) and not
    constant)."""
    settings = attention_settings(dict(nl_inner=2, nl_window=8))
    group = AttentionGroup(features=4, non_local=True, dilations=(1, 2, 4), attention=settings)
    x = jnp.asarray(np.random.default_rng(9).standard_normal((1, 16, 16, 4)), jnp.float32)
    params = _random_params(jax.eval_shape(group.init, jax.random.key(0), x), 10, scale=0.1)
    seen = {}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and len(context.module.path) == 1:
            seen[context.module.path[0]] = (args[0], out)  # (input, output) of a direct child
        return out

    with nn.intercept_methods(record):
        group.apply(params, x)
    trunk, mask = seen["trunk1"][1], seen["mask"][1]
    assert 0 < float(mask.min()) and float(mask.max()) < 1 and float(jnp.std(mask)) > 0.01
    combined = seen["rb_out0"][0]
    np.testing.assert_allclose(combined, trunk * mask + trunk, rtol=1e-6, atol=1e-6)


# --- the windowed non-local block ---------------------------------------------------------------


def test_single_window_equals_a_full_non_local():
    """A window covering the whole input is RNAN's full embedded-Gaussian non-local, z = W·y + x
    with softmax over all keys (checked with every weight random and non-zero)."""
    apply, params, x = _random_block(16, (2, 16, 16, 6), seed=10)
    out = apply({"params": params}, x)
    expected = _nonlocal_numpy(np.asarray(x), params)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-4, atol=1e-5)
    assert np.max(np.abs(expected - np.asarray(x))) > 0.1  # the attention term is not negligible


def test_windows_attend_only_within_themselves():
    """With several windows, each window's output is the full non-local of that window alone."""
    apply, params, x = _random_block(8, (2, 16, 24, 6), seed=20)
    out = apply({"params": params}, x)
    expected = _windowed_nonlocal_numpy(np.asarray(x), params, 8)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 5])
def test_chunked_attention_equals_unchunked(chunk):
    """Attending to `chunk` windows at a time (a sequential map, padded when it does not divide
    the window count) gives the all-at-once result."""
    _, params, x = _random_block(8, (2, 24, 16, 6), seed=30)  # 12 windows
    whole = jax.jit(_non_local(4, 8, chunk=64).apply)({"params": params}, x)
    chunked = jax.jit(_non_local(4, 8, chunk=chunk).apply)({"params": params}, x)
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(whole), rtol=1e-6, atol=1e-6)


def test_subsampled_keys_equal_a_hand_computation_with_max_pooling():
    """subsample=2: keys and values are the 2x2 max-pooled φ and g of each window."""
    apply, params, x = _random_block(8, (2, 16, 8, 6), seed=40, subsample=2)
    out = apply({"params": params}, x)
    expected = _windowed_nonlocal_numpy(np.asarray(x), params, 8, subsample=2)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-4, atol=1e-5)
    full = _windowed_nonlocal_numpy(np.asarray(x), params, 8)
    assert np.max(np.abs(full - expected)) > 1e-3  # pooling does change the result


def test_windows_are_anchored_at_the_top_left_corner():
    """On a crop whose origin is a multiple of the window, the windows lying wholly inside the
    crop give the same values as in the full image."""
    apply, params, x = _random_block(8, (1, 40, 40, 6), seed=50)
    full = np.asarray(apply({"params": params}, x))
    crop = np.asarray(apply({"params": params}, x[:, 16:36, 8:29]))  # 20 x 21 crop
    np.testing.assert_allclose(crop[:, :16, :16], full[:, 16:32, 8:24], rtol=1e-5, atol=1e-6)


# --- the sub-pixel shuffle ------------------------------------------------------------------------


def test_depth_to_space_on_a_known_array():
    """(1, 1, 1, 4) [0, 1, 2, 3] becomes the 2x2 [[0, 1], [2, 3]]; in general
    out[n, b*h + i, b*w + j, c] = x[n, h, w, (b*i + j) * C + c]."""
    x = jnp.arange(4.0).reshape(1, 1, 1, 4)
    np.testing.assert_array_equal(np.asarray(depth_to_space(x))[0, :, :, 0], [[0, 1], [2, 3]])
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 3 * 4)).astype(np.float32)
    out = np.asarray(depth_to_space(jnp.asarray(x), 2))
    assert out.shape == (2, 6, 10, 3)
    expected = np.empty_like(out)
    for i in range(2):
        for j in range(2):
            expected[:, i::2, j::2, :] = x[..., (2 * i + j) * 3 : (2 * i + j + 1) * 3]
    np.testing.assert_array_equal(out, expected)


# --- the accelerator options: scan, remat, attention implementations, bfloat16 -----------------


@pytest.fixture(scope="module")
def two_local_groups():
    """(model kwargs, random params, input) of an unrolled DeblockNet with 2 local groups."""
    kwargs = dict(features=8, num_local_groups=2, nl_inner=4, nl_window=8)
    x = jnp.asarray(np.random.default_rng(1).random((2, 20, 17)), jnp.float32)
    abstract = jax.eval_shape(deblock_from_config(kwargs).init, jax.random.key(0), x)["params"]
    return kwargs, _random_params(abstract, 3, scale=0.05), x


@pytest.mark.slow  # ~20 s on 2 busy cores
def test_scanned_groups_equal_unrolled_groups(two_local_groups):
    """scan_groups=True (with and without remat) computes what the unrolled network computes,
    outputs and gradients, with the unrolled params moved into the stacked layout."""
    from cqrnet_jax.models.deblock import scan_layout

    kwargs, params, x = two_local_groups
    unrolled = deblock_from_config(kwargs)
    stacked = scan_layout(params, kwargs["num_local_groups"])

    def loss(model, p):
        return jnp.mean(model.apply({"params": p}, x) ** 2)

    ref, ref_grad = jax.value_and_grad(functools.partial(loss, unrolled))(params)
    for remat in (False, True):
        scanned = deblock_from_config({**kwargs, "scan_groups": True, "remat": remat})
        got, grad = jax.value_and_grad(functools.partial(loss, scanned))(stacked)
        np.testing.assert_allclose(got, ref, rtol=1e-5)
        g = scan_layout(ref_grad, kwargs["num_local_groups"])
        scale = max(float(np.max(np.abs(b))) for b in jax.tree.leaves(g))
        for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(g)):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5 * scale)


def test_dot_product_attention_equals_the_chunked_einsum(two_local_groups):
    """nl_attention='xla' (jax.nn.dot_product_attention, the path 'cudnn' takes on a GPU)
    gives the chunked einsum's output: one head, no 1/sqrt(d) scale."""
    kwargs, params, x = two_local_groups
    ref = deblock_from_config({**kwargs, "nl_chunk": 1}).apply({"params": params}, x)
    got = deblock_from_config({**kwargs, "nl_attention": "xla"}).apply({"params": params}, x)
    np.testing.assert_allclose(got, ref, atol=1e-5)


@pytest.mark.slow  # bfloat16 on 2 busy cores
def test_bfloat16_network_is_close_to_float32_and_returns_float32(two_local_groups):
    """dtype=bfloat16 computes in bfloat16 and returns float32 output within bfloat16's
    rounding (a few 1e-3 on [0, 1] images) of the float32 network's."""
    kwargs, params, x = two_local_groups
    ref = deblock_from_config(kwargs).apply({"params": params}, x)
    got = deblock_from_config(kwargs, "bfloat16").apply({"params": params}, x)
    assert got.dtype == jnp.float32
    err = float(jnp.max(jnp.abs(got - ref)))
    assert 0 < err < 0.02, err
