"""Metrics equal references: numpy float64 PSNR, skimage SSIM, a loop-based float64 PSNR-B."""

import io
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
from PIL import Image
from skimage.metrics import structural_similarity

from cqrnet_jax import metrics


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf))


def _gray(rgb: np.ndarray) -> np.ndarray:
    return np.round(rgb @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)


def _photo(height: int, width: int) -> np.ndarray:
    """A real photo of any size: the camera picture, reflected to cover (height, width)."""
    cam = skimage.data.camera()
    pad = ((0, max(0, height - cam.shape[0])), (0, max(0, width - cam.shape[1])))
    return np.pad(cam, pad, mode="reflect")[:height, :width]


def _psnr_ref(a, b) -> float:
    err = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return math.inf if err == 0 else 10 * math.log10(255.0**2 / err)


def _ssim_ref(a, b) -> float:
    return structural_similarity(
        np.asarray(a, np.float64),
        np.asarray(b, np.float64),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
    )


def _bef_ref(img) -> float:
    """BEF from the definition, one adjacent row/column pair at a time, in float64."""
    x = np.asarray(img, np.float64)
    h, w = x.shape
    d_b = d_bc = 0.0
    for j in range(w - 1):  # horizontal neighbours: columns j, j+1
        d = float(np.sum((x[:, j] - x[:, j + 1]) ** 2))
        if j % 8 == 7:
            d_b += d
        else:
            d_bc += d
    for i in range(h - 1):  # vertical neighbours: rows i, i+1
        d = float(np.sum((x[i, :] - x[i + 1, :]) ** 2))
        if i % 8 == 7:
            d_b += d
        else:
            d_bc += d
    n_hb, n_vb = h * (w / 8 - 1), w * (h / 8 - 1)  # true-division counts, as FBCNN
    n_hbc, n_vbc = h * (w - 1) - n_hb, w * (h - 1) - n_vb
    b, bc = d_b / (n_hb + n_vb), d_bc / (n_hbc + n_vbc)
    return 0.0 if b <= bc else math.log2(8) / math.log2(min(h, w)) * (b - bc)


def _psnr_b_ref(restored, target) -> float:
    err = np.mean((np.asarray(restored, np.float64) - np.asarray(target, np.float64)) ** 2)
    total = err + _bef_ref(restored)
    return math.inf if total == 0 else 10 * math.log10(255.0**2 / total)


@pytest.fixture(scope="module")
def pairs():
    """(clean, JPEG q10) uint8 pairs: photos and noise, square or not, multiples of 8 or not."""
    rng = np.random.default_rng(0)
    clean = [
        skimage.data.camera(),
        _gray(skimage.data.coffee()),  # 400x600
        _photo(610, 488),
        _photo(37, 45),
        rng.integers(0, 256, (45, 37), dtype=np.uint8),
    ]
    return [(c, _jpeg(c, 10)) for c in clean]


def test_psnr_matches_numpy(pairs):
    for clean, jpeg in pairs:
        got = float(metrics.psnr(jpeg.astype(np.float32), clean.astype(np.float32)))
        assert got == pytest.approx(_psnr_ref(jpeg, clean), abs=1e-4)
    assert float(metrics.psnr(np.full((9, 9), 3.0), np.full((9, 9), 3.0))) == math.inf
    # A constant error of 1 level: 10 log10(255²) = 48.1308 dB.
    assert float(metrics.psnr(np.zeros((8, 8)), np.ones((8, 8)))) == pytest.approx(48.1308036, 1e-6)


def test_ssim_matches_skimage(pairs):
    for clean, jpeg in pairs:
        got = float(metrics.ssim(jpeg, clean))
        assert got == pytest.approx(_ssim_ref(jpeg, clean), abs=1e-5), clean.shape
    flat = np.full((20, 30), 117.0)
    assert float(metrics.ssim(flat, flat)) == pytest.approx(1.0, abs=1e-6)


def test_psnr_b_matches_loop_reference(pairs):
    for clean, jpeg in pairs:
        assert _bef_ref(jpeg) > 0  # JPEG q10 blocks: the BEF path is exercised, not clamped
        got = float(metrics.psnr_b(jpeg, clean))
        assert got == pytest.approx(_psnr_b_ref(jpeg, clean), abs=1e-4), clean.shape


@pytest.mark.parametrize("shape", [(512, 512), (768, 512)])
def test_psnr_b_float32_precision_on_large_float64_inputs(shape):
    # The host evaluator may hand over float64 numpy arrays with x64 off: JAX computes in float32.
    clean = _photo(*shape)
    jpeg = _jpeg(clean, 20)
    got = metrics.psnr_b(jpeg.astype(np.float64), clean.astype(np.float64))
    assert float(got) == pytest.approx(_psnr_b_ref(jpeg, clean), abs=1e-4)


