"""The gallery of a search as it grows and shrinks: content keys, reused rows, removed rows.

A search keeps, beside each gallery item and its vector, the item's content
key (a file's absolute path, size and modification time, or the digest of an
image in memory; see :func:`~sklearn_imgpair._images.cells.cell_key`). Items
added later whose key is already in the gallery take that row's vector
instead of being read and embedded again. Nothing here reads images.
"""

import numpy as np

from sklearn_imgpair._search.faiss_index import FaissIndex
from sklearn_imgpair._search.faiss_settings import import_faiss, resolve_params
from sklearn_imgpair._search.vector_index import BruteForceIndex, check_positions

__all__ = ["build_index", "check_index", "grown", "key_rows", "reuse_or_embed", "shrunk"]


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


def check_index(search, n_samples):
    """Check what the index of a search needs (FAISS and its settings) before any embedding.

    Raises
    ------
    ImportError
        If ``algorithm="faiss"`` and FAISS is not installed.
    ValueError
        If the FAISS settings are invalid for ``n_samples`` vectors.
    """
    if search.algorithm == "faiss":
        import_faiss()
        resolve_params(search.faiss_index, search.faiss_params, n_samples)


def build_index(search, embeddings, embedder, faiss_bytes=None, *, path=None):
    """The index of a search over ``embeddings``: exact, or FAISS as its parameters say.

    Parameters
    ----------
    search : ImageNeighbors
        Whose parameters (``algorithm``, ``faiss_index``, ``faiss_params``,
        ``chunk_size``, ``random_state``) choose the index.
    embeddings : ndarray of shape (n_gallery, d), dtype=float32
        The gallery's unit vectors.
    embedder : ImageEmbedder
        The fitted embedder, on whose device the exact search runs.
    faiss_bytes : ndarray of dtype uint8, default=None
        A saved FAISS index (:meth:`FaissIndex.to_bytes`) to rebuild rather
        than build anew; it must hold ``embeddings``' count and dimension.
    path : str, default=None
        The file ``faiss_bytes`` come from, for messages.

    Returns
    -------
    index : BruteForceIndex or FaissIndex
    """
    if search.algorithm != "faiss":
        device = next(embedder.module_.parameters()).device
        return BruteForceIndex(embeddings, chunk_size=search.chunk_size, device=device)
    if faiss_bytes is None:
        return FaissIndex(embeddings, index=search.faiss_index, params=search.faiss_params,
                          random_state=search.random_state)
    index = FaissIndex.from_bytes(faiss_bytes, index=search.faiss_index,
                                  params=search.faiss_params)
    if (index.n_samples, index.n_features) != embeddings.shape:
        raise ValueError(
            f"{path!r} holds a FAISS index of {index.n_samples} vectors of dimension "
            f"{index.n_features}, not the gallery's {embeddings.shape[0]} of dimension "
            f"{embeddings.shape[1]}.")
    return index


def grown(index, gallery, embeddings, keys, items, vectors, new_keys):
    """Add items to a gallery: ``vectors`` go into ``index``, the rest is returned.

    Parameters
    ----------
    index : BruteForceIndex or FaissIndex
        The index over ``embeddings``; ``vectors`` are added to it.
    gallery, embeddings, keys : ndarray, ndarray, list
        The gallery's items, vectors and content keys.
    items, vectors, new_keys : ndarray, ndarray, list
        Those of the items added, in order.

    Returns
    -------
    gallery, embeddings, keys : ndarray, ndarray, list
        The grown gallery's. The exact index's array is its embeddings, so
        that the search and the index share one copy, as after ``fit``.
    """
    index.add(vectors)
    embeddings = (index.embeddings if isinstance(index, BruteForceIndex)
                  else np.concatenate([embeddings, vectors]))
    return np.concatenate([gallery, items]), embeddings, list(keys) + list(new_keys)


def shrunk(index, gallery, embeddings, keys, positions):
    """Remove the rows ``positions`` of a gallery and of its index.

    Parameters are those of :func:`grown`, with ``positions`` the rows to
    remove (see :func:`check_positions`).

    Returns
    -------
    gallery, embeddings, keys : ndarray, ndarray, list
        Those of the rows kept, in order.

    Raises
    ------
    ValueError
        If a position is out of range, or no row would be left; nothing is
        changed then.
    """
    positions = check_positions(positions, len(gallery))
    keep = np.ones(len(gallery), dtype=bool)
    keep[positions] = False
    if not keep.any():
        raise ValueError("remove would leave the gallery empty; fit a new search instead.")
    index.remove(positions)
    embeddings = (index.embeddings if isinstance(index, BruteForceIndex)
                  else np.ascontiguousarray(embeddings[keep]))
    return gallery[keep], embeddings, [key for key, kept in zip(keys, keep) if kept]
