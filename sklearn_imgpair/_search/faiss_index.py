"""FaissIndex: cosine search over unit vectors with a FAISS flat, IVF or HNSW index."""

from numbers import Real

import numpy as np
from sklearn.utils import check_random_state

from sklearn_imgpair._search.faiss_settings import (
    FAISS_PARAMS,
    check_int,
    faiss_threads,
    import_faiss,
    resolve_params,
)
from sklearn_imgpair._search.vector_index import (
    SIMILARITY_SLACK,
    check_positions,
    check_vectors,
    sort_neighbors,
)

__all__ = ["FaissIndex"]

# IVF training uses at most this many gallery rows per list (a seeded
# subsample): k-means time grows with rows times lists, and more rows per
# centroid barely move the centroids.
_MAX_POINTS_PER_LIST = 64


class FaissIndex:
    """Nearest neighbours by cosine distance with a FAISS index (the ``faiss`` extra).

    The gallery's unit vectors are stored in a FAISS index on inner product,
    so that cosine distance is ``1 - inner product``. Three kinds:

    - ``"flat"``: :class:`faiss.IndexFlatIP`, exact; every query is compared
      with every gallery vector.
    - ``"ivf"``: :class:`faiss.IndexIVFFlat`, approximate. k-means splits the
      gallery into ``n_lists`` lists; a query is compared with the vectors of
      the ``n_probe`` lists whose centroids are nearest.
    - ``"hnsw"``: :class:`faiss.IndexHNSWFlat`, approximate. A graph with
      ``m`` links per vector; a query walks it keeping ``ef_search``
      candidates.

    Parameters
    ----------
    embeddings : ndarray of shape (n_gallery, d), dtype=float32
        Unit-length gallery vectors. FAISS keeps its own copy.
    index : {"flat", "ivf", "hnsw"}, default="flat"
        Kind of index.
    params : dict, default=None
        Settings of the index; None (or a missing key) uses the default.

        - ``"ivf"``: ``n_lists`` (default ``4 * sqrt(n_gallery)``, rounded,
          but at most ``n_gallery // 39``, FAISS's minimum of training points
          per centroid, and at least 1) and ``n_probe`` (default ``2 *
          ceil(sqrt(n_lists))``, at most ``n_lists``).
        - ``"hnsw"``: ``m`` (default 32), ``ef_construction`` (200) and
          ``ef_search`` (128).
        - ``"flat"``: none.

        Other keys raise ``ValueError``.
    random_state : int, RandomState instance or None, default=None
        Seeds the IVF training: the subsample of at most ``64 * n_lists``
        gallery rows k-means runs on, and k-means' own start. Unused by the
        other kinds (FAISS's HNSW draws levels from its own fixed seed).

    Attributes
    ----------
    index : str
        Kind of index.
    params : dict
        Every setting of that kind, defaults filled in; pass it back to
        :meth:`from_bytes`.
    n_samples : int
        Gallery size.
    n_features : int
        Length of each vector.
    faiss_index : faiss.Index
        The FAISS index.

    Notes
    -----
    The defaults of ``"ivf"`` and ``"hnsw"`` are chosen for a recall@10 of at
    least 0.95 against exact search on embeddings with the structure of image
    embeddings, where each vector's neighbours are much nearer than the rest
    of the gallery: both reach 1.00 on the clustered 768-d vectors of
    ``benchmarks/bench_search.py`` (10,000 and 100,000 vectors). Vectors
    without that structure, such as vectors uniform on the sphere, whose
    nearest neighbours are barely nearer than any other, are their worst
    case: there the same defaults reach a recall@10 of only 0.2 to 0.8; use
    ``"flat"``, or raise ``n_probe`` or ``ef_search``.

    FAISS runs with ``torch.get_num_threads()`` threads during each call and
    its previous thread setting is restored afterwards.

    An approximate index may return fewer than ``n_neighbors`` results for a
    query (FAISS fills the gap with index -1): with IVF, when the ``n_probe``
    lists searched hold fewer vectors than that; with HNSW, rarely, when the
    walk finds fewer candidates. :meth:`kneighbors` then raises
    ``RuntimeError`` rather than return incomplete rows; raise ``n_probe`` or
    ``ef_search``.

    :meth:`radius_neighbors` uses FAISS's range search. It is exact with
    ``"flat"``. With ``"ivf"`` it finds the vectors within the radius among
    those of the ``n_probe`` lists searched; with ``"hnsw"``, among those
    the graph walk visits (about ``ef_search`` candidates), so a radius that
    holds many gallery vectors returns only part of them. Use ``"flat"`` (or
    the brute-force search) where every neighbour within the radius matters.
    """

    def __init__(self, embeddings, *, index="flat", params=None, random_state=None):
        faiss = import_faiss()
        embeddings = check_vectors(embeddings, "embeddings")
        n_samples, n_features = embeddings.shape
        if n_samples == 0:
            raise ValueError("embeddings must hold at least one vector; got shape "
                             f"{embeddings.shape}.")
        self.index = index
        self.params = resolve_params(index, params, n_samples)
        self.n_samples, self.n_features = n_samples, n_features
        with faiss_threads(faiss):
            if index == "flat":
                self.faiss_index = faiss.IndexFlatIP(n_features)
            elif index == "ivf":
                self.faiss_index = self._train_ivf(faiss, embeddings, random_state)
            else:
                self.faiss_index = faiss.IndexHNSWFlat(n_features, self.params["m"],
                                                       faiss.METRIC_INNER_PRODUCT)
                self.faiss_index.hnsw.efConstruction = self.params["ef_construction"]
            self.faiss_index.add(embeddings)
        self._set_search_params()

    def _train_ivf(self, faiss, embeddings, random_state):
        n_lists = self.params["n_lists"]
        rng = check_random_state(random_state)
        quantizer = faiss.IndexFlatIP(self.n_features)
        ivf = faiss.IndexIVFFlat(quantizer, self.n_features, n_lists,
                                 faiss.METRIC_INNER_PRODUCT)
        ivf.cp.seed = int(rng.randint(np.iinfo(np.int32).max))
        if n_lists == 1:
            # The default on galleries under 78 vectors: one list needs no
            # clustering, so no warning about too few training points.
            ivf.cp.min_points_per_centroid = 1
        n_train = min(self.n_samples, _MAX_POINTS_PER_LIST * n_lists)
        if n_train < self.n_samples:
            rows = np.sort(rng.choice(self.n_samples, size=n_train, replace=False))
            ivf.train(embeddings[rows])
        else:
            ivf.train(embeddings)
        return ivf

    def _set_search_params(self):
        if self.index == "ivf":
            self.faiss_index.nprobe = self.params["n_probe"]
        elif self.index == "hnsw":
            self.faiss_index.hnsw.efSearch = self.params["ef_search"]

    def __len__(self):
        return self.n_samples

    def add(self, vectors):
        """Append unit vectors to the index; they take the next rows.

        An IVF index files them in the lists it was trained with, which
        stay as they are: a gallery that grows far beyond, or away from, the
        vectors of the first ``fit`` is better served by a new ``fit``.

        Parameters
        ----------
        vectors : ndarray of shape (n_new, d)
            Unit-length vectors of the index's dimension.

        Returns
        -------
        self : FaissIndex
        """
        faiss = import_faiss()
        vectors = check_vectors(vectors, "vectors", self.n_features)
        with faiss_threads(faiss):
            self.faiss_index.add(vectors)
        self.n_samples += len(vectors)
        return self

    def remove(self, positions):
        """Remove gallery rows; the rows after them move up, in order.

        Flat and IVF indexes remove the vectors (FAISS's ``remove_ids``; the
        IVF lists are renumbered); an HNSW graph cannot lose nodes, so it is
        built again from the vectors it keeps, with the same settings.

        Parameters
        ----------
        positions : array-like of int
            Rows to remove (see :func:`check_positions`).

        Returns
        -------
        self : FaissIndex
        """
        faiss = import_faiss()
        positions = check_positions(positions, self.n_samples)
        if not len(positions):
            return self
        with faiss_threads(faiss):
            if self.index == "hnsw":
                kept = np.delete(self.faiss_index.reconstruct_n(0, self.n_samples), positions,
                                 axis=0)
                self.faiss_index = faiss.IndexHNSWFlat(self.n_features, self.params["m"],
                                                       faiss.METRIC_INNER_PRODUCT)
                self.faiss_index.hnsw.efConstruction = self.params["ef_construction"]
                self.faiss_index.add(kept)
                self._set_search_params()
            else:
                self.faiss_index.remove_ids(faiss.IDSelectorBatch(positions))
                if self.index == "ivf":
                    _renumber_lists(faiss, self.faiss_index.invlists, positions)
        self.n_samples -= len(positions)
        return self

    def _check_queries(self, queries, exclude_self, first_row):
        queries = check_vectors(queries, "queries", self.n_features)
        if exclude_self and not 0 <= first_row <= self.n_samples - len(queries):
            raise ValueError(f"exclude_self=True needs gallery rows as queries (rows "
                             f"{first_row} to {first_row + len(queries) - 1} of "
                             f"{self.n_samples}).")
        return queries

    def kneighbors(self, queries, n_neighbors, *, exclude_self=False, first_row=0):
        """The ``n_neighbors`` nearest gallery vectors of each query.

        Parameters
        ----------
        queries : ndarray of shape (n_queries, d)
            Unit-length vectors.
        n_neighbors : int
            Neighbours per query, at most the gallery size (minus one with
            ``exclude_self``).
        exclude_self : bool, default=False
            The queries are the gallery, in order: leave each one out of its
            own list.
        first_row : int, default=0
            With ``exclude_self``, the gallery row of the first query.

        Returns
        -------
        distances : ndarray of shape (n_queries, n_neighbors), dtype=float32
            Cosine distances ``1 - inner product`` (clipped to [0, 2]),
            ascending.
        indices : ndarray of shape (n_queries, n_neighbors), dtype=int64
            Gallery rows; equal distances in increasing index order.

        Raises
        ------
        ValueError
            If ``n_neighbors`` is out of range or the queries have the wrong
            shape.
        RuntimeError
            If an approximate index found fewer than ``n_neighbors``
            neighbours for a query (see Notes of :class:`FaissIndex`).
        """
        faiss = import_faiss()
        queries = self._check_queries(queries, exclude_self, first_row)
        n_neighbors = check_int("n_neighbors", n_neighbors, 1, what="")
        available = self.n_samples - int(exclude_self)
        if n_neighbors > available:
            raise ValueError(f"Expected n_neighbors <= {available} (the gallery size"
                             f"{' minus one, with exclude_self' if exclude_self else ''}); "
                             f"got {n_neighbors}.")
        n_search = n_neighbors + int(exclude_self)
        with faiss_threads(faiss):
            similarities, indices = self.faiss_index.search(queries, n_search)
        missing = (indices < 0).any(axis=1)
        if missing.any():
            row = int(np.flatnonzero(missing)[0])
            hint = ("n_probe" if self.index == "ivf" else "ef_search")
            raise RuntimeError(
                f"The {self.index!r} FAISS index found fewer than {n_search} neighbours for "
                f"{int(missing.sum())} of {len(queries)} queries (first: row {row}); raise "
                f"{hint!r} in the FAISS parameters (now {self.params[hint]}) or use "
                f"index='flat'.")
        distances = np.clip(1.0 - similarities, 0.0, 2.0, dtype=np.float32)
        indices = indices.astype(np.int64, copy=False)
        if exclude_self:
            distances, indices = _drop_self(distances, indices, first_row)
        return sort_neighbors(distances, indices)

    def radius_neighbors(self, queries, radius, *, exclude_self=False, first_row=0):
        """Every gallery vector within ``radius`` (cosine distance) of each query.

        Exact with ``"flat"``; approximate with ``"ivf"`` and ``"hnsw"``
        (see Notes of :class:`FaissIndex`).

        Parameters
        ----------
        queries : ndarray of shape (n_queries, d)
            Unit-length vectors.
        radius : float
            Largest cosine distance returned (inclusive), 0 to 2.
        exclude_self : bool, default=False
            The queries are the gallery, in order: leave each one out of its
            own list.
        first_row : int, default=0
            With ``exclude_self``, the gallery row of the first query.

        Returns
        -------
        distances : ndarray of shape (n_queries,), dtype=object
            Per query, float32 cosine distances, ascending.
        indices : ndarray of shape (n_queries,), dtype=object
            Per query, int64 gallery rows; equal distances in increasing
            index order.
        """
        faiss = import_faiss()
        queries = self._check_queries(queries, exclude_self, first_row)
        if not isinstance(radius, Real) or not radius >= 0:
            raise ValueError(f"radius must be a non-negative cosine distance; got {radius!r}.")
        # The slack keeps rounding from losing a vector; distance <= radius decides below.
        threshold = 1.0 - float(radius) - SIMILARITY_SLACK
        with faiss_threads(faiss):
            limits, similarities, found = self.faiss_index.range_search(queries, threshold)
        all_distances = np.clip(1.0 - similarities, 0.0, 2.0, dtype=np.float32)
        found = found.astype(np.int64, copy=False)
        distances = np.empty(len(queries), dtype=object)
        indices = np.empty(len(queries), dtype=object)
        for row in range(len(queries)):
            row_distances = all_distances[limits[row]:limits[row + 1]]
            row_indices = found[limits[row]:limits[row + 1]]
            keep = row_distances <= radius
            if exclude_self:
                keep &= row_indices != first_row + row
            row_distances, row_indices = sort_neighbors(row_distances[keep], row_indices[keep])
            distances[row], indices[row] = row_distances, row_indices
        return distances, indices

    def to_bytes(self):
        """The index serialized by FAISS, e.g. to store in a model file.

        Returns
        -------
        data : ndarray of shape (n_bytes,), dtype=uint8
        """
        return import_faiss().serialize_index(self.faiss_index)

    @classmethod
    def from_bytes(cls, data, *, index, params=None):
        """Rebuild an index from :meth:`to_bytes`.

        Parameters
        ----------
        data : ndarray of dtype uint8, or bytes
            What :meth:`to_bytes` returned.
        index : {"flat", "ivf", "hnsw"}
            Kind of index that was serialized.
        params : dict, default=None
            Its settings. The search settings (``n_probe``, ``ef_search``)
            apply to the rebuilt index; the structural ones (``n_lists``,
            ``m``, ``ef_construction``) are read from ``data`` and, when
            given, must agree with it. None uses the defaults for the
            gallery size stored in ``data``.

        Returns
        -------
        faiss_index : FaissIndex

        Raises
        ------
        ValueError
            If ``data`` is not a serialized FAISS index of kind ``index`` on
            inner product, or ``params`` disagree with it.
        """
        faiss = import_faiss()
        if index not in FAISS_PARAMS:
            raise ValueError(f"index must be one of {sorted(FAISS_PARAMS)}; got {index!r}.")
        data = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) \
            else np.ascontiguousarray(data, dtype=np.uint8).ravel()
        try:
            stored = faiss.deserialize_index(data)
        except RuntimeError as exc:
            raise ValueError(f"data is not a serialized FAISS index: {exc}") from exc
        expected = {"flat": faiss.IndexFlatIP, "ivf": faiss.IndexIVFFlat,
                    "hnsw": faiss.IndexHNSWFlat}[index]
        if not isinstance(stored, expected) or \
                stored.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError(f"data holds a {type(stored).__name__} (metric "
                             f"{stored.metric_type}), not the {expected.__name__} on inner "
                             f"product of index={index!r}.")
        structure = {}
        if index == "ivf":
            structure = {"n_lists": int(stored.nlist)}
        elif index == "hnsw":
            structure = {"m": int(stored.hnsw.nb_neighbors(1)),
                         "ef_construction": int(stored.hnsw.efConstruction)}
        params = {} if params is None else dict(params)
        for key, value in structure.items():
            if params.get(key) is not None and params[key] != value:
                raise ValueError(f"FAISS parameter {key!r} = {params[key]!r} does not match "
                                 f"the serialized index, built with {key} = {value}.")
        self = cls.__new__(cls)
        self.index = index
        # An IVF index may hold fewer vectors than lists once rows were removed.
        self.params = resolve_params(index, {**params, **structure},
                                     max(int(stored.ntotal), structure.get("n_lists", 0)))
        self.n_samples, self.n_features = int(stored.ntotal), int(stored.d)
        self.faiss_index = stored
        self._set_search_params()
        return self


