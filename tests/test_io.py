"""load_image / load_y: every PIL mode to the expected uint8 pixels, EXIF orientation, bad files."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from helpers import png_header_only
from PIL import Image, ImageFile

from cqrnet_jax.data import ImageLoadError, load_image, load_y, rgb_to_y, save_image
from cqrnet_jax.data.io import load_luma


def _rgb(h=24, w=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _smooth_rgb(h=48, w=64):
    """A gradient (JPEG keeps it within a few levels) that no rotation or flip maps to itself."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([4 * x, 5 * y, 2 * x + 2 * y], axis=-1).clip(0, 255).astype(np.uint8)


def _save(tmp_path, name, im, **kw):
    path = tmp_path / name
    im.save(path, **kw)
    return path


# --- modes ------------------------------------------------------------------------------------


def test_rgb_png_and_tiny_image(tmp_path):
    rgb = _rgb(3, 5)
    img = load_image(_save(tmp_path, "t.png", Image.fromarray(rgb)))
    assert img.pixels.dtype == np.uint8 and img.pixels.shape == (3, 5, 3)
    np.testing.assert_array_equal(img.pixels, rgb)
    assert (img.alpha, img.format, img.mode, img.quantization, img.is_grey) == (
        None, "PNG", "RGB", None, False)  # fmt: skip
    tiny_jpeg = load_image(_save(tmp_path, "t.jpg", Image.fromarray(rgb), quality=95))
    assert tiny_jpeg.pixels.shape == (3, 5, 3)


def test_grey_stays_grey(tmp_path):
    grey = _rgb()[..., 0]
    img = load_image(_save(tmp_path, "g.bmp", Image.fromarray(grey)))
    assert img.is_grey and img.mode == "L" and img.format == "BMP"
    np.testing.assert_array_equal(img.pixels, grey)
    np.testing.assert_array_equal(load_y(img.path), grey)  # grey: used as it is, not re-mapped


def test_bilevel_mode_1(tmp_path):
    bits = _rgb()[..., 0] > 127
    img = load_image(_save(tmp_path, "b.png", Image.fromarray(bits)))
    assert img.mode == "1" and img.is_grey
    np.testing.assert_array_equal(img.pixels, np.where(bits, 255, 0))


def test_la_and_rgba_alpha(tmp_path):
    rgb, a = _rgb(), _rgb(seed=1)[..., 0]
    la = load_image(_save(tmp_path, "la.png", Image.fromarray(np.stack([rgb[..., 0], a], -1))))
    assert la.mode == "LA" and la.pixels.shape == (24, 40)
    np.testing.assert_array_equal(la.pixels, rgb[..., 0])
    np.testing.assert_array_equal(la.alpha, a)
    rgba = load_image(_save(tmp_path, "a.png", Image.fromarray(np.dstack([rgb, a]))))
    assert rgba.mode == "RGBA"
    np.testing.assert_array_equal(rgba.pixels, rgb)
    np.testing.assert_array_equal(rgba.alpha, a)
    np.testing.assert_array_equal(load_y(rgba.path), rgb_to_y(rgb))  # alpha ignored


def test_grey_png_with_trns_value_gives_alpha(tmp_path):
    grey = _rgb()[..., 0]
    img = load_image(_save(tmp_path, "t.png", Image.fromarray(grey), transparency=int(grey[0, 0])))
    np.testing.assert_array_equal(img.pixels, grey)
    np.testing.assert_array_equal(img.alpha, np.where(grey == grey[0, 0], 0, 255))


def _palette_image(colours, idx):
    im = Image.fromarray(idx.astype(np.uint8), mode="L").convert("P")
    im.putpalette(np.asarray(colours, np.uint8).ravel().tolist())
    return im


@pytest.mark.parametrize("suffix", ["png", "gif"])
def test_palette_with_and_without_transparency(tmp_path, suffix):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (10, 20, 30)]
    idx = np.random.default_rng(0).integers(0, 4, (12, 20))
    expected = np.asarray(colours, np.uint8)[idx]
    plain = load_image(_save(tmp_path, f"p.{suffix}", _palette_image(colours, idx)))
    assert plain.mode == "P" and plain.alpha is None
    np.testing.assert_array_equal(plain.pixels, expected)
    trns = load_image(_save(tmp_path, f"t.{suffix}", _palette_image(colours, idx), transparency=3))
    np.testing.assert_array_equal(trns.pixels[idx != 3], expected[idx != 3])
    np.testing.assert_array_equal(trns.alpha, np.where(idx == 3, 0, 255))


