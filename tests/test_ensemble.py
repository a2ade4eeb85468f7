"""The x8 self-ensemble (`cqrnet_jax.ensemble.SelfEnsemble`): the identity stays the identity, an
equivariant restorer is unchanged, and for restorers that are not equivariant the result is the
mean over the 8 flips and rotations computed here by hand, also with tiles and canvases of a real
(tiny) de-blocker, whose rotated images have height and width swapped."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from scipy import ndimage

from cqrnet_jax.data.jpeg import jpeg_degrade
from cqrnet_jax.ensemble import SelfEnsemble, grid_padded
from cqrnet_jax.inference import Restorer

# The 8 symmetries of a rectangle, each with its inverse, written out independently of the module.
BY_HAND = [
    (lambda a: a, lambda a: a),
    (lambda a: np.rot90(a, 1), lambda a: np.rot90(a, 3)),
    (lambda a: np.rot90(a, 2), lambda a: np.rot90(a, 2)),
    (lambda a: np.rot90(a, 3), lambda a: np.rot90(a, 1)),
    (np.fliplr, np.fliplr),
    (np.flipud, np.flipud),
    (lambda a: a.T, lambda a: a.T),
    (lambda a: np.rot90(a, 2).T, lambda a: np.rot90(a, 2).T),  # the anti-diagonal mirror
]


def by_hand(restore, y: np.ndarray) -> np.ndarray:
    """The mean of undo(restore(do(y))) over the 8 symmetries, in float64."""
    return np.mean([undo(np.asarray(restore(do(y)), np.float64)) for do, undo in BY_HAND], axis=0)


class FakeRestorer:
    """A Restorer stand-in applying `fn` to float images, whole (one tile per image); records
    the shapes it was given."""

    tile = canvas = 0
    max_batch = 1

    def __init__(self, fn):
        self.fn, self.shapes = fn, []

    def tiles(self, h, w):
        yield (0, h, 0, w), (0, h, 0, w)

    def restore_float(self, y, progress=None):
        self.shapes.append(np.shape(y))
        if progress is not None:
            progress.update(1)
        return self.fn(np.asarray(y, np.float32)).astype(np.float32)

    def restore_float_batch(self, images, progress=None):
        out = [self.restore_float(y) for y in images]
        if progress is not None:
            progress.update(len(images))
        return out


def not_equivariant(y):
    """Depends on the position (brighter towards the bottom right) and smooths along rows only."""
    h, w = y.shape
    ramp = 1 + 0.2 * np.arange(h)[:, None] / h + 0.1 * np.arange(w)[None, :] / w
    return ndimage.uniform_filter1d(y, 3, axis=1) * ramp


class Counter:
    def __init__(self):
        self.n = 0

    def update(self, n=1):
        self.n += n


@pytest.fixture(scope="module")
def photo():
    """A 40 x 56 JPEG (q10) crop of the camera man: not square, so rotations swap the sides."""
    return jpeg_degrade(skimage.data.camera()[100:140, 150:206], 10)


def test_identity_stays_the_identity(photo):
    """The ensemble of the identity returns its input, uint8 and float."""
    ens = SelfEnsemble(FakeRestorer(lambda y: y))
    np.testing.assert_array_equal(ens(photo), photo)
    y = photo / 255.0
    np.testing.assert_allclose(ens.restore_float(y), y, atol=1e-7)
    for out, image in zip(ens.restore_batch([photo, photo.T]), [photo, photo.T]):
        np.testing.assert_array_equal(out, image)


def test_an_equivariant_restorer_is_unchanged(photo):
    """A 3 x 3 mean (reflected at the borders) commutes with every flip and rotation."""
    fake = FakeRestorer(lambda y: ndimage.uniform_filter(y, 3, mode="reflect"))
    y = photo / 255.0
    np.testing.assert_allclose(SelfEnsemble(fake).restore_float(y), fake.fn(y), atol=1e-6)


def test_mean_over_the_8_transforms_computed_by_hand(photo):
    """For a restorer that is not equivariant, every output (float, uint8, batch) is the hand
    computed mean, and the wrapped restorer saw both orientations of the image."""
    fake = FakeRestorer(not_equivariant)
    ens = SelfEnsemble(fake)
    y = photo / 255.0
    expected = by_hand(fake.fn, y.astype(np.float32))
    assert np.abs(expected - fake.fn(y)).max() > 0.01  # the ensemble changes something
    np.testing.assert_allclose(ens.restore_float(y), expected, atol=1e-6)
    assert sorted(set(fake.shapes)) == [(40, 56), (56, 40)] and len(fake.shapes) == 8
    uint8 = np.clip(np.round(expected * 255), 0, 255)
    assert np.abs(ens(photo).astype(int) - uint8).max() <= 1
    batch = ens.restore_float_batch([y, y[:24, :40]])
    np.testing.assert_allclose(batch[0], expected, atol=1e-6)
    small = by_hand(fake.fn, y[:24, :40].astype(np.float32))
    np.testing.assert_allclose(batch[1], small, atol=1e-6)


def test_every_pass_keeps_the_jpeg_block_grid_at_the_origin(photo):
    """An image whose sides are not multiples of 8 is padded to them (mirrored) before the
    transforms, so each pass's JPEG blocks start at its origin, and cropped back after: the
    restorer sees 8-multiples only, the output has the input's size and is the hand-computed
    mean over the padded image."""
    fake = FakeRestorer(not_equivariant)
    y = photo[:37, :51] / 255.0
    out = SelfEnsemble(fake).restore_float(y)
    assert out.shape == (37, 51)
    assert sorted(set(fake.shapes)) == [(40, 56), (56, 40)]
    padded = grid_padded(y)
    np.testing.assert_array_equal(padded[:37, :51], y)
    np.testing.assert_array_equal(padded[37:40, :51], y[36:33:-1])  # mirrored rows
    np.testing.assert_allclose(
        out, by_hand(fake.fn, padded.astype(np.float32))[:37, :51], atol=1e-6
    )
    assert SelfEnsemble(fake).tiles(37, 51).__next__() == ((0, 40, 0, 56), (0, 40, 0, 56))


def test_progress_counts_tiles_of_all_passes_and_whole_images(photo):
    ens = SelfEnsemble(FakeRestorer(not_equivariant))
    tiles, images = Counter(), Counter()
    ens.progress = tiles
    ens(photo)
    assert tiles.n == len(list(ens.tiles(*photo.shape))) == 8
    ens.restore_batch([photo, photo], progress=images)
    assert images.n == pytest.approx(2)


@pytest.fixture(scope="module")
def tiny(tiny_restorer):
    return tiny_restorer.model, tiny_restorer.variables


def test_tiles_of_a_real_model(tiny, photo):
    """A tiny de-blocker (windows of 16) in tiles of 16 with a 16-pixel margin: the ensemble is
    the hand-computed mean over the tiled restorer, which sees 2 x 3 tiles and 3 x 2 rotated."""
    restorer = Restorer(*tiny, tile=16, margin=16)
    ens = SelfEnsemble(restorer)
    y = photo[:32, :48] / 255.0  # input boxes of 32 x 32 and 32 x 48: few programs to compile
    assert len(list(ens.tiles(*y.shape))) == 8 * 6
    expected = by_hand(restorer.restore_float, y)
    np.testing.assert_allclose(ens.restore_float(y), expected, atol=1e-6)


def test_canvases_of_a_real_model(tiny, photo):
    """Canvases of 16: two images of different sizes batched per pass, each the hand-computed
    mean over the canvas restorer (rotated images get rotated canvases)."""
    restorer = Restorer(*tiny, canvas=16, max_batch=2)
    ens = SelfEnsemble(restorer)
    images = [photo, photo[3:30, 5:51]]  # the second padded to 32 x 48 first (`grid_padded`)
    got = ens.restore_batch(images)
    for image, out in zip(images, got):

        def one(y, image=image):
            return restorer.restore_float_batch([y])[0]

        h, w = image.shape
        expected = by_hand(one, grid_padded(image / 255.0))[:h, :w]
        assert out.shape == image.shape
        assert np.abs(out.astype(int) - np.clip(np.round(expected * 255), 0, 255)).max() <= 1
