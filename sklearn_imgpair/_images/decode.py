"""Reading images: decoding one, keeping decoded images, decoding the images of pairs once."""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from sklearn_imgpair._images.cells import (
    InMemoryImage,
    cell_names,
    distinct_images,
    distinct_paths,
    image_names,
)
from sklearn_imgpair._images.pixels import read_pixels
from sklearn_imgpair._images.unreadable import read_or_report
from sklearn_imgpair._io.embedding_cache import MemoryStore

__all__ = ["DecodedImageCache", "decode_pair_images", "load_image"]


def load_image(source, image_size):
    """Decode one image into a square ``uint8`` tensor.

    The pixels are those of ``read_pixels`` (EXIF orientation, RGB from
    any mode, bicubic resize without cropping), channels first.

    Parameters
    ----------
    source : str, path-like, bytes, PIL.Image.Image or ndarray
        One image: a file, the bytes of an image file (``bytes``,
        ``bytearray``, ``memoryview``), a PIL image, a ``uint8`` array of
        shape ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``, or a normalised
        in-memory cell of :func:`check_pairs`.
    image_size : int
        Side length of the returned image in pixels.

    Returns
    -------
    image : torch.Tensor of shape (3, image_size, image_size), dtype=torch.uint8

    Raises
    ------
    FileNotFoundError
        If ``source`` is a path that does not exist.
    ValueError
        If ``source`` is not a file or cannot be decoded as an image; the
        message says what ``source`` was.
    TypeError
        If ``source`` is no image of these kinds.
    """
    if isinstance(source, InMemoryImage):
        source = source.data
    return torch.from_numpy(read_pixels(source, image_size)).permute(2, 0, 1).contiguous()


class DecodedImageCache:
    """Keep decoded, resized images in memory up to a byte budget.

    Training reads every image once per epoch, and most images appear in
    several pairs; decoding each file once saves that work on every later
    read. Images are kept in the order they are first read until the budget
    is spent; later ones are decoded on every read (a
    :class:`MemoryStore` that does not evict: epochs read in the same order
    again, where dropping the least recently used image would drop each one
    just before it is needed).

    Parameters
    ----------
    max_bytes : int
        Memory budget in bytes; 0 disables caching.
    """

    def __init__(self, max_bytes):
        self.store = MemoryStore(max_bytes, evict=False)

    def __len__(self):
        return len(self.store)

    @property
    def n_bytes(self):
        """Bytes of the images kept."""
        return self.store.n_bytes

    def get(self, source, image_size):
        """Return the decoded image ``source``, decoding it only if it is not cached.

        ``source`` is one image: a path or an in-memory image of
        :func:`check_pairs` (cached by content). Safe to call from several
        threads at once.
        """
        image = self.store.get(source)
        if image is None:
            image = load_image(source, image_size)
            self.store.put(source, image)
        return image


def decode_pair_images(pairs, load, on_error="raise", n_threads=None):
    """Decode every distinct image of ``pairs`` once, before any training.

    Each image is read through ``load`` (a :class:`DecodedImageCache`'s
    ``get``, so the work is kept for the first epoch), on several threads:
    PIL releases the GIL while it decodes. Every image of a multi-image cell
    is read; one that cannot be read makes its cell unreadable.

    Parameters
    ----------
    pairs : ndarray of shape (n_pairs, 2), dtype=object
        Normalised cells (see :func:`check_pairs`).
    load : callable
        ``load(image)`` returns the decoded image (a path or in-memory
        image) or raises ``FileNotFoundError`` or ``ValueError``.
    on_error : {"raise", "warn"}, default="raise"
        ``"raise"`` raises the error of the first unreadable image in row
        order, naming its cell; ``"warn"`` collects every failure.
    n_threads : int, default=None
        Decoding threads; None uses one per CPU core, up to 8.

    Returns
    -------
    bad_rows : ndarray of bool of shape (n_pairs,)
        Rows with an unreadable image (all False with ``on_error="raise"``).
    failures : list of str
        One message per unreadable image, naming its first cell.
    """
    cells, first, inverse = distinct_paths(pairs)  # in row order: errors come in row order
    images, image_index, offsets, image_first = distinct_images(cells)
    names = image_names(cells, offsets, image_first, cell_names(first, pairs.shape))

    def read(image, name):
        return read_or_report(load, image, name, on_error)[1]

    n_threads = n_threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        # With on_error="raise", the first unreadable image in row order raises here.
        errors = list(pool.map(read, images, names))
    bad_images = np.array([bool(error) for error in errors], dtype=bool)
    failures = [error for error in errors if error]
    bad_cells = np.logical_or.reduceat(bad_images[image_index], offsets[:-1])
    bad_rows = bad_cells[inverse.reshape(-1, 2)].any(axis=1)
    return bad_rows, failures
