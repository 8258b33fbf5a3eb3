"""Decoding an image into pixels: PIL and numpy only, no torch.

:func:`read_pixels` is the one preprocessing every path to the network shares:
the estimators (through :func:`~sklearn_imgpair._images.decode.load_image`)
and the torch-free ONNX runtime, so that both see the very same pixels,
whether an image comes as a file, as the bytes of a file, as a PIL image or
as a ``uint8`` array.
"""

import io
import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ENCODED_TYPES", "array_problem", "describe_image", "read_pixels"]

#: The types of a cell that holds the bytes of an encoded image file.
ENCODED_TYPES = (bytes, bytearray, memoryview)

_WHITE = (255, 255, 255)
_HIGH_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_ARRAY_SHAPES = "(H, W), (H, W, 3) or (H, W, 4)"
_SHOWN_BYTES = 8


def _article(word):
    return "an" if word[:1] in "aeio" else "a"


def describe_image(source):
    """Say what an image source is, for error messages.

    Parameters
    ----------
    source : str, path-like, bytes, bytearray, memoryview, PIL.Image.Image or ndarray
        A path, the bytes of an image file, a PIL image or an array.

    Returns
    -------
    description : str
        For example ``"'photos/a.jpg'"``, ``"bytes of length 1234 (b'\\xff\\xd8...')"``,
        ``"a PIL image of mode RGB and size 32 x 32"`` or
        ``"a uint8 array of shape (32, 32, 3)"``.
    """
    if isinstance(source, ENCODED_TYPES):
        data = source.tobytes() if isinstance(source, memoryview) else bytes(source)
        start = repr(data[:_SHOWN_BYTES]) + ("..." if len(data) > _SHOWN_BYTES else "")
        return f"bytes of length {len(data)}" + (f" ({start})" if data else "")
    if isinstance(source, Image.Image):
        return f"a PIL image of mode {source.mode} and size {source.width} x {source.height}"
    if isinstance(source, np.ndarray):
        return f"{_article(source.dtype.name)} {source.dtype.name} array of shape {source.shape}"
    return repr(os.fspath(source) if isinstance(source, os.PathLike) else source)


def array_problem(array):
    """Why a numpy array is not an image, or None when it is one.

    An image array is ``uint8`` of shape ``(H, W)`` (grey), ``(H, W, 3)``
    (RGB) or ``(H, W, 4)`` (RGBA), with at least one pixel.

    Returns
    -------
    problem : str or None
        For example ``"an int64 array of shape (4, 4, 3) is not an image;
        expected dtype uint8"``.
    """
    what = describe_image(array)
    if array.dtype != np.uint8:
        return (f"{what} is not an image; expected dtype uint8 (convert 0-255 values with "
                ".astype(np.uint8))")
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        return f"{what} is not an image; expected {_ARRAY_SHAPES}"
    if array.size == 0:
        return f"{what} is not an image; it has no pixels"
    return None


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


def _square(image, image_size):
    """Upright (EXIF orientation), RGB and resized (None: not): the pixels of a PIL image."""
    image = _to_rgb(ImageOps.exif_transpose(image))  # a new image: the caller's stays as it is
    if image_size is not None:
        image = image.resize((image_size, image_size), Image.Resampling.BICUBIC)
    return np.array(image, dtype=np.uint8)


def _decode(open_image, image_size, what, *, in_memory=False):
    """Open an encoded image with ``open_image()`` and square it; errors become ValueError."""
    try:
        with open_image() as image:
            _check_pixel_limit(image)
            if image.format == "JPEG" and image_size is not None:
                # Decode at the smallest of 1/1, 1/2, 1/4, 1/8 scale that still
                # covers image_size: a 3000 px photo then decodes about 5 times
                # faster. Only an image opened here can be drafted.
                image.draft("RGB", (image_size, image_size))
            return _square(image, image_size)
    except UnidentifiedImageError as exc:
        if in_memory:  # PIL's message would show a BytesIO object
            raise ValueError(f"Cannot read image {what}: PIL cannot identify the image format; "
                             "the bytes of an image file (PNG, JPEG, ...) are expected.") from exc
        raise ValueError(f"Cannot read image {what}: {exc}") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"Cannot read image {what}: {exc}") from exc
    except Exception as exc:  # a malformed file can break a decoder in other ways
        raise ValueError(f"Cannot read image {what} ({type(exc).__name__}: {exc})") from exc