def test_palette_of_greys_is_grey(tmp_path):
    idx = np.random.default_rng(0).integers(0, 3, (8, 8))
    img = load_image(
        _save(tmp_path, "g.png", _palette_image([(0,) * 3, (90,) * 3, (200,) * 3], idx))
    )
    assert img.is_grey
    np.testing.assert_array_equal(img.pixels, np.array([0, 90, 200])[idx])


@pytest.mark.parametrize("suffix", ["tif", "jpg"])
def test_cmyk_becomes_rgb(tmp_path, suffix):
    rgb = _smooth_rgb()
    path = _save(tmp_path, f"c.{suffix}", Image.fromarray(rgb).convert("CMYK"), quality=95)
    img = load_image(path)
    assert img.mode == "CMYK" and img.pixels.shape == rgb.shape
    with Image.open(path) as im:
        np.testing.assert_array_equal(img.pixels, np.asarray(im.convert("RGB")))
    tol = 0 if suffix == "tif" else 8
    assert np.abs(img.pixels.astype(int) - rgb).max() <= tol


def test_ycbcr_tiff_becomes_rgb(tmp_path):
    rgb = _smooth_rgb()
    img = load_image(_save(tmp_path, "y.tif", Image.fromarray(rgb).convert("YCbCr")))
    assert img.mode == "YCbCr" and img.pixels.shape == rgb.shape
    assert np.abs(img.pixels.astype(int) - rgb).max() <= 3


def test_16bit_png_and_tiff_round_to_8bit(tmp_path):
    v = np.array([[0, 128, 129, 257, 385, 386], [1000, 32896, 65406, 65407, 65534, 65535]])
    want = np.array([[0, 0, 1, 1, 1, 2], [4, 128, 254, 255, 255, 255]])  # round(v / 257)
    np.testing.assert_array_equal(want, np.round(v / 257))
    png = load_image(_save(tmp_path, "a.png", Image.fromarray(v.astype(np.uint16))))
    assert png.mode == "I;16" and png.is_grey
    np.testing.assert_array_equal(png.pixels, want)
    big_endian = Image.fromarray(v.astype(">u2"))
    tif = load_image(_save(tmp_path, "b.tif", big_endian))
    assert tif.mode == "I;16B"
    np.testing.assert_array_equal(tif.pixels, want)
    pgm = load_image(_save(tmp_path, "c.pgm", Image.fromarray(v.astype(np.uint16))))
    np.testing.assert_array_equal(pgm.pixels, want)  # Pillow opens 16-bit PGM as mode 'I'


def test_int32_and_float_modes(tmp_path):
    small = np.array([[-5, 0, 7, 255]], np.int32)  # fits 8 bits: taken as is (negatives -> 0)
    img = load_image(_save(tmp_path, "i8.tif", Image.fromarray(small)))
    assert img.mode == "I"
    np.testing.assert_array_equal(img.pixels, [[0, 0, 7, 255]])
    wide = np.array([[0, 257, 65535, 70000]], np.int32)  # beyond 8 bits: 16-bit, clipped
    img = load_image(_save(tmp_path, "i16.tif", Image.fromarray(wide)))
    np.testing.assert_array_equal(img.pixels, [[0, 1, 255, 255]])
    unit = np.array([[0.0, 0.5, 1.0, np.nan]], np.float32)  # floats in [0, 1]: scaled by 255
    img = load_image(_save(tmp_path, "f1.tif", Image.fromarray(unit)))
    assert img.mode == "F"
    np.testing.assert_array_equal(img.pixels, [[0, 128, 255, 0]])
    grey = np.array([[0.4, 2.6, 254.4, 255.0]], np.float32)  # beyond 1: taken as 8-bit levels
    img = load_image(_save(tmp_path, "f.tif", Image.fromarray(grey)))
    np.testing.assert_array_equal(img.pixels, [[0, 3, 254, 255]])


def test_progressive_jpeg_and_quantization(tmp_path):
    rgb = _smooth_rgb()
    path = _save(tmp_path, "p.jpg", Image.fromarray(rgb), quality=90, progressive=True)
    img = load_image(path)
    with Image.open(path) as im:
        assert im.info.get("progressive") or im.info.get("progression")
        np.testing.assert_array_equal(img.pixels, np.asarray(im))
        assert img.quantization == {k: list(v) for k, v in im.quantization.items()}
    assert img.format == "JPEG" and set(img.quantization) == {0, 1}
    assert all(len(t) == 64 for t in img.quantization.values())
    assert np.abs(img.pixels.astype(int) - rgb).mean() < 2


@pytest.mark.parametrize("orientation, k", [(6, 1), (8, -1), (3, 2)])
def test_exif_orientation_comes_out_upright(tmp_path, orientation, k):
    upright = _smooth_rgb()
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright, k)))  # as a camera writes it
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _save(tmp_path, "r.jpg", stored, quality=95, exif=exif)
    before = path.read_bytes()
    img = load_image(path)
    assert img.pixels.shape == upright.shape
    assert np.abs(img.pixels.astype(int) - upright).mean() < 2  # wrong turn: error ~ 100
    assert path.read_bytes() == before  # the file is never modified


