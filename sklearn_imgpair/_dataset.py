"""Image decoding and the torch datasets that feed images and image pairs."""

import os
import threading

import numpy as np
import torch
from PIL import Image, ImageOps

__all__ = ["load_image", "DecodedImageCache", "ImageDataset", "PairDataset"]

#: The error types :func:`load_image` raises for a file that cannot be read.
IMAGE_ERRORS = (FileNotFoundError, ValueError)

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


def load_image(path, image_size):
    """Decode one image file into a square ``uint8`` tensor.

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
    image : torch.Tensor of shape (3, image_size, image_size), dtype=torch.uint8

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
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


class ImageDataset(torch.utils.data.Dataset):
    """Images read from a list of paths, one item per path.

    Parameters
    ----------
    paths : sequence of str
        Image files, in output order.
    image_size : int
        Side length every image is resized to.
    names : sequence of str, default=None
        How errors refer to each item, e.g. ``"X[3, 1]"``; by default
        ``"item <index>"``.
    on_error : {"raise", "warn"}, default="raise"
        What an image that cannot be read does: ``"raise"`` raises an error
        that names the item; ``"warn"`` yields a black placeholder and the
        error message instead, for the consumer to discard (the dataset
        itself does not warn).

    Notes
    -----
    Items are ``(image, error)`` tuples, ``error`` being ``""`` for an image
    that was read, so that skorch's iterators, which expect ``(X, y)``
    batches, can iterate over the dataset.
    """

    def __init__(self, paths, image_size, names=None, on_error="raise"):
        self.paths = paths
        self.image_size = image_size
        self.names = names
        self.on_error = on_error

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        try:
            return load_image(self.paths[index], self.image_size), ""
        except IMAGE_ERRORS as exc:
            name = f"item {index}" if self.names is None else self.names[index]
            if self.on_error == "raise":
                raise type(exc)(f"{name}: {exc}") from exc
            placeholder = torch.zeros((3, self.image_size, self.image_size), dtype=torch.uint8)
            return placeholder, f"{name}: {exc}"


class DecodedImageCache:
    """Keep decoded, resized images in memory up to a byte budget.

    Training reads every image once per epoch, and most images appear in
    several pairs; decoding each file once saves that work on every later
    read. Images are kept in the order they are first read until the budget
    is spent; later ones are decoded on every read.

    Parameters
    ----------
    max_bytes : int
        Memory budget in bytes; 0 disables caching.
    """

    def __init__(self, max_bytes):
        self.max_bytes = max_bytes
        self.n_bytes = 0
        self._images = {}
        self._lock = threading.Lock()

    def __len__(self):
        return len(self._images)

    def __getstate__(self):  # DataLoader workers get a copy; locks do not pickle
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def get(self, path, image_size):
        """Return the image at ``path``, decoding it only if it is not cached.

        Safe to call from several threads at once.
        """
        image = self._images.get(path)
        if image is None:
            image = load_image(path, image_size)
            size = image.numel() * image.element_size()
            with self._lock:
                if path not in self._images and self.n_bytes + size <= self.max_bytes:
                    self._images[path] = image
                    self.n_bytes += size
        return image


class PairDataset(torch.utils.data.Dataset):
    """Pairs of images read from a two-column array of paths.

    Parameters
    ----------
    pairs : ndarray of shape (n_pairs, 2), dtype=object
        Image paths as returned by :func:`~sklearn_imgpair._validation.check_pairs`.
    y : ndarray of shape (n_pairs,) or None
        Float match targets, or None at prediction time.
    image_size : int
        Side length every image is resized to.
    cache : DecodedImageCache, default=None
        Where decoded images are kept between reads; None decodes on every
        read.

    Notes
    -----
    Items are ``({"x1": image, "x2": image}, target)``; the dictionary keys
    are the argument names of :meth:`SiameseNet.forward`. An image that cannot
    be read raises an error that names its row and column in ``pairs``.
    """

    def __init__(self, pairs, y=None, *, image_size, cache=None):
        self.pairs = pairs
        self.y = y
        self.image_size = image_size
        self.cache = cache

    def __len__(self):
        return len(self.pairs)

    def _load(self, row, column):
        path = self.pairs[row, column]
        try:
            if self.cache is None:
                return load_image(path, self.image_size)
            return self.cache.get(path, self.image_size)
        except IMAGE_ERRORS as exc:
            raise type(exc)(f"X[{row}, {column}]: {exc}") from exc

    def __getitem__(self, index):
        images = {"x1": self._load(index, 0), "x2": self._load(index, 1)}
        target = 0.0 if self.y is None else self.y[index]
        return images, torch.tensor(target, dtype=torch.float32)