def _read_file(path, image_size):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Image file not found: {path!r}.")
    if not os.path.isfile(path):
        raise ValueError(f"Image path is not a file: {path!r}.")
    if os.path.getsize(path) == 0:
        raise ValueError(f"Cannot read image {path!r}: the file is empty (0 bytes).")
    return _decode(lambda: Image.open(path), image_size, repr(path))


def _read_encoded(data, image_size):
    data = data.tobytes() if isinstance(data, memoryview) else bytes(data)
    if not data:
        raise ValueError("bytes of length 0 are not an image.")
    return _decode(lambda: Image.open(io.BytesIO(data)), image_size,
                   f"from {describe_image(data)}", in_memory=True)


def _read_pil(image, image_size):
    what = describe_image(image)
    try:
        return _square(image, image_size)
    except (OSError, SyntaxError, ValueError) as exc:  # a lazily opened, broken file
        raise ValueError(f"Cannot read {what}: {exc}") from exc
    except Exception as exc:
        raise ValueError(f"Cannot read {what} ({type(exc).__name__}: {exc})") from exc


def _read_array(array, image_size):
    problem = array_problem(array)
    if problem is not None:
        raise ValueError(problem + ".")
    return _square(Image.fromarray(np.ascontiguousarray(array)), image_size)


def read_pixels(source, image_size):
    """Decode one image into a square ``uint8`` array.

    The image is turned upright according to its EXIF orientation (files,
    bytes and PIL images that carry one; arrays are taken as they are),
    converted to RGB from any mode (L, RGB, RGBA, P, I;16, CMYK, ...;
    transparent pixels onto white, 16-bit images rescaled) and resized,
    without cropping, to ``image_size`` x ``image_size`` pixels with bicubic
    interpolation.

    A file and its bytes give identical pixels. A PIL image and, for an RGB
    image, ``np.asarray(PIL.Image.open(path).convert("RGB"))`` give the
    file's pixels too, except for a JPEG at least twice as large as
    ``image_size``: files and bytes of such a JPEG are decoded at a reduced
    scale (PIL's draft mode: 1/2, 1/4 or 1/8, the smallest that still covers
    ``image_size``; two to six times faster), which pixels decoded at full
    scale cannot reproduce, so they differ slightly (embedding cosine above
    0.999 in the tests).

    Parameters
    ----------
    source : str, path-like, bytes, bytearray, memoryview, PIL.Image.Image or ndarray
        An image file; the bytes of an encoded image file (PNG, JPEG, ...);
        a PIL image (never modified); or a ``uint8`` array of shape
        ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` (grey, RGB, RGBA).
    image_size : int or None
        Side length of the returned image in pixels. None keeps the
        image's own size, upright, decoded at full scale (no draft mode):
        the pixels that ``dedup`` compares to find exact copies.

    Returns
    -------
    pixels : ndarray of shape (image_size, image_size, 3), dtype=uint8
        With ``image_size=None``, of shape ``(height, width, 3)``.

    Raises
    ------
    FileNotFoundError
        If ``source`` is a path that does not exist.
    ValueError
        If ``source`` cannot be decoded as an image: a path that is not a
        file; a file or bytes that are empty, corrupt, truncated or not an
        image, or with more pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` (a
        possible decompression bomb); a PIL image whose file cannot be read;
        an array of another dtype or shape. The message says what
        ``source`` was.
    TypeError
        If ``source`` is of none of these types.
    """
    if isinstance(source, ENCODED_TYPES):
        return _read_encoded(source, image_size)
    if isinstance(source, Image.Image):
        return _read_pil(source, image_size)
    if isinstance(source, np.ndarray):
        return _read_array(source, image_size)
    if isinstance(source, (str, os.PathLike)):
        return _read_file(source, image_size)
    raise TypeError("An image must be a path (str or path-like), the bytes of an image file, "
                    f"a PIL image or a uint8 array; got {type(source).__name__}.")
