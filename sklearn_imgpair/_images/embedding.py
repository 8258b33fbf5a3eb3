"""Cells in, unit vectors out: the one embedding path of every estimator and of the ONNX runtime.

:func:`embed_cells` does what embedding cells takes whatever runs the network:
each distinct image is embedded once, however many cells share it; embeddings
already in a cache are reused and new ones stored; an image that cannot be read
gets a NaN vector (``on_error="warn"``); a cell of several images gets the
normalised mean of their vectors (:func:`pool_embeddings`). The network runs in
the ``embed_images`` callable it is given: a torch network with a DataLoader
(:func:`~sklearn_imgpair._nn.siamese.image_embedder`) or an ONNX graph
(:class:`~sklearn_imgpair.onnx.OnnxImageMatcher`). :func:`embed_rows` is the
``transform`` of both: a vector per row, and one warning for unreadable images.
No torch here.
"""

import numpy as np

from sklearn_imgpair._images.cells import (
    cell_key,
    cell_names,
    distinct_images,
    distinct_paths,
    image_key,
    image_names,
    public_cell,
)
from sklearn_imgpair._images.lookup import reuse_or_embed
from sklearn_imgpair._images.unreadable import leave_out_unreadable, warn_unreadable

__all__ = ["embed_cells", "embed_gallery", "embed_rows", "pool_embeddings"]


def pool_embeddings(embeddings, image_index, offsets):
    """One unit vector per cell: the L2-normalised mean of its images' embeddings.

    Parameters
    ----------
    embeddings : ndarray of shape (n_images, d), dtype=float32
        Unit vectors of the distinct images (NaN rows for unreadable ones).
    image_index, offsets : ndarray
        Each cell's images, as :func:`distinct_images` gives them: cell
        ``i`` has the rows ``image_index[offsets[i]:offsets[i + 1]]``.

    Returns
    -------
    pooled : ndarray of shape (n_cells, d), dtype=float32
        A cell of one image gets its image's vector unchanged (bit for bit);
        a cell of several images the normalised mean of theirs, NaN when one
        of them is NaN.
    """
    counts = np.diff(offsets)
    starts = image_index[offsets[:-1]]
    if (counts == 1).all():
        return embeddings[starts]
    sums = np.zeros((len(counts), embeddings.shape[1]), dtype=embeddings.dtype)
    np.add.at(sums, np.repeat(np.arange(len(counts)), counts), embeddings[image_index])
    # The mean's direction is the sum's.
    norms = np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return np.where((counts == 1)[:, None], embeddings[starts], sums / norms)


def _image_keys(images, names, on_error):
    """The cache key of each image (None for a missing file under ``on_error="warn"``)."""
    keys = []
    for image, name in zip(images, names):
        try:
            keys.append(image_key(image))
        except FileNotFoundError:
            if on_error == "raise":
                raise FileNotFoundError(f"{name}: image file not found: {image!r}.") from None
            keys.append(None)  # reading it fails too, and reports it
    return keys


