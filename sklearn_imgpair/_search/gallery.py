"""The gallery of a search as it grows and shrinks: content keys, reused rows, removed rows.

A search keeps, beside each gallery item and its vector, the item's content
key (a file's absolute path, size and modification time, or the digest of an
image in memory; see :func:`~sklearn_imgpair._images.cells.cell_key`). Items
added later whose key is already in the gallery take that row's vector
instead of being read and embedded again
(:func:`~sklearn_imgpair._images.lookup.reuse_or_embed`). Nothing here reads images.
"""

import numpy as np

from sklearn_imgpair._search.faiss_index import FaissIndex
from sklearn_imgpair._search.faiss_settings import import_faiss, resolve_params
from sklearn_imgpair._search.vector_index import BruteForceIndex, check_positions

__all__ = ["build_index", "check_index", "embedding_source", "grown", "shrunk"]


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


def embedding_source(embeddings, cells, embedder):
    """The ``embed`` callable of a gallery: ``embedder.transform``, or the vectors given.

    Given vectors must be a finite unit vector of the embedder's dimension per
    cell; ``ValueError`` names the first row that is not.
    """
    if embeddings is None:
        return embedder.transform
    given = np.asarray(embeddings, dtype=np.float32)
    expected = (len(cells), embedder.embedding_dim_)
    if given.shape != expected:
        raise ValueError(f"embeddings must have shape {expected}, a vector of the embedder's "
                         f"dimension per image; got {given.shape}.")
    norms = np.linalg.norm(given, axis=1)
    bad = np.flatnonzero(~(np.abs(norms - 1.0) <= 1e-3))
    if len(bad):
        raise ValueError(f"embeddings[{bad[0]}] is not a finite unit vector (norm "
                         f"{norms[bad[0]]:.4g}): give the embedder's output as it is.")
    return lambda _: given


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
