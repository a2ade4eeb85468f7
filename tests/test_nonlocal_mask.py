"""The windowed non-local block attends to real pixels only: the reflect-padding to whole windows
and a canvas's padding (`valid`) are masked out of its keys, max-pooled keys pool real pixels only,
a window of pure padding gives finite values, and exact windows without `valid` (training's 48x48
patches) trace no mask at all.
"""

from __future__ import annotations

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from cqrnet_jax.models.build import attention_settings, deblock_from_config
from cqrnet_jax.models.layers import WindowedNonLocal

WINDOW = 8
SHAPE = (2, 13, 19, 6)  # neither side a multiple of the window; odd, so 2x2 cells are partial


def _non_local(inner, window, **kw):
    """A WindowedNonLocal of these settings (chunk=, subsample=, attention=), the rest at the
    config's defaults."""
    given = {"nl_inner": inner, "nl_window": window, **{f"nl_{k}": v for k, v in kw.items()}}
    return WindowedNonLocal(attention_settings(given))


def _random_params(abstract, seed: int, scale: float):
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda a: np.float32(scale) * rng.standard_normal(a.shape, np.float32), abstract
    )


def _block_params(seed: int = 1):
    """Random non-zero params of a WindowedNonLocal of inner width 4 on 6 channels."""
    x = jax.ShapeDtypeStruct((1, WINDOW, WINDOW, 6), jnp.float32)
    abstract = jax.eval_shape(_non_local(4, WINDOW).init, jax.random.key(0), x)["params"]
    return {"params": _random_params(abstract, seed, 0.3)}


def _real_nonlocal_numpy(x, params, subsample: int):
    """Embedded-Gaussian non-local of one window's real pixels x (h, w, C), h, w <= window, in
    float64: keys/values f x f max-pooled over cells anchored at the window's corner, a cell
    taking the max of its real pixels."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
    h, w, c = x.shape

    def dense(name, t):
        return t @ p[name]["kernel"] + p[name]["bias"]

    t = x.reshape(h * w, c).astype(np.float64)
    theta, phi, g = (dense(name, t).reshape(h, w, -1) for name in ("theta", "phi", "g"))
    f = subsample
    cells = [(i, j) for i in range(0, h, f) for j in range(0, w, f)]
    phi = np.stack([phi[i : i + f, j : j + f].max(axis=(0, 1)) for i, j in cells])
    g = np.stack([g[i : i + f, j : j + f].max(axis=(0, 1)) for i, j in cells])
    logits = theta.reshape(h * w, -1) @ phi.T
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    return x + dense("out", weights @ g).reshape(h, w, c)


def _windowed_reference(x, params, subsample: int):
    """The NumPy non-local of each window's real part, for every image of x (N, H, W, C)."""
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    for i in range(0, x.shape[1], WINDOW):
        for j in range(0, x.shape[2], WINDOW):
            for n in range(x.shape[0]):
                crop = x[n, i : i + WINDOW, j : j + WINDOW]
                out[n, i : i + WINDOW, j : j + WINDOW] = _real_nonlocal_numpy(
                    crop, params, subsample
                )
    return out


@pytest.fixture(scope="module")
def image():
    return jnp.asarray(np.random.default_rng(0).standard_normal(SHAPE), jnp.float32)


@pytest.mark.parametrize("subsample", [1, 2])
@pytest.mark.parametrize("attention", ["chunked", "xla"])
def test_padded_keys_get_no_attention(image, subsample, attention):
    """On a size with partial windows, each window attends to its real pixels only (NumPy,
    float64), with keys/values pooled over real pixels; chunk=1 takes the sequential map."""
    params = _block_params()
    block = _non_local(4, WINDOW, chunk=1, subsample=subsample, attention=attention)
    out = jax.jit(block.apply)(params, image)
    expected = _windowed_reference(image, params, subsample)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("subsample", [1, 2])
def test_a_canvas_with_valid_extents_ignores_its_padding_content(image, subsample):
    """Each image on a 24 x 24 canvas with its real extent in `valid`: the real pixels' output
    equals the whole image's, whatever fills the rest of the canvas (two different fillings)."""
    params = _block_params()
    apply = jax.jit(_non_local(4, WINDOW, subsample=subsample).apply)
    n, h, w, _ = SHAPE
    valid = np.array([[h, w], [h - 5, w - 9]], np.int32)  # the second image is smaller still
    whole = [apply(params, image[i : i + 1, : valid[i, 0], : valid[i, 1]]) for i in range(n)]
    rng = np.random.default_rng(7)
    for _ in range(2):
        canvas = 5.0 * rng.standard_normal((n, 24, 24, 6)).astype(np.float32)
        for i in range(n):
            canvas[i, : valid[i, 0], : valid[i, 1]] = image[i, : valid[i, 0], : valid[i, 1]]
        out = np.asarray(apply(params, canvas, valid))
        for i in range(n):
            got = out[i, : valid[i, 0], : valid[i, 1]]
            np.testing.assert_allclose(got, np.asarray(whole[i][0]), rtol=1e-5, atol=1e-5)


def test_windows_of_pure_padding_stay_finite_with_finite_gradients(image):
    """Queries whose every key is masked (a window wholly outside `valid`, an image of extent 0)
    give finite outputs and gradients, with and without pooling, for both attention kinds."""
    params = _block_params()
    valid = jnp.array([[0, 0], [5, 3]], jnp.int32)

    def losses(p, x):
        return jnp.stack(
            [
                jnp.sum(_non_local(4, WINDOW, subsample=f, attention=a).apply(p, x, valid) ** 2)
                for f in (1, 2)
                for a in ("chunked", "xla")
            ]
        )

    values = jax.jit(losses)(params, image)
    gp, gx = jax.jit(jax.grad(lambda p, x: jnp.sum(losses(p, x)), argnums=(0, 1)))(params, image)
    assert np.all(np.isfinite(np.asarray(values)))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves((gp, gx)))


def _primitives(fn, *args) -> set[str]:
    """Names of the primitives in the jaxpr of fn(*args), nested jaxprs included."""
    names = set()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            names.add(eqn.primitive.name)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return names


def test_exact_windows_without_valid_trace_no_mask(image):
    """Training's patches are whole windows and pass no `valid`: the network's program has no
    mask at all (no select, no comparison), so training computes what it did before the mask
    existed. (A `valid` covering everything computes the same values, to float32 rounding: the
    two programs fuse differently.)"""
    model = deblock_from_config(
        dict(features=8, num_local_groups=1, nl_inner=4, nl_window=WINDOW, nl_subsample=2)
    )
    x = jax.ShapeDtypeStruct((2, 16, 24), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.key(0), x)
    assert not _primitives(model.apply, params, x) & {"select_n", "lt", "gt", "le", "ge"}
    full = jnp.array([[16, 24], [16, 24]], jnp.int32)
    assert {"select_n", "lt"} <= _primitives(model.apply, params, x, full)  # a mask shows

    block = _non_local(4, WINDOW, subsample=2)
    exact = image[:, :16, :16]

    def loss(p, valid):
        return jnp.sum(block.apply(p, exact, valid) ** 2)

    p = _block_params()
    (a, ga), (b, gb) = (jax.jit(jax.value_and_grad(loss))(p, v) for v in (None, full))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
    for u, v in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-5, atol=1e-5)
