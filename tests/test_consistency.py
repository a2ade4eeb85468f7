"""The JPEG-consistency projection: what it keeps, what it can never make worse, and that the
photos path applies it on the file's own block grid (EXIF turns, colour, edges)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import skimage.data
from PIL import Image

from cqrnet_jax.data.consistency import luma_table, project, read_jpeg_luma
from cqrnet_jax.data.io import load_image, load_image_bytes, load_luma
from cqrnet_jax.data.jpeg import ijg_luma_table, jpeg_encode
from cqrnet_jax.photo import restore_image

CAMERA = skimage.data.camera()[:203, :301]  # neither side a multiple of 8


def _decoded(y: np.ndarray, quality: int):
    im = Image.open(io.BytesIO(jpeg_encode(y, quality)))
    return np.asarray(im.convert("L")), luma_table(im)


def _mse(a, b) -> float:
    return float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


@pytest.mark.parametrize("quality", [10, 50, 90])
def test_table_read_from_the_file_is_ijgs(quality):
    _, table = _decoded(CAMERA, quality)
    np.testing.assert_array_equal(table, ijg_luma_table(quality).reshape(8, 8))


@pytest.mark.parametrize("quality", [10, 50, 90])
def test_the_decoded_jpeg_and_the_original_are_already_consistent(quality):
    decoded, table = _decoded(CAMERA, quality)
    np.testing.assert_allclose(project(decoded, decoded, table), decoded, atol=1e-9)
    # The original lies in the set up to libjpeg's integer DCT: it barely moves.
    assert _mse(project(CAMERA, decoded, table), CAMERA) < 0.05


@pytest.mark.parametrize("quality", [10, 30, 90])
def test_projection_never_moves_a_restoration_away_from_the_original(quality):
    decoded, table = _decoded(CAMERA, quality)
    rng = np.random.default_rng(quality)
    for scale in (1.0, 4.0, 20.0):  # restorations good and bad
        restored = CAMERA + rng.normal(0, scale, CAMERA.shape)
        before = _mse(restored, CAMERA)
        after = _mse(project(restored, decoded, table), CAMERA)
        assert after <= before + 0.05, (scale, before, after)
    assert _mse(project(decoded + 30.0, decoded, table), CAMERA) < _mse(decoded + 30.0, CAMERA)


def test_edge_blocks_that_are_not_whole_are_left_as_restored():
    decoded, table = _decoded(CAMERA, 20)
    restored = decoded + 50.0
    out = project(restored, decoded, table)
    h8, w8 = 200, 296
    np.testing.assert_array_equal(out[h8:], restored[h8:])
    np.testing.assert_array_equal(out[:, w8:], restored[:, w8:])
    assert np.abs(out[:h8, :w8] - restored[:h8, :w8]).max() > 10


class _Identity:
    """A restorer that returns its input: with the projection, the output must be the JPEG."""

    def restore_float(self, y, progress=None):
        return np.asarray(y, np.float32)


class _Shift(_Identity):
    def restore_float(self, y, progress=None):
        return np.asarray(y, np.float32) + 12.0 / 255.0


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_grey_jpeg_projected_on_its_stored_grid_after_an_exif_turn(tmp_path, orientation):
    path = tmp_path / f"turned{orientation}.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(CAMERA).save(path, quality=30, exif=exif.tobytes())
    loaded = load_image(path)
    assert loaded.jpeg_luma is not None and loaded.jpeg_luma.orientation == orientation
    # A shifted restoration pulled back into the file's intervals: DC steps of 16 at QF 30
    # cannot hold a shift of 12 in every block, and a wrong grid would scramble the picture.
    out = restore_image(_Shift(), loaded).astype(np.float64)
    raw = restore_image(_Shift(), loaded, consistency=False).astype(np.float64)
    upright = loaded.pixels.astype(np.float64)
    assert _mse(out, upright) < 0.5 * _mse(raw, upright)
    np.testing.assert_array_equal(restore_image(_Identity(), loaded), loaded.pixels)


def test_colour_jpeg_reads_the_decoders_own_luma_and_keeps_it():
    rgb = skimage.data.astronaut()[:150, :211]
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=40)
    loaded = load_image_bytes(buf.getvalue(), "astronaut.jpg")
    luma = loaded.jpeg_luma
    assert luma is not None and luma.y.shape == rgb.shape[:2]
    path_luma = load_luma(_write(buf.getvalue()))
    np.testing.assert_array_equal(luma.y, path_luma.pixels)
    out = restore_image(_Identity(), loaded)
    plain = restore_image(_Identity(), loaded, consistency=False)
    assert out.shape == plain.shape == rgb.shape
    assert np.abs(out.astype(int) - plain.astype(int)).max() <= 3  # rounding of Y only


def _write(data: bytes):
    import tempfile

    f = tempfile.NamedTemporaryFile(suffix=".jpg", delete=False)
    f.write(data)
    f.close()
    return f.name


def test_non_jpeg_and_rgb_coded_jpegs_get_no_projection(tmp_path):
    png = tmp_path / "a.png"
    Image.fromarray(CAMERA).save(png)
    assert load_image(png).jpeg_luma is None
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(skimage.data.astronaut()[:64, :64]).convert("CMYK").save(cmyk)
    assert load_image(cmyk).jpeg_luma is None
    with Image.open(cmyk) as im:
        assert read_jpeg_luma(im, cmyk) is None
