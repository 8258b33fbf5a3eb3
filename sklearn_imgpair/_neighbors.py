"""ImageNeighbors: nearest-neighbour search of images in a catalogue of images."""

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from sklearn_imgpair._embedder import ImageEmbedder, search_embedder
from sklearn_imgpair._images.cells import cell_key
from sklearn_imgpair._images.embedding import embed_gallery
from sklearn_imgpair._images.lookup import find_cells, key_rows, rows_of_cells
from sklearn_imgpair._images.progress import progress_bar
from sklearn_imgpair._images.unreadable import ON_ERROR_OPTIONS
from sklearn_imgpair._images.validation import check_paths
from sklearn_imgpair._persistence.neighbors_file import load_neighbors, save_neighbors
from sklearn_imgpair._search.gallery import (
    build_index,
    check_index,
    embedding_source,
    grown,
    shrunk,
)
from sklearn_imgpair._search.graphs import NeighborsGraphMixin
from sklearn_imgpair._search.scores import MatchProbabilityMixin
from sklearn_imgpair._search.vector_index import check_n_neighbors, search_readable

__all__ = ["ImageNeighbors"]


def _content_key(cell):
    """:func:`cell_key`, None for a file that cannot be looked at (missing, no permission)."""
    try:
        return cell_key(cell)
    except OSError:
        return None