def test_bef_two_flat_block_columns_by_hand():
    # 16x16: columns 0-7 are 0, columns 8-15 are 10. Only the boundary pair (7, 8) differs:
    # D_B = 16 rows * 10² = 1600, D_Bc = 0. N_HB = 16*(16//8 - 1) = 16, N_VB = 16, N_B = 32;
    # η = log2 8 / log2 16 = 3/4, so BEF = 0.75 * 1600/32 = 37.5.
    img = np.zeros((16, 16), np.float32)
    img[:, 8:] = 10.0
    assert float(metrics.blocking_effect_factor(img)) == pytest.approx(37.5, rel=1e-6)
    # Against itself MSE = 0: PSNR is inf but PSNR-B = 10 log10(255² / 37.5) = 32.3905 dB.
    assert float(metrics.psnr_b(img, img)) == pytest.approx(10 * math.log10(65025 / 37.5), 1e-6)
    # Against a flat 5: MSE = 25, PSNR-B = 10 log10(255² / 62.5) = 30.1720 dB.
    target = np.full_like(img, 5.0)
    assert float(metrics.psnr_b(img, target)) == pytest.approx(10 * math.log10(65025 / 62.5), 1e-6)
    # BEF is of the restored image only: a flat restored image has none.
    assert float(metrics.psnr_b(target, img)) == pytest.approx(float(metrics.psnr(target, img)))


def test_bef_counts_use_true_division_by_hand():
    # 16x20: columns 16-19 are 10. The boundary pair (15, 16) exists (15 + 1 < 20), D_B = 1600.
    # FBCNN's counts: N_HB = 16*(20/8 - 1) = 24 (not 32 true pairs, nor KAIR's 16*(20//8 - 1) = 16),
    # N_VB = 20*(16/8 - 1) = 20, N_B = 44. η = 3 / log2 16 = 0.75, BEF = 0.75 * 1600/44 = 27.27...
    # (exact counts would give 23.08, KAIR's floor division 33.33).
    img = np.zeros((16, 20), np.float32)
    img[:, 16:] = 10.0
    assert float(metrics.blocking_effect_factor(img)) == pytest.approx(0.75 * 1600 / 44, rel=1e-6)


def test_no_blocking_gives_psnr_b_equal_psnr():
    # A diagonal ramp: every neighbour step is 3, on a block boundary or not, so D_B/N_B =
    # D_Bc/N_Bc = 9 (24x32 is a multiple of 8: the counts are exact) and BEF = 0.
    i, j = np.mgrid[0:24, 0:32]
    ramp = (3.0 * (i + j)).astype(np.float32)
    target = ramp + np.float32(1.0)
    assert float(metrics.blocking_effect_factor(ramp)) == 0.0
    assert float(metrics.psnr_b(ramp, target)) == pytest.approx(float(metrics.psnr(ramp, target)))
    assert float(metrics.psnr_b(ramp, ramp)) == math.inf
    # Edges inside blocks only: D_B/N_B < D_Bc/N_Bc, the clamp gives BEF = 0.
    stripes = np.where(j % 8 == 3, 10.0, 0.0).astype(np.float32)
    assert _bef_ref(stripes) == 0.0
    assert float(metrics.blocking_effect_factor(stripes)) == 0.0


def test_batched_and_jitted():
    rng = np.random.default_rng(1)
    clean = np.stack([_photo(37, 45), rng.integers(0, 256, (37, 45), dtype=np.uint8)])
    jpeg = np.stack([_jpeg(c, 10) for c in clean])
    got = jax.jit(metrics.psnr_b)(jnp.asarray(jpeg, jnp.float32), jnp.asarray(clean, jnp.float32))
    assert got.shape == (2,)
    each = list(zip(jpeg, clean, strict=True))
    np.testing.assert_allclose(got, [_psnr_b_ref(r, t) for r, t in each], atol=1e-4)
    np.testing.assert_allclose(
        metrics.psnr(jpeg, clean), [_psnr_ref(r, t) for r, t in each], atol=1e-4
    )
    np.testing.assert_allclose(
        metrics.ssim(jpeg, clean), [_ssim_ref(r, t) for r, t in each], atol=1e-5
    )


def test_image_metrics_returns_python_floats(pairs):
    clean, jpeg = pairs[3]
    out = metrics.image_metrics(jpeg, clean)
    assert set(out) == {"psnr", "ssim", "psnr_b"}
    assert all(type(v) is float for v in out.values())
    assert out["psnr"] == pytest.approx(_psnr_ref(jpeg, clean), abs=1e-4)
    assert out["ssim"] == pytest.approx(_ssim_ref(jpeg, clean), abs=1e-5)
    assert out["psnr_b"] == pytest.approx(_psnr_b_ref(jpeg, clean), abs=1e-4)
    with pytest.raises(ValueError):
        metrics.image_metrics(jpeg, clean[:-1])