def embed_cells(cells, embed_images, *, on_error="raise", cache=None):
    """Embed normalised cells, each distinct image once, into one unit vector per distinct cell.

    Parameters
    ----------
    cells : ndarray of normalised cells
        One column of images, shape ``(n_rows,)``, or pairs, shape
        ``(n_rows, 2)`` (see :func:`check_paths` and :func:`check_pairs`);
        errors name a cell ``X[row]`` or ``X[row, column]``.
    embed_images : callable
        ``embed_images(images, names)`` embeds a 1-D object array of distinct
        single images (paths and in-memory images) and returns
        ``(embeddings, errors)``: a float32 array of shape
        ``(len(images), d)`` of unit vectors, and per image ``""`` or the
        message of an image it could not read (``on_error="warn"``; with
        ``"raise"`` it raises, naming the image by ``names``).
    on_error : {"raise", "warn"}, default="raise"
        What a missing file does when its cache key is computed.
    cache : EmbeddingCache, default=None
        Where vectors are looked up before embedding and stored after; NaN
        vectors are never stored. None embeds every image.

    Returns
    -------
    embeddings : ndarray of shape (n_distinct, d), dtype=float32
        A unit vector per distinct cell, NaN where an image of the cell could
        not be read.
    inverse : ndarray of shape (cells.size,)
        Row of ``embeddings`` of each cell of ``cells``, in C order.
    failures : list of str
        The messages of the images that could not be read, in the order of
        their first cell.
    """
    unique, first, inverse = distinct_paths(cells)
    images, image_index, offsets, image_first = distinct_images(unique)
    names = image_names(unique, offsets, image_first, cell_names(first, np.shape(cells)))
    keys = [None] * len(images) if cache is None else _image_keys(images, names, on_error)
    vectors = [None if key is None else cache.get(key) for key in keys]
    missing = [index for index, vector in enumerate(vectors) if vector is None]
    failures = []
    if missing:
        computed, errors = embed_images(images[missing], [names[index] for index in missing])
        for index, vector, error in zip(missing, np.asarray(computed, dtype=np.float32), errors):
            if error:
                vector = np.full_like(vector, np.nan)
                failures.append(error)
            elif keys[index] is not None:
                cache.put(keys[index], vector)
            vectors[index] = vector
    return pool_embeddings(np.stack(vectors), image_index, offsets), inverse, failures


def embed_rows(cells, embed_images, *, on_error="raise", cache=None):
    """Embed one column of images into a vector per row, as ``transform`` does.

    Parameters are those of :func:`embed_cells`, with ``cells`` of shape
    ``(n_rows,)``. Images that could not be read (``on_error="warn"``) give
    their rows NaN vectors and one :class:`UnreadableImageWarning`, issued
    for the caller of the caller (``transform``'s caller).

    Returns
    -------
    embeddings : ndarray of shape (n_rows, d), dtype=float32
        Unit-length rows, in the order of ``cells``.
    """
    embeddings, inverse, failures = embed_cells(cells, embed_images, on_error=on_error,
                                                cache=cache)
    embeddings = embeddings[inverse]
    if failures:
        warn_unreadable(failures, np.flatnonzero(np.isnan(embeddings).any(axis=1)),
                        "get NaN embeddings", stacklevel=4)
    return embeddings


def embed_gallery(cells, embed, gallery_keys=(), gallery_embeddings=None):
    """The readable items of a search's gallery, their vectors and content keys.

    Unreadable cells (``on_error="warn"``) are left out with one warning
    (:func:`leave_out_unreadable`), all of them only where they join a gallery.

    Parameters
    ----------
    cells : ndarray of shape (n_cells,), dtype=object
        Normalised cells (:func:`check_paths`), the rows of ``X``.
    embed : callable
        ``embed(cells)``, a vector per cell, NaN rows for unreadable images
        (the embedder's ``transform``); called on the cells whose content key
        (:func:`cell_key`) is not in ``gallery_keys``, if any.
    gallery_keys : sequence of str or None, default=()
        The content keys of the rows of a gallery that ``cells`` join.
    gallery_embeddings : ndarray of shape (n_gallery, d), default=None
        That gallery's vectors, copied for cells whose key is among its keys.

    Returns
    -------
    items : ndarray of shape (n_kept,), dtype=object
        The readable cells as the caller gave them (:func:`public_cell`).
    embeddings : ndarray of shape (n_kept, d), dtype=float32
    keys : list of str or None
        Their content keys.
    """
    keys = [cell_key(cell) for cell in cells]
    embeddings, unreadable = leave_out_unreadable(
        lambda rows: reuse_or_embed(rows, keys, gallery_keys, gallery_embeddings, embed),
        cells, "gallery", stacklevel=4, allow_none=gallery_embeddings is not None)
    kept = ~unreadable
    items = np.empty(int(kept.sum()), dtype=object)
    items[:] = [public_cell(cell) for cell in cells[kept]]
    return (items, np.ascontiguousarray(embeddings[kept]),
            [key for key, keep in zip(keys, kept) if keep])
