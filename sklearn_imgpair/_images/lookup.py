"""Cells looked up among the items of a gallery by content: each cell's row, reused vectors.

No torch here: the embedding path (:mod:`~sklearn_imgpair._images.embedding`) uses it.
"""

import numpy as np

from sklearn_imgpair._images.cells import (
    InMemoryImage,
    as_cell,
    cell_images,
    cell_sort_key,
    describe_cell,
)

__all__ = ["find_cells", "key_rows", "reuse_or_embed", "rows_of_cells"]


def _item_sort_keys(items, cells):
    """:func:`cell_sort_key` of each of ``items``, with the in-memory images of ``cells`` reused."""
    memo = {id(image.data): image for cell in cells for image in cell_images(cell)
            if isinstance(image, InMemoryImage)}
    return [cell_sort_key(as_cell(item, "gallery_", memo)) for item in items]


def rows_of_cells(cells, items):
    """The rows of ``items`` equal to one of ``cells``; each cell must be among them.

    Parameters
    ----------
    cells : ndarray of shape (n_cells,), dtype=object
        Normalised cells (:func:`as_cell`).
    items : ndarray of shape (n_items,), dtype=object
        Cells as the caller gave them (:func:`public_cell`), e.g. a search's
        ``gallery_``. Paths are equal when their strings are, images in
        memory when their content is (an image of ``cells`` given again as
        the same object is not hashed again).

    Returns
    -------
    rows : ndarray of shape (n_rows,), dtype=int64
        Sorted.

    Raises
    ------
    ValueError
        If a cell is in no row; the message names the first few.
    """
    wanted = {cell_sort_key(cell): cell for cell in cells}
    names = _item_sort_keys(items, cells)
    present = set(names)
    unknown = [describe_cell(cell) for name, cell in wanted.items() if name not in present]
    if unknown:
        raise ValueError(f"{len(unknown)} of the images to remove are not in the gallery: "
                         f"{', '.join(unknown[:5])}{', ...' if len(unknown) > 5 else ''}.")
    return np.array([row for row, name in enumerate(names) if name in wanted], dtype=np.int64)


def find_cells(cells, items):
    """The first row of ``items`` equal to each of ``cells``, -1 where none is.

    Parameters
    ----------
    cells : ndarray of shape (n_cells,), dtype=object
        Normalised cells (:func:`as_cell`).
    items : ndarray of shape (n_items,), dtype=object
        Cells as the caller gave them, equal as in :func:`rows_of_cells`.

    Returns
    -------
    rows : ndarray of shape (n_cells,), dtype=int64
    """
    rows = key_rows(_item_sort_keys(items, cells), [cell_sort_key(cell) for cell in cells])
    return rows.astype(np.int64)


def key_rows(gallery_keys, keys):
    """The first gallery row of each key, -1 where the key is None or not in the gallery.

    Parameters
    ----------
    gallery_keys : sequence of str or None
        The content key of each gallery row (None: unknown).
    keys : sequence of str or None
        The keys looked up.

    Returns
    -------
    rows : ndarray of shape (len(keys),), dtype=intp
    """
    first = {}
    for row, key in enumerate(gallery_keys):
        if key is not None:
            first.setdefault(key, row)
    return np.array([-1 if key is None else first.get(key, -1) for key in keys],
                    dtype=np.intp).reshape(len(keys))


def reuse_or_embed(cells, keys, gallery_keys, gallery_embeddings, embed):
    """One vector per cell: a gallery row's where its key is there, else ``embed``'s.

    Parameters
    ----------
    cells : ndarray of shape (n_cells,), dtype=object
        The new items.
    keys : sequence of str or None
        Their content keys.
    gallery_keys : sequence of str or None
        The keys of the gallery's rows.
    gallery_embeddings : ndarray of shape (n_gallery, d) or None
        The gallery's vectors; None for an empty gallery.
    embed : callable
        ``embed(cells)`` returns a vector per cell (NaN rows for unreadable
        images); called once, on the cells not in the gallery, if any.

    Returns
    -------
    embeddings : ndarray of shape (n_cells, d), dtype=float32
    """
    rows = key_rows(gallery_keys, keys)
    new = rows < 0
    if new.all():
        return np.asarray(embed(cells), dtype=np.float32)
    embeddings = np.empty((len(cells), gallery_embeddings.shape[1]), dtype=np.float32)
    embeddings[~new] = gallery_embeddings[rows[~new]]
    if new.any():
        embeddings[new] = embed(cells[new])
    return embeddings
