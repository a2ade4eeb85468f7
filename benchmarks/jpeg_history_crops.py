"""How often `data.jpeg_history.grid_quality` reads a small image wrong: 128 x 128 crops of
scikit-image's photos (three per photo where they fit), PIL JPEGs at QF 5-95, decoded.

  python benchmarks/jpeg_history_crops.py > experiments/results/jpeg_history_crops.txt
"""

from __future__ import annotations

import io

import numpy as np
import skimage.data
from PIL import Image

from cqrnet_jax.data.jpeg_history import grid_quality

PHOTOS = ("camera astronaut coffee chelsea rocket page moon brick cat immunohistochemistry "
          "hubble_deep_field text coins grass gravel").split()  # fmt: skip
QUALITIES = (5, 10, 20, 30, 50, 70, 90, 95)


def decoded(pixels, quality):
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())))


def main():
    wrong = none = total = 0
    for name in PHOTOS:
        image = getattr(skimage.data, name)()
        if image.dtype != np.uint8:
            continue
        for top, left in ((0, 0), (64, 128), (200, 200)):
            crop = image[top : top + 128, left : left + 128]
            if crop.shape[:2] != (128, 128):
                continue
            reads = [grid_quality(decoded(crop, q)) for q in QUALITIES]
            for q, got in zip(QUALITIES, reads):
                total += 1
                none += got is None
                if got is not None and abs(got - q) > 2:
                    wrong += 1
                    print(f"wrong: {name} crop ({top}, {left}) QF {q} read {got}")
    print(f"{total} crops x qualities: {wrong} read more than 2 from the truth, {none} read none")


if __name__ == "__main__":
    main()