def _renumber_lists(faiss, invlists, removed):
    """Give the vectors of IVF lists the ids of their rows once ``removed`` rows are gone.

    FAISS's ``remove_ids`` leaves the ids of the other vectors as they were;
    each id above removed rows moves down by their number, so that ids stay
    the rows ``0 .. n - 1`` of the gallery.
    """
    for list_no in range(invlists.nlist):
        size = invlists.list_size(list_no)
        if not size:
            continue
        pointer = invlists.get_ids(list_no)
        ids = faiss.rev_swig_ptr(pointer, size).copy()
        invlists.release_ids(list_no, pointer)
        if ids.max() < removed[0]:
            continue
        ids -= np.searchsorted(removed, ids)
        pointer = invlists.get_codes(list_no)
        codes = faiss.rev_swig_ptr(pointer, size * invlists.code_size).copy()
        invlists.release_codes(list_no, pointer)
        invlists.update_entries(list_no, 0, size, faiss.swig_ptr(ids), faiss.swig_ptr(codes))


def _drop_self(distances, indices, first_row=0):
    """Leave row ``first_row + i`` out of query ``i``'s list, or its last neighbour."""
    own = indices == first_row + np.arange(len(indices))[:, None]
    # Where a row is absent from its own list, drop the last (farthest) neighbour.
    own[~own.any(axis=1), -1] = True
    keep = ~own
    n_kept = indices.shape[1] - 1
    return distances[keep].reshape(-1, n_kept), indices[keep].reshape(-1, n_kept)
