"""Full-image inference of the de-blocking network at any size, with bounded memory.

Three modes. Whole image (the default): one jitted program per distinct image size. Tiles (`tile`):
large images go through in tiles with an overlapping margin of context. The non-local windows are
anchored at the image's top-left corner and every tile's origin is a multiple of the window, so a
tile sees exactly the windows the whole image would; the margin absorbs the convolutions' border
effects (tests/test_inference.py bounds the difference to one grey level). Canvases (`canvas`): each
image is padded bottom/right to a canvas whose sides are multiples of `canvas`, images of one canvas
go through in batches and are cropped back: one compile per canvas instead of one per image size,
for evaluating many images (sizes that many images share may keep programs of their own). With
several devices (`devices.py`: on a CPU, one per core), images, tiles or batches run on them at
once. Every call gives the network each image's real extent (`valid`): the
non-local blocks attend to the same real pixels in all three modes, never to padding. Only the
convolutions near a canvas's bottom/right edges see its padding, which barely moves mean scores
(docs/method.md, "Inference on any size").
"""

from __future__ import annotations

import collections
import copy
import itertools
import math
import os
from collections.abc import Sequence

import jax
import numpy as np

from cqrnet_jax import pretrained
from cqrnet_jax.data.color import round_to_uint8
from cqrnet_jax.devices import compiler_options
from cqrnet_jax.errors import InputError, MissingFileError
from cqrnet_jax.models.build import size_alignment

# Bottom/right padding of an image to its canvas (numpy.pad mode: mirrored, edge pixel repeated).
# Of reflect / symmetric / edge / constant, the one whose scores come closest to whole images'
# (experiments/results/canvas_pad_modes.json; docs/method.md).
CANVAS_PAD = "symmetric"


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def to_uint8(y: np.ndarray) -> np.ndarray:
    """A restored float image on the [0, 1] scale as the uint8 image it stands for."""
    return round_to_uint8(np.asarray(y) * 255.0)


def balanced_batches(items: Sequence, max_batch: int) -> list[list]:
    """`items` split into the fewest batches of at most `max_batch`, all of one size but the last
    (shorter by less than the number of batches), so padding the last costs little."""
    if not items:
        return []
    size = math.ceil(len(items) / math.ceil(len(items) / max_batch))
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