class ImageNeighbors(MatchProbabilityMixin, NeighborsGraphMixin, BaseEstimator):
    """Nearest-neighbour search of images among a gallery of images.

    The :class:`~sklearn.neighbors.NearestNeighbors` of image paths: ``fit``
    embeds each distinct gallery image once; ``kneighbors``,
    ``radius_neighbors`` and their graphs then find, for query images, the
    gallery images whose embeddings are nearest by cosine distance
    (``1 - cos``), in scikit-learn's conventions. Built on a fitted
    :class:`ImagePairClassifier`, it also gives the classifier's calibrated
    match probability of each neighbour (:meth:`kneighbors_proba`), equal to
    the classifier's ``predict_proba`` on the same pair up to float rounding.

    Search is exact by default: queries are compared with the whole gallery a
    chunk at a time, on the embedder's device, so memory beyond the gallery
    is bounded by ``chunk_size`` times the gallery size, never queries times
    gallery at once. ``algorithm="faiss"`` searches with a FAISS index
    instead (the ``faiss`` extra), exact or approximate.

    Parameters
    ----------
    embedder : ImageEmbedder, default=None
        The embedder of gallery and query images; cloned and fitted in
        ``fit``. None, without ``classifier``, uses ``ImageEmbedder()``.

    classifier : ImagePairClassifier or FrozenEstimator, default=None
        A fitted classifier whose network embeds the images (in its
        precision, with its batch size of prediction) and whose head turns
        cosines into match probabilities. Give ``embedder`` or
        ``classifier``, not both.
        As for :class:`ImageEmbedder`, wrap it in
        :class:`~sklearn.frozen.FrozenEstimator` to keep it fitted through
        :func:`~sklearn.base.clone`.

    n_neighbors : int, default=5
        Neighbours returned by :meth:`kneighbors` by default.

    radius : float, default=1.0
        Cosine distance within which :meth:`radius_neighbors` looks by
        default (0 to 2).

    algorithm : {"brute", "faiss"}, default="brute"
        ``"brute"``: exact search in chunks with torch; ties between equal
        distances are broken by the smaller gallery index. ``"faiss"``: a
        FAISS index of kind ``faiss_index``.

    faiss_index : {"flat", "ivf", "hnsw"}, default="flat"
        With ``algorithm="faiss"``: ``"flat"`` is exact (``IndexFlatIP``),
        ``"ivf"`` (inverted lists) and ``"hnsw"`` (graph) are approximate and
        much faster on large galleries; see ``faiss_params``.

    faiss_params : dict, default=None
        Settings of the FAISS index (for ``"ivf"``: ``n_lists``,
        ``n_probe``; for ``"hnsw"``: ``m``, ``ef_construction``,
        ``ef_search``). None uses defaults that reach a ``recall@10`` of 1.0
        against exact search on clustered vectors (views of identities, as
        image embeddings are) of 10,000 and 100,000 rows, but only 0.19 to
        0.79 on vectors spread uniformly over the sphere: measure the recall
        on your own embeddings (``benchmarks/bench_search.py``) and raise
        ``n_probe`` or ``ef_search`` if needed.

    chunk_size : int, default=None
        Queries compared with the gallery at once by the brute-force search.
        None fits a chunk of similarities into scikit-learn's
        ``working_memory`` (:func:`sklearn.set_config`, 1024 MB by default).
        Results do not depend on it.

    on_error : {"raise", "warn"}, default="raise"
        What an unreadable image does: ``"raise"`` raises an error naming its
        row and path; ``"warn"`` leaves an unreadable gallery image out of
        the gallery (one :class:`UnreadableImageWarning` names them all) and
        gives an unreadable query NaN distances and index -1.

    random_state : int, RandomState instance or None, default=None
        Seeds the training of an ``"ivf"`` FAISS index (its k-means); pass an
        int for the same index on every fit.

    verbose : int, default=0
        0 prints nothing; 1 or more shows progress bars (tqdm, on stderr) of
        the images embedded (the embedder shows its own when either asks)
        and of the queries searched.

    Attributes
    ----------
    embedder_ : ImageEmbedder
        The fitted embedder.

    gallery_ : ndarray of shape (n_samples_fit,), dtype=object
        The gallery images as given (paths, or the caller's in-memory images,
        which are referred to, not copied; a tuple for an item of several
        images); neighbour indices are rows of it.

    embeddings_ : ndarray of shape (n_samples_fit, embedding_dim), dtype=float32
        Their unit-length embeddings.

    n_samples_fit_ : int
        Number of gallery images.

    embedding_dim_ : int
        Length of each embedding.

    match_threshold_ : float or None
        The classifier's ``threshold``; None without a classifier.

    n_features_in_ : int
        Always 1: one column of images.

    feature_names_in_ : ndarray of shape (1,)
        The column name, when ``X`` in ``fit`` was a DataFrame with string
        column names.

    See Also
    --------
    sklearn.neighbors.NearestNeighbors : The same search on feature vectors.
    find_duplicates : Pairs of duplicates among images.
    ImageMatchClustering : Groups of images that match.

    Notes
    -----
    Distances are computed in two passes: a float32 matrix product finds the
    candidates, and their float64 cosines rank them, so results do not
    depend on the chunking or the machine's BLAS.

    Examples
    --------
    >>> from sklearn_imgpair import ImageEmbedder, ImageNeighbors
    >>> embedder = ImageEmbedder(pretrained=False, image_size=32, model_kwargs=TINY_SWIN)
    >>> search = ImageNeighbors(embedder, n_neighbors=2).fit(X[:8, 0])
    >>> distances, indices = search.kneighbors(X[:3, 1])
    >>> indices.shape
    (3, 2)
    >>> search.partial_fit(X[8:10, 0]).remove(indices=[0]).n_samples_fit_
    9
    """

    _parameter_constraints = {
        "embedder": [HasMethods(["fit", "transform"]), None],
        "classifier": [HasMethods(["predict_proba"]), None],
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "radius": [Interval(Real, 0, 2, closed="both")],
        "algorithm": [StrOptions({"brute", "faiss"})],
        "faiss_index": [StrOptions({"flat", "ivf", "hnsw"})],
        "faiss_params": [dict, None],
        "chunk_size": [Interval(Integral, 1, None, closed="left"), None],
        "on_error": [StrOptions(ON_ERROR_OPTIONS)],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, embedder=None, *, classifier=None, n_neighbors=5, radius=1.0,
                 algorithm="brute", faiss_index="flat", faiss_params=None, chunk_size=None,
                 on_error="raise", random_state=None, verbose=0):
        self.embedder = embedder
        self.classifier = classifier
        self.n_neighbors = n_neighbors
        self.radius = radius
        self.algorithm = algorithm
        self.faiss_index = faiss_index
        self.faiss_params = faiss_params
        self.chunk_size = chunk_size
        self.on_error = on_error
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.one_d_array = True
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags

    def __setstate__(self, state):
        state.setdefault("verbose", 0)  # pickled before verbose existed
        super().__setstate__(state)

    def fit(self, X, y=None, *, embeddings=None):
        """Embed the gallery images, each distinct image once.

        Parameters
        ----------
        X : list, 1-D array, Series or one-column table of image paths
            The gallery.
        y : None
            Ignored.
        embeddings : array-like of shape (n_images, embedding_dim), default=None
            The images' vectors, computed already by an embedder equal to
            the one this search fits (the same parameters, or the same
            classifier), e.g. on a Dask cluster with
            :func:`~sklearn_imgpair.embed_dask`. The images are then not
            read; the index is built from these vectors. Each row must be
            a finite unit vector: NaN rows (unreadable images, with
            ``on_error="warn"``) are refused, so leave those images out of
            ``X`` and their rows out of ``embeddings`` first.

        Returns
        -------
        self : ImageNeighbors
        """
        self._validate_params()
        gallery = check_paths(X)
        embedder, threshold = search_embedder(self.embedder, self.classifier)
        check_index(self, len(gallery))  # before any embedding
        verbose = self.verbose or embedder.get_params().get("verbose", 0)
        embedder.set_params(on_error=self.on_error, verbose=verbose).fit()
        embed = embedding_source(embeddings, gallery, embedder)
        items, embeddings, keys = embed_gallery(gallery, embed)
        index = build_index(self, embeddings, embedder)
        # Nothing is set before everything has worked: a failed fit leaves the
        # estimator as it was.
        self._set_fitted(embedder, threshold, index, items, embeddings, keys)
        # Sets or deletes feature_names_in_, as the embedder does; ensure_2d=False:
        # scikit-learn counts no features in a 1-D list of strings, so we set the count.
        validate_data(self, X, skip_check_array=True, ensure_2d=False)
        return self

    def partial_fit(self, X, y=None, *, embeddings=None):
        """Append images to the gallery, embedding only those it does not hold yet.

        The first call fits; later ones keep the fitted embedder and index.
        An image whose content is in the gallery (a file of the same absolute
        path, size and modification time, or the same image in memory) takes
        that row's embedding. Exact search (brute or ``"flat"``) then equals
        one :meth:`fit` on all the images in order; ``"ivf"`` keeps the lists
        trained on the first fit and ``"hnsw"`` grows its graph, so their
        approximate results may differ. A failed call changes nothing.

        Parameters
        ----------
        X : list, 1-D array, Series or one-column table of image paths
            The images to add (unreadable ones as ``on_error`` says).
        y : None
            Ignored.
        embeddings : array-like of shape (n_images, embedding_dim), default=None
            The vectors of ``X`` by the fitted embedder, as in :meth:`fit`;
            they are added as they are.

        Returns
        -------
        self : ImageNeighbors
        """
        if not hasattr(self, "embedder_"):
            return self.fit(X, y, embeddings=embeddings)
        cells = check_paths(X)
        validate_data(self, X, reset=False, skip_check_array=True, ensure_2d=False)
        if embeddings is None:
            added = embed_gallery(cells, self.embedder_.transform, self._gallery_keys,
                                  self.embeddings_)
        else:
            added = embed_gallery(cells, embedding_source(embeddings, cells, self.embedder_))
        self._set_fitted(self.embedder_, self.match_threshold_, self._index, *grown(
            self._index, self.gallery_, self.embeddings_, self._gallery_keys, *added))
        return self

    def remove(self, X=None, *, indices=None):
        """Remove images from the gallery without embedding the others again.

        The rows after a removed one move up, as in ``np.delete(gallery_,
        indices)``. ``ValueError`` if an image of ``X`` is not in the gallery,
        a row is out of range, or none would be left; nothing changes then.

        Parameters
        ----------
        X : list, 1-D array, Series or one-column table of image paths, default=None
            Images to remove, as given to :meth:`fit`: each row of
            ``gallery_`` equal to one of them goes.
        indices : array-like of int, default=None
            Rows of ``gallery_`` to remove, instead of ``X``.

        Returns
        -------
        self : ImageNeighbors
        """
        check_is_fitted(self)
        if (X is None) == (indices is None):
            raise ValueError("Give remove the images to remove (X) or their rows (indices).")
        if X is not None:
            validate_data(self, X, reset=False, skip_check_array=True, ensure_2d=False)
            indices = rows_of_cells(check_paths(X), self.gallery_)
        self._set_fitted(self.embedder_, self.match_threshold_, self._index, *shrunk(
            self._index, self.gallery_, self.embeddings_, self._gallery_keys, indices))
        return self

    def gallery_rows(self, X, *, match="content"):
        """Find the gallery row of each image, -1 where it is not in the gallery.

        Parameters
        ----------
        X : list, 1-D array, Series or one-column table of image paths
            The images looked up.
        match : {"content", "path"}, default="content"
            ``"content"``: the first row whose content key is the image's,
            as :meth:`partial_fit` reuses rows: a file of the same absolute
            path, size and modification time (so a relative and an absolute
            path of one unchanged file match; a file changed or missing since
            it was embedded does not), or the same image in memory. Rows
            loaded from a file written before content keys were saved match
            no image. ``"path"``: the first row equal to the image as given
            (the same path string, whatever the file holds now; the same
            image in memory), as :meth:`remove` matches.

        Returns
        -------
        rows : ndarray of shape (n_images,), dtype=int64
            Rows of ``gallery_``; -1 for an image not found.

        Raises
        ------
        ValueError
            If ``match`` is neither ``"content"`` nor ``"path"``.
        """
        check_is_fitted(self)
        if match not in ("content", "path"):
            raise ValueError(f"match must be 'content' or 'path'; got {match!r}.")
        validate_data(self, X, reset=False, skip_check_array=True, ensure_2d=False)
        cells = check_paths(X)
        if match == "path":
            return find_cells(cells, self.gallery_)
        keys = [_content_key(cell) for cell in cells]
        return key_rows(self._gallery_keys, keys).astype(np.int64)

    def _set_fitted(self, embedder, match_threshold, index, gallery, embeddings, keys):
        """Set the fitted state of a search over ``gallery`` (from ``fit`` or a file)."""
        self.embedder_ = embedder
        self.gallery_ = gallery
        self.embeddings_ = embeddings
        self.n_samples_fit_ = len(embeddings)
        self.embedding_dim_ = int(embeddings.shape[1])
        self.match_threshold_ = match_threshold
        self.n_features_in_ = 1
        self._index = index
        self._gallery_keys = keys  # content keys of the rows, None where unknown

    def embed(self, X):
        """Embed images with the fitted embedder.

        Parameters
        ----------
        X : list, 1-D array, Series or one-column table of image paths
            The images to embed.

        Returns
        -------
        embeddings : ndarray of shape (n_images, embedding_dim), dtype=float32
            Unit rows; NaN rows for unreadable images with ``on_error="warn"``.
        """
        check_is_fitted(self)
        # A table's column name must be the one fit saw, as in scikit-learn.
        validate_data(self, X, reset=False, skip_check_array=True, ensure_2d=False)
        return self.embedder_.transform(X)

    def _queries(self, X):
        """Embeddings of the queries, whether they are the gallery, and readable rows."""
        check_is_fitted(self)
        if X is None:
            return self.embeddings_, True, np.ones(self.n_samples_fit_, dtype=bool)
        embeddings = self.embed(X)
        return embeddings, False, ~np.isnan(embeddings).any(axis=1)

    def _search(self, queries, readable, **kwargs):
        """:func:`search_readable` on the index, with a bar of the queries if ``verbose``."""
        with progress_bar(int(readable.sum()), "Searching", self.verbose) as bar:
            return search_readable(self._index, queries, readable,
                                   progress=bar if self.verbose else None, **kwargs)

    def kneighbors(self, X=None, n_neighbors=None, return_distance=True):
        """Find the ``n_neighbors`` nearest gallery images of each query.

        Parameters
        ----------
        X : list, 1-D array, Series or one-column table of image paths, default=None
            Query images. None queries the gallery itself, each image left
            out of its own list (as scikit-learn does).
        n_neighbors : int, default=None
            Neighbours per query; None uses ``self.n_neighbors``.
        return_distance : bool, default=True
            Return the distances as well.

        Returns
        -------
        distances : ndarray of shape (n_queries, n_neighbors), dtype=float64
            Cosine distances, ascending; only with ``return_distance=True``.
        indices : ndarray of shape (n_queries, n_neighbors), dtype=int64
            Rows of ``gallery_``; equal distances in increasing index order.
        """
        check_is_fitted(self)
        n_neighbors = check_n_neighbors(self.n_neighbors if n_neighbors is None else n_neighbors,
                                        self.n_samples_fit_, exclude_self=X is None)
        queries, is_gallery, readable = self._queries(X)
        distances, indices = self._search(queries, readable, n_neighbors=n_neighbors,
                                          exclude_self=is_gallery)
        return (distances, indices) if return_distance else indices

    def radius_neighbors(self, X=None, radius=None, return_distance=True, sort_results=False):
        """Find the gallery images within ``radius`` of each query.

        Parameters
        ----------
        X : list, 1-D array, Series or one-column table of image paths, default=None
            Query images; None queries the gallery, each image left out of
            its own list.
        radius : float, default=None
            Cosine distance; None uses ``self.radius``.
        return_distance : bool, default=True
            Return the distances as well.
        sort_results : bool, default=False
            Accepted for scikit-learn compatibility: results are always
            sorted by distance, ties by index.

        Returns
        -------
        distances : ndarray of shape (n_queries,), dtype=object
            Per query, an array of cosine distances; only with
            ``return_distance=True``.
        indices : ndarray of shape (n_queries,), dtype=object
            Per query, an array of rows of ``gallery_``.
        """
        radius = self.radius if radius is None else float(radius)
        if not 0 <= radius:
            raise ValueError(f"radius must be a non-negative distance; got {radius}.")
        queries, is_gallery, readable = self._queries(X)
        distances, indices = self._search(queries, readable, radius=radius,
                                          exclude_self=is_gallery)
        return (distances, indices) if return_distance else indices

    def score(self, X, y):
        """Recall@1 of a search among the images of ``X``, each left out in turn.

        Images with the same label in ``y`` are images of one identity; a
        query scores when its nearest other image shares its label (see
        :func:`sklearn_imgpair.metrics.recall_at_k`). The fitted gallery is
        not used: this scores the embedding, as ``GridSearchCV`` needs to
        compare settings on held-out identities. Other metrics:
        :func:`sklearn_imgpair.metrics.make_retrieval_scorer`.

        Parameters
        ----------
        X : list, 1-D array, Series or one-column table of image paths
            At least two images.
        y : array-like of shape (n_images,)
            Identity labels.

        Returns
        -------
        score : float
        """
        from sklearn_imgpair.metrics import make_retrieval_scorer

        return make_retrieval_scorer("recall_at_k", k=1)(self, X, y)

    def save(self, path):
        """Save the fitted search to one file that holds no pickle.

        The file holds the embedder's network, the gallery's paths and
        embeddings, the FAISS index when there is one, and the classifier's
        head and threshold (see :meth:`ImagePairClassifier.save` for the
        format). The ``embedder`` and ``classifier`` parameters are saved as
        None: what the search needs of them is in the file, so a loaded search
        searches and gives match probabilities; refitting it needs them set
        again.

        Parameters
        ----------
        path : str or path-like
            The file to write, by convention with a ``.safetensors`` suffix.

        Returns
        -------
        path : str
            The absolute path written.

        Raises
        ------
        ValueError
            If the gallery holds images in memory rather than paths.
        """
        check_is_fitted(self)
        return save_neighbors(self, path)

    @classmethod
    def load(cls, path, *, device=None, mmap_mode="r"):
        """Load a search saved with :meth:`save`, without running code from the file.

        Parameters
        ----------
        path : str or path-like
            A file written by :meth:`save`.
        device : str or torch.device, default=None
            Where the network runs; None keeps the saved device, or uses
            ``"cpu"`` (with a warning) when that is not available.
        mmap_mode : {"r", None}, default="r"
            ``"r"``: ``embeddings_`` is a read-only :class:`numpy.memmap` of
            the file, verified by reading it once in blocks and shared in the
            page cache; the exact search uses it without a copy (see the user
            guide). None reads the vectors into memory.

        Returns
        -------
        neighbors : ImageNeighbors
            A fitted search that returns the saved one's neighbours.

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        ValueError
            If the file is not such a model file, is corrupt or modified, or
            its embeddings do not match its network (dimensions, count), or
            ``mmap_mode`` is not ``"r"`` or None.
        """
        return load_neighbors(cls, path, embedder_class=ImageEmbedder, device=device,
                              mmap_mode=mmap_mode)

    def _to_file(self):
        """The file's ``"faiss_index"`` (None for the exact search) and ``"gallery_keys"``."""
        return {"faiss_index": self._index.to_bytes() if self.algorithm == "faiss" else None,
                "gallery_keys": self._gallery_keys}

    @classmethod
    def _from_file(cls, params, *, embedder, gallery, embeddings, match_threshold,
                   feature_names_in=None, faiss_index=None, gallery_keys=None, path):
        """A fitted search of ``params`` over a saved gallery, read from a model file.

        ``faiss_index`` and ``gallery_keys`` are as :meth:`_to_file` gave them
        (None builds the index again; no keys: none of the rows is reused by
        :meth:`partial_fit`); ``path`` names the file in messages.
        """
        neighbors = cls(**params)
        neighbors._validate_params()
        index = build_index(neighbors, embeddings, embedder, faiss_index, path=path)
        neighbors._set_fitted(embedder, match_threshold, index, gallery, embeddings,
                              gallery_keys or [None] * len(gallery))
        if feature_names_in:
            neighbors.feature_names_in_ = np.asarray(feature_names_in, dtype=object)
        return neighbors
