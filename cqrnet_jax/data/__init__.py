"""Image data: the protocol's colour conversion and JPEG degradation, file loading, image sets.

Only NumPy and Pillow are imported here (no TensorFlow / JAX), so importing this stays cheap.
"""

from .color import rgb_to_y, rgb_to_ycbcr, ycbcr_to_rgb
from .datasets import (
    DATA_DIR_ENV,
    EVAL_SETS,
    IMAGE_SUFFIXES,
    TRAIN_SETS,
    DataDirError,
    NoDataDirError,
    builtin_photos,
    canonical_eval_name,
    list_eval_images,
    list_images,
    list_train_images,
    load_eval_set,
    resolve_data_dir,
)
from .io import DEFAULT_MAX_PIXELS, ImageLoadError, LoadedImage, load_image, load_y, save_image
from .jpeg import jpeg_decode, jpeg_degrade, jpeg_encode

__all__ = [
    "DATA_DIR_ENV",
    "DEFAULT_MAX_PIXELS",
    "EVAL_SETS",
    "IMAGE_SUFFIXES",
    "TRAIN_SETS",
    "DataDirError",
    "ImageLoadError",
    "LoadedImage",
    "NoDataDirError",
    "builtin_photos",
    "canonical_eval_name",
    "jpeg_decode",
    "jpeg_degrade",
    "jpeg_encode",
    "list_eval_images",
    "list_images",
    "list_train_images",
    "load_eval_set",
    "load_image",
    "load_y",
    "resolve_data_dir",
    "rgb_to_y",
    "rgb_to_ycbcr",
    "save_image",
    "ycbcr_to_rgb",
]