class Restorer:
    """Callable: JPEG-decoded Y uint8 (H, W) -> restored Y uint8 (H, W); `restore_batch` for many.

    `canvas` (a step, rounded up to whole non-local windows) and `tile` exclude each other.
    `max_batch` bounds the images per program in canvas mode, and so the memory; `exact_group`
    gives sizes shared by that many images programs of their own (`canvas_groups`). `devices`
    (default: JAX's first) are used in turn, one program in flight on each (`_run`).

    A quality-conditioned model (`quality_input`: the U-Net that is told each image's JPEG
    quality) restores through `for_quality(q)`, a view that shares this one's compiled programs
    and devices: the quality is an input of the program, not part of it.
    """

    def __init__(
        self,
        model,
        variables,
        *,
        tile: int = 0,
        margin: int = 48,
        canvas: int = 0,
        max_batch: int = 8,
        pad_mode: str = CANVAS_PAD,
        exact_group: int = 0,
        devices: Sequence | None = None,
    ):
        if tile and canvas:
            raise ValueError("tile and canvas exclude each other (tiles split, canvases batch)")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.model, self.variables = model, variables
        self.channels = getattr(model, "channels", 1)  # 1: Y (H, W) images | 3: RGB (H, W, 3)
        align = size_alignment(model)
        self.step = align  # tiles, margins and canvases are rounded up to multiples of this
        self.tile = _round_up(tile, align) if tile else 0
        self.margin = _round_up(margin, align)
        self.canvas = _round_up(canvas, align) if canvas else 0
        self.max_batch, self.pad_mode = max_batch, pad_mode
        self.exact_group = exact_group
        self.devices = list(devices) if devices else [jax.devices()[0]]
        self.progress = None  # tqdm-like, `update(n)` per n tiles or images when a call gives none
        self.meta: dict = {}  # the model's metadata (`load_restorer` fills it)
        self.traces = 0  # programs traced (each compiled once): one per distinct input shape
        self.quality_input = bool(getattr(model, "quality_input", False))
        self.quality: float | None = None  # what `for_quality` tells a conditioned model
        options = compiler_options("inference", self.devices)  # on a CPU: faster compiles
        self._apply = jax.jit(self._forward, compiler_options=options)

    @property
    def variables(self):
        return self._variables

    @variables.setter
    def variables(self, value):
        # On each device once, not re-uploaded with every call
        self._variables = value
        self._on_device = {}

    def _variables_on(self, device):
        if device not in self._on_device:
            self._on_device[device] = jax.device_put(self._variables, device)
        return self._on_device[device]

    @property
    def devices(self):
        return self._devices

    @devices.setter
    def devices(self, value):
        self._devices = list(value)
        self._on_device = {}
        self._turn = itertools.count()  # jobs go to the devices in turn, across calls and threads

    def for_quality(self, quality: float):
        """This restorer told that its images are JPEGs of `quality` (1-100), for a
        quality-conditioned model; itself for any other (it needs no quality). The view shares
        the compiled programs, the devices and `progress` at the time of the call."""
        if not self.quality_input:
            return self
        quality = float(quality)
        if not 1.0 <= quality <= 100.0:
            raise ValueError(f"a JPEG quality is in [1, 100], got {quality}")
        view = copy.copy(self)  # the same dicts: variables on devices, device turns
        view.quality = quality
        return view

    def _quality_of(self, n: int):
        if not self.quality_input:
            return None
        if self.quality is None:
            raise ValueError(
                "this model is told each image's JPEG quality: restore through "
                "restorer.for_quality(q)"
            )
        return np.full((n,), self.quality, np.float32)

    def _run(self, jobs):
        """Runs `jobs`, an iterable of (x (N, H, W) float32, valid (N, 2) int32, done), on the
        devices in turn, each dispatched while earlier ones run; `done(result)` receives each
        job's numpy output, in job order. Calls from several threads share the devices (deblock
        restores one file per device at a time). With several devices (the CPU split into one
        device per core, `devices.split_host_cores`), as many programs run at once, which is
        faster than one program on all the cores (benchmarks/bench.py,
        experiments/results/bench_cpu_unet.json)."""
        pending: list = []
        for x, valid, done in jobs:
            device = self.devices[next(self._turn) % len(self.devices)]
            x, valid, q = jax.device_put((x, valid, self._quality_of(len(x))), device)
            pending.append((self._apply(self._variables_on(device), x, valid, q), done))
            if len(pending) > len(self.devices):  # the oldest has had its turn: collect it
                result, finish = pending.pop(0)
                finish(np.asarray(result))
        for result, finish in pending:
            finish(np.asarray(result))

    def _forward(self, variables, x, valid, quality=None):
        self.traces += 1  # Python runs here only while tracing
        if quality is None:
            return self.model.apply(variables, x, valid)
        return self.model.apply(variables, x, valid, quality=quality)

    def canvas_shape(self, h: int, w: int) -> tuple[int, int]:
        """The canvas of an (h, w) image: each side rounded up to a multiple of `canvas`."""
        return _round_up(h, self.canvas), _round_up(w, self.canvas)

    def tiles(self, h: int, w: int):
        """(output box, input box) pairs covering an (h, w) image: boxes are (y0, y1, x0, x1)."""
        t, m = self.tile, self.margin
        if not t or (h <= t and w <= t):
            yield (0, h, 0, w), (0, h, 0, w)
            return
        for y0 in range(0, h, t):
            for x0 in range(0, w, t):
                out = (y0, min(h, y0 + t), x0, min(w, x0 + t))
                yield out, (max(0, y0 - m), min(h, y0 + t + m), max(0, x0 - m), min(w, x0 + t + m))

    def restore_float(self, y, progress=None) -> np.ndarray:
        """Float (H, W) image in [0, 1] -> restored float (H, W), unclipped; a colour model's
        (H, W, 3) RGB likewise, as whole images or tiles (not canvases)."""
        progress = self.progress if progress is None else progress
        y = np.asarray(y, np.float32)
        if self.canvas:
            return self._restore_canvases([y], progress)[0]
        return self._restore_tiles(y, progress)

    def _restore_tiles(self, y: np.ndarray, progress) -> np.ndarray:
        out = np.empty_like(y)
        self._run(self._tile_jobs(y, out, progress))
        return out

    def _tile_jobs(self, y: np.ndarray, out: np.ndarray, progress, on_image=None):
        """Jobs (`_run`) restoring `y` tile by tile into `out`; `on_image()` after the last."""
        boxes = list(self.tiles(*y.shape[:2]))  # (H, W), or (H, W, 3) for a colour model
        left = [len(boxes)]
        for (a0, a1, b0, b1), (c0, c1, d0, d1) in boxes:

            def done(res, a0=a0, a1=a1, b0=b0, b1=b1, c0=c0, d0=d0):
                out[a0:a1, b0:b1] = res[0, a0 - c0 : a1 - c0, b0 - d0 : b1 - d0]
                if progress is not None:
                    progress.update(1)
                left[0] -= 1
                if not left[0] and on_image is not None:
                    on_image()

            valid = np.array([[c1 - c0, d1 - d0]], np.int32)  # a tile is real to its edges
            yield np.ascontiguousarray(y[None, c0:c1, d0:d1]), valid, done

    def restore_float_batch(self, images: Sequence, progress=None) -> list[np.ndarray]:
        """`restore_float` of each image; in canvas mode, images of a canvas go through together.
        `progress` counts images here, not tiles."""
        progress = self.progress if progress is None else progress
        images = [np.asarray(y, np.float32) for y in images]
        if self.canvas:
            return self._restore_canvases(images, progress)
        out = [np.empty_like(y) for y in images]

        def jobs():  # the tiles of every image, in turn: devices stay busy across images
            for y, o in zip(images, out):
                yield from self._tile_jobs(y, o, None, on_image)

        def on_image():
            if progress is not None:
                progress.update(1)

        self._run(jobs())
        return out

    def canvas_groups(self, shapes: Sequence[tuple[int, int]]) -> dict[tuple[int, int], list[int]]:
        """{program input shape: indices of the images it restores} for images of `shapes` in
        canvas mode: each image's canvas, except that a size shared by at least `exact_group`
        images (0: never) gets a program of its own, of exactly that size, as whole images do:
        no padding to restore when a set has few sizes (BSDS500 test: two), fewer pixels than
        on canvases, at the cost of one more compile."""
        sizes = collections.Counter(shapes)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, hw in enumerate(shapes):
            exact = self.exact_group and sizes[hw] >= self.exact_group
            groups.setdefault(hw if exact else self.canvas_shape(*hw), []).append(i)
        return groups

    def _restore_canvases(self, images: list[np.ndarray], progress) -> list[np.ndarray]:
        groups = self.canvas_groups([y.shape for y in images])
        out: list[np.ndarray] = [None] * len(images)

        def jobs():
            for (ch, cw), indices in groups.items():
                batches = balanced_batches(indices, self.max_batch)
                size = len(batches[0])  # one batch shape, hence one program, per canvas
                for batch in batches:
                    x = np.zeros((size, ch, cw), np.float32)  # filler rows of a short last batch
                    valid = np.full((size, 2), (ch, cw), np.int32)
                    for row, i in enumerate(batch):
                        h, w = images[i].shape
                        x[row] = np.pad(images[i], ((0, ch - h), (0, cw - w)), mode=self.pad_mode)
                        valid[row] = h, w

                    def done(result, batch=batch):  # crops the batch back to its images' sizes
                        for row, i in enumerate(batch):
                            out[i] = result[row, : images[i].shape[0], : images[i].shape[1]].copy()
                        if progress is not None:
                            progress.update(len(batch))

                    yield x, valid, done

        self._run(jobs())
        return out

    def restore_batch(self, images: Sequence[np.ndarray], progress=None) -> list[np.ndarray]:
        """Y uint8 images (any sizes) -> restored Y uint8 images, in order."""
        floats = [np.asarray(y, np.float32) / 255.0 for y in images]
        return [to_uint8(r) for r in self.restore_float_batch(floats, progress)]

    def __call__(self, y_uint8: np.ndarray) -> np.ndarray:
        return to_uint8(self.restore_float(np.asarray(y_uint8, np.float32) / 255.0))


