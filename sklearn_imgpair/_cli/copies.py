"""Exact copies among image files: the same bytes, or the same decoded pixels, without the network.

Two passes, each reading as little as it can. Byte copies: only files of one size are read,
each hashed in blocks (SHA-256). Pixel copies: of the files whose bytes differ, only those whose
header gives the same size as another's (either way round: EXIF may turn one) are decoded, once,
at full scale with the library's own decoding (EXIF orientation, RGB from any mode), and their
pixels hashed. The same picture saved as PNG and as BMP, TIFF or lossless WebP, or re-saved with
other compression or metadata, is then a copy of the first file that has it.
"""

import contextlib
import hashlib
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from sklearn_imgpair._images.pixels import read_pixels

__all__ = ["exact_copies"]

# Bytes read at a time when a file is hashed.
_BLOCK_SIZE = 1 << 20


def _file_digest(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(_BLOCK_SIZE), b""):
            digest.update(block)
    return digest.digest()


def _first_of_each(groups, digest, original, n_threads, bar):
    """Point each index of each group to the first index of the group with its digest.

    ``digest(index)`` is None for a file that cannot be read: a copy of none.
    ``bar`` (a progress bar or None) counts the files digested.
    """
    groups = [group for group in groups if len(group) > 1]
    indices = [index for group in groups for index in group]

    def counted(index):
        value = digest(index)
        if bar is not None:
            bar.update(1)
        return value

    with ThreadPoolExecutor(max_workers=n_threads) as pool:  # hashlib and PIL release the GIL
        digests = dict(zip(indices, pool.map(counted, indices)))
    for group in groups:
        first_with = {}
        for index in group:
            if digests[index] is not None:
                original[index] = first_with.setdefault(digests[index], index)
    return original


def _byte_digest(path):
    try:
        return _file_digest(path)
    except OSError:
        return None


def _size_key(path):
    """Width and height from the file's header, smaller first; None if it is no image."""
    try:
        with Image.open(path) as image:  # reads the header only
            return tuple(sorted(image.size))
    except Exception:  # noqa: BLE001 - any file PIL cannot open is a copy of none
        return None


def _pixel_digest(path):
    try:
        pixels = read_pixels(path, None)
    except (OSError, ValueError):
        return None
    digest = hashlib.sha256(np.asarray(pixels.shape, dtype=np.int64).tobytes())
    digest.update(memoryview(pixels).cast("B"))
    return digest.digest()


def exact_copies(paths, *, pixels=True, n_threads=None, return_same_bytes=False, bar=None):
    """The first exact copy of each file: the same bytes, or the same decoded pixels.

    Files are compared by a SHA-256 hash of their bytes, read only for files
    that share their size with another. With ``pixels=True``, files with other
    bytes are then compared by a hash of their decoded pixels: upright (EXIF
    orientation), in RGB (transparent pixels onto white, as the network sees
    them), at full scale. Only files whose header gives the same width and
    height as another's are decoded, each once. Empty files and files that
    cannot be read or decoded are copies of none (the network's reading
    reports them), and so are items of several images (a search's gallery
    may hold them).

    Parameters
    ----------
    paths : sequence of str
        Image files, each once; a tuple of paths is an item of several images.
    pixels : bool, default=True
        Also look for files with other bytes but the same pixels.
    n_threads : int, default=None
        Threads that read and decode; None uses one per CPU core, up to 8.
    return_same_bytes : bool, default=False
        Also return which copies have the same bytes as their original.
    bar : callable, default=None
        ``bar(n_files, description)`` returns a progress bar (a tqdm context
        manager), updated by one per file: one bar for the files whose bytes
        are hashed, one for those decoded; None shows none.

    Returns
    -------
    original : ndarray of shape (n_paths,), dtype=int
        Index of the first file in ``paths`` with the same bytes or pixels:
        the file's own index when no earlier file has them.
    same_bytes : ndarray of shape (n_paths,), dtype=bool
        True for the files whose bytes an earlier file has (found without
        decoding); the other copies have the same pixels only. Returned only
        with ``return_same_bytes=True``.

    Examples
    --------
    >>> from sklearn_imgpair._cli.copies import exact_copies
    >>> exact_copies(["a.png", "a_copy.png", "b.png"]).tolist()  # doctest: +SKIP
    [0, 0, 2]
    """
    n_threads = n_threads or min(8, os.cpu_count() or 1)
    by_size = defaultdict(list)
    for index, path in enumerate(paths):
        try:
            size = os.path.getsize(path)
        except (OSError, TypeError):  # TypeError: an item of several images
            continue
        if size:
            by_size[size].append(index)
    original = np.arange(len(paths))
    n_files = sum(len(group) for group in by_size.values() if len(group) > 1)
    hashing = contextlib.nullcontext() if bar is None else bar(n_files, "Hashing bytes")
    with hashing as progress:
        original = _first_of_each(by_size.values(), lambda index: _byte_digest(paths[index]),
                                  original, n_threads, progress)
    same_bytes = original != np.arange(len(paths))
    if pixels:
        by_shape = defaultdict(list)
        for index in sorted(index for group in by_size.values() for index in group
                            if not same_bytes[index]):
            by_shape[_size_key(paths[index])].append(index)
        by_shape.pop(None, None)
        n_files = sum(len(group) for group in by_shape.values() if len(group) > 1)
        hashing = contextlib.nullcontext() if bar is None else bar(n_files, "Hashing pixels")
        with hashing as progress:
            first = _first_of_each(by_shape.values(), lambda index: _pixel_digest(paths[index]),
                                   np.arange(len(paths)), n_threads, progress)
        original = first[original]  # a byte copy follows its original
    if return_same_bytes:
        return original, same_bytes
    return original
