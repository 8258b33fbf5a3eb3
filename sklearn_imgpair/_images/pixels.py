"""Decoding an image into pixels: PIL and numpy only, no torch.

:func:`read_pixels` is the one preprocessing every path to the network shares:
the estimators (through :func:`~sklearn_imgpair._images.decode.load_image`)
and the torch-free ONNX runtime, so that both see the very same pixels.
"""

import os

import numpy as np
from PIL import Image, ImageOps

__all__ = ["read_pixels"]

_WHITE = (255, 255, 255)
_HIGH_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def _to_rgb(image):
    """Convert a PIL image of any mode to 8-bit RGB.

    Transparent pixels are composited onto white (the usual catalogue
    background); 16-bit, 32-bit and float greyscale images are rescaled into
    0-255 instead of being clipped.
    """
    if image.mode in _HIGH_DEPTH_MODES:
        values = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16"):
            values = values / 257.0
        elif image.mode == "F" and values.max(initial=0.0) <= 1.0:
            values = values * 255.0
        elif values.max(initial=0.0) > 255.0:
            values = values * (255.0 / values.max())
        values = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return Image.fromarray(values, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    ):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _check_pixel_limit(image):
    """Refuse images above PIL's pixel limit; PIL itself only warns up to twice that."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and image.width * image.height > limit:
        raise Image.DecompressionBombError(
            f"{image.width} x {image.height} pixels exceed the limit of {limit} "
            "(PIL.Image.MAX_IMAGE_PIXELS); it may be a decompression bomb. Raise the "
            "limit if the image is trusted.")


def read_pixels(path, image_size):
    """Decode one image file into a square ``uint8`` array.

    The image is turned upright according to its EXIF orientation, converted
    to RGB from any mode (L, RGB, RGBA, P, I;16, CMYK, ...) and resized,
    without cropping, to ``image_size`` x ``image_size`` pixels with bicubic
    interpolation. Large JPEG files are decoded at a reduced scale where the
    format allows it.

    Parameters
    ----------
    path : str or path-like
        Image file to read.
    image_size : int
        Side length of the returned image in pixels.

    Returns
    -------
    pixels : ndarray of shape (image_size, image_size, 3), dtype=uint8

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If ``path`` is not a file or cannot be decoded as an image (corrupt,
        truncated, empty, not an image, or more pixels than
        ``PIL.Image.MAX_IMAGE_PIXELS``, a possible decompression bomb).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Image file not found: {path!r}.")
    if not os.path.isfile(path):
        raise ValueError(f"Image path is not a file: {path!r}.")
    if os.path.getsize(path) == 0:
        raise ValueError(f"Cannot read image {path!r}: the file is empty (0 bytes).")
    try:
        with Image.open(path) as image:
            _check_pixel_limit(image)
            if image.format == "JPEG":
                image.draft("RGB", (image_size, image_size))
            image = ImageOps.exif_transpose(image)
            image = _to_rgb(image).resize(
                (image_size, image_size), Image.Resampling.BICUBIC
            )
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"Cannot read image {path!r}: {exc}") from exc
    except Exception as exc:  # a malformed file can break a decoder in other ways
        raise ValueError(f"Cannot read image {path!r} ({type(exc).__name__}: {exc})") from exc
    return np.array(image, dtype=np.uint8)