def load_restorer(
    spec: str = "default",
    *,
    channels: int = 1,
    tile: int = 0,
    canvas: int = 0,
    max_batch: int = 8,
    exact_group: int = 0,
    devices: Sequence | None = None,
) -> tuple[Restorer, dict]:
    """A Restorer for 'default', a training workdir or a params prefix, and the model's meta;
    `channels` 1 asks for a Y model, 3 for a colour one (InputError for the other kind); the
    other keywords as `Restorer`'s."""
    from cqrnet_jax.models.build import load_deblock_model

    prefix = pretrained.resolve_model_prefix(spec, "color" if channels == 3 else "deblock")
    try:
        # float32 and chunked attention whatever the model was trained with (bfloat16 and
        # all-window attention suit a training batch, not a whole photo); params are float32
        model, variables, meta = load_deblock_model(prefix, dtype="float32", attention="chunked")
    except FileNotFoundError:
        where = "the package's shipped model" if spec == "default" else os.fspath(prefix)
        raise MissingFileError(f"no de-blocking model found at {where}") from None
    restorer = Restorer(
        model,
        variables,
        tile=tile,
        canvas=canvas,
        max_batch=max_batch,
        exact_group=exact_group,
        devices=devices,
    )
    if restorer.channels != channels:
        kind = "a colour (RGB) model; give it as --color-model"
        if restorer.channels == 1:
            kind = "a Y (grey) model, not a colour one; give it as --model"
        raise InputError(f"{os.fspath(prefix)}: {kind}")
    restorer.meta = meta  # what it was trained on (e.g. the qualities it restores by default)
    return restorer, meta


def has_color_model() -> bool:
    """Whether the package ships a colour model."""
    return pretrained.resolve_model_prefix("default", "color").with_suffix(".json").is_file()


def load_color_restorer(spec: str = "default", y_model: str = "default", **kw) -> Restorer | None:
    """The colour model colour photos go through (`photo.restore_image`), or None for Y by the
    Y model and Cb/Cr by the guided filter: 'default' is the shipped colour model, which
    carries the shipped Y model (so None when the package has none, or when `y_model`, the
    user's --model, is another one), 'none' is None, anything else a colour model's workdir or
    prefix; keywords as `load_restorer`'s."""
    if spec == "default" and (y_model != "default" or not has_color_model()):
        return None
    if spec == "none":
        return None
    return load_restorer(spec, channels=3, **kw)[0]