def test_load_y_of_rgb_is_rgb_to_y(tmp_path):
    rgb = _rgb()
    y = load_y(_save(tmp_path, "c.png", Image.fromarray(rgb)))
    assert y.dtype == np.uint8 and y.shape == (24, 40)
    np.testing.assert_array_equal(y, rgb_to_y(rgb))


def test_save_image_round_trip(tmp_path):
    for a in (_rgb(), _rgb()[..., 1]):
        save_image(tmp_path / "x.png", a)
        np.testing.assert_array_equal(load_image(tmp_path / "x.png").pixels, a)
    with pytest.raises(ValueError):
        save_image(tmp_path / "x.png", np.zeros((4, 4), np.float32))


# --- bad inputs -------------------------------------------------------------------------------


def _expect_error(path, reason_part, **kw):
    with pytest.raises(ImageLoadError) as info:
        load_image(path, **kw)
    err = info.value
    msg = str(err)
    assert "\n" not in msg and msg.startswith(f"{path}: "), msg
    assert reason_part in err.reason, msg
    assert str(pickle.loads(pickle.dumps(err))) == msg
    assert isinstance(err, ValueError)
    return err


def test_bad_files_raise_one_line_errors(tmp_path):
    _expect_error(tmp_path / "missing.png", "no such file")
    _expect_error(tmp_path, "is a directory")
    (tmp_path / "empty.jpg").write_bytes(b"")
    _expect_error(tmp_path / "empty.jpg", "file is empty")
    (tmp_path / "noise.png").write_bytes(np.random.default_rng(0).bytes(5000))
    _expect_error(tmp_path / "noise.png", "not an image file")
    (tmp_path / "text.jpg").write_text("hello, I am not a picture\n")
    _expect_error(tmp_path / "text.jpg", "not an image file")
    for suffix in ("jpg", "png", "bmp"):
        full = _save(tmp_path, f"full.{suffix}", Image.fromarray(_rgb(64, 64)))
        data = full.read_bytes()
        (tmp_path / f"cut.{suffix}").write_bytes(data[: len(data) // 2])
        _expect_error(tmp_path / f"cut.{suffix}", "truncated image data")


def test_too_many_pixels_refused_before_decoding(tmp_path, monkeypatch):
    path = _save(tmp_path, "ok.png", Image.fromarray(_rgb(64, 64)))
    assert load_image(path, max_pixels=64 * 64).pixels.shape == (64, 64, 3)

    def no_decoding(self):
        raise AssertionError("decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    err = _expect_error(path, "image too large", max_pixels=64 * 64 - 1)
    assert err.reason == "image too large: 4096 pixels > limit 4095 (decompression bomb?)"
    # A 70-byte file claiming 12000 x 9000: over our default limit, under PIL's error threshold.
    (tmp_path / "bomb.png").write_bytes(png_header_only(12000, 9000))
    _expect_error(tmp_path / "bomb.png", "image too large: 108000000 pixels > limit 100000000")
    # Far beyond PIL's own limit: PIL's DecompressionBombError, reported the same way.
    (tmp_path / "huge.png").write_bytes(png_header_only(100_000, 100_000))
    err = _expect_error(tmp_path / "huge.png", "image too large", max_pixels=10**12)
    assert err.reason.startswith("image too large: 10000000000 pixels > PIL limit ")


# --- luma for estimation, colour profiles, frames ---------------------------------------------


def _libjpeg_ycc_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """libjpeg's YCbCr -> RGB (jdcolor.c, 16-bit fixed point), exactly."""
    y, cb, cr = (ycc[..., i].astype(np.int64) for i in range(3))
    cb, cr = cb - 128, cr - 128

    def fix(x):
        return int(x * 65536 + 0.5)

    r = y + ((fix(1.402) * cr + 32768) >> 16)
    g = y + ((-fix(0.34414) * cb - fix(0.71414) * cr + 32768) >> 16)
    b = y + ((fix(1.772) * cb + 32768) >> 16)
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255)


@pytest.mark.parametrize("subsampling, progressive", [(2, False), (0, True)])
def test_load_luma_of_a_colour_jpeg_is_the_decoders_y_plane(tmp_path, subsampling, progressive):
    """`load_luma` gives the JPEG's own decoded Y (proved: libjpeg's colour conversion of those
    planes is PIL's RGB decode, bit for bit), full range, pixels as stored (EXIF orientation
    not applied: the block grid stays at the top-left)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    options = dict(quality=25, subsampling=subsampling, progressive=progressive, exif=exif)
    path = _save(tmp_path, "c.jpg", Image.fromarray(_smooth_rgb() + _rgb(48, 64) // 8), **options)
    with Image.open(path) as im:
        im.draft("YCbCr", None)
        ycc = np.asarray(im)
    with Image.open(path) as im:
        np.testing.assert_array_equal(_libjpeg_ycc_to_rgb(ycc), np.asarray(im.convert("RGB")))
    img = load_luma(path)
    assert img.pixels.shape == (48, 64) and img.format == "JPEG" and img.alpha is None
    assert img.quantization == load_image(path).quantization
    np.testing.assert_array_equal(img.pixels, ycc[..., 0])


def test_load_luma_of_other_files_is_load_y(tmp_path):
    rgb = _rgb()
    for name, im in [("c.png", Image.fromarray(rgb)), ("g.jpg", Image.fromarray(rgb[..., 0]))]:
        path = _save(tmp_path, name, im)
        np.testing.assert_array_equal(load_luma(path).pixels, load_y(path))
    cmyk = _save(tmp_path, "k.jpg", Image.fromarray(rgb).convert("CMYK"))
    np.testing.assert_array_equal(load_luma(cmyk).pixels, rgb_to_y(load_image(cmyk).pixels))
    _expect_error(tmp_path / "missing.jpg", "no such file")


def test_icc_profile_kept_when_it_describes_the_pixels(tmp_path):
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img = load_image(_save(tmp_path, "c.png", Image.fromarray(_rgb()), icc_profile=srgb))
    assert img.icc_profile == srgb
    assert load_image(_save(tmp_path, "n.png", Image.fromarray(_rgb()))).icc_profile is None
    # An RGB profile on a grey image does not describe its pixels: dropped.
    grey = _save(tmp_path, "g.png", Image.fromarray(_rgb()[..., 0]), icc_profile=srgb)
    assert load_image(grey).icc_profile is None


def test_multi_frame_files_give_their_first_frame(tmp_path):
    frames = [Image.fromarray(_rgb(seed=s)[..., 0]) for s in (0, 1)]
    path = tmp_path / "two.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with Image.open(path) as im:
        assert im.n_frames == 2
    np.testing.assert_array_equal(load_image(path).pixels, _rgb(seed=0)[..., 0])


def test_truncated_small_jpeg(tmp_path):
    """PIL words this one "Truncated File Read" (capital T): still reported as truncated."""
    full = _save(tmp_path, "full.jpg", Image.fromarray(_smooth_rgb()), quality=20)
    (tmp_path / "cut.jpg").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    _expect_error(tmp_path / "cut.jpg", "truncated image data")


def test_truncated_files_through_every_reader(tmp_path):
    """Bytes in memory and the estimator's luma reader report a cut file as `load_image` does."""
    from cqrnet_jax.data.io import load_image_bytes

    full = _save(tmp_path, "full.jpg", Image.fromarray(_rgb(64, 64)), quality=90)
    data = full.read_bytes()[: full.stat().st_size // 2]
    (tmp_path / "cut.jpg").write_bytes(data)
    with pytest.raises(ImageLoadError, match="truncated image data"):
        load_image_bytes(data, "upload.jpg")
    with pytest.raises(ImageLoadError, match="truncated image data"):
        load_luma(tmp_path / "cut.jpg")


def test_a_bug_in_our_decoding_keeps_its_traceback(tmp_path, monkeypatch):
    """Only PIL's calls are turned into one-line file errors; our own code's errors propagate."""
    import cqrnet_jax.data.io as io_module

    path = _save(tmp_path, "ok.jpg", Image.fromarray(_rgb(32, 32)))

    def broken(im):
        raise TypeError("a bug in our code")

    monkeypatch.setattr(io_module, "_decoded_pixels", broken)
    with pytest.raises(TypeError, match="a bug in our code"):
        load_image(path)
    with pytest.raises(TypeError, match="a bug in our code"):
        io_module.load_image_bytes(path.read_bytes(), "ok.jpg")


def test_a_mode_pil_cannot_convert_is_a_file_error(tmp_path, monkeypatch):
    """A pixel mode with no way to RGB is the file's problem: one line, not a traceback."""
    import cqrnet_jax.data.io as io_module

    path = _save(tmp_path, "odd.png", Image.fromarray(_rgb(8, 8)))
    monkeypatch.setattr(io_module, "_RGB_MODES", ())  # as if PIL had a mode we do not know

    def cannot(self, *args, **kw):
        raise ValueError("conversion not supported")

    monkeypatch.setattr(Image.Image, "convert", cannot)
    _expect_error(path, "unsupported image mode 'RGB'")
