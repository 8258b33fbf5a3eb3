"""The model file of ImageNeighbors: its schema, its versions, its save and load.

The file is a :mod:`~sklearn_imgpair._io.container` whose arrays are the
embedder's state dict (names prefixed with ``embedder.``), the gallery's
``embeddings_`` and, for ``algorithm="faiss"``, the FAISS index's bytes
(``faiss_index``, :meth:`ImageNeighbors._to_file`). Its JSON document holds:

``params``
    The parameters, ``embedder`` and ``classifier`` saved as None (what the
    search needs of them is in the file).
``embedder``
    The embedder's document (:func:`~sklearn_imgpair._persistence.embedder_file.embedder_content`).
``fitted``
    ``gallery_`` (paths, and lists of paths for items of several images),
    ``match_threshold_``, ``feature_names_in_``, ``embedding_dim_`` and
    ``gallery_keys``, the content key of each gallery row (a file's absolute
    path, size and modification time when it was embedded; null where
    unknown), with which :meth:`ImageNeighbors.partial_fit` reuses the
    embeddings of images already in the gallery.
``versions``
    The versions of the library and of what it runs on.

Versions of the schema; 1 to 3 are numbered as the embedder's whose
document it holds:

1. The first.
2. The embedder's ``network`` and head's link.
3. An embedder with colour. Files written before the schemas were split
   held such an embedder under version 2.
4. ``gallery_keys``; a gallery that has grown or shrunk
   (:meth:`ImageNeighbors.partial_fit`, :meth:`ImageNeighbors.remove`),
   whose IVF index may hold fewer vectors than lists. Files of versions 1
   to 3 load without keys: :meth:`ImageNeighbors.partial_fit` embeds their
   gallery's images again when they are given again.
5. An embedder whose ``precision`` or ``batch_size`` is ``"auto"`` (its
   document's version 4).

A file is written in the oldest version that holds its content: 5 with an
embedder of version 4, else 4 when it has content keys, else the version of
its embedder's document.
"""

import os

import numpy as np

from sklearn_imgpair._io.container import read_container, write_container
from sklearn_imgpair._persistence.embedder_file import (
    embedder_content,
    embedder_format_version,
    embedder_from_content,
)
from sklearn_imgpair._persistence.estimator_state import (
    constructor_defaults,
    decode_params,
    library_versions,
    persisted_params,
)

__all__ = ["NEIGHBORS_FORMAT_VERSION", "load_neighbors", "save_neighbors"]

NEIGHBORS_FORMAT_VERSION = 5
_EMBEDDER = "embedder."
# Arrays memory-mapped by mmap_mode="r": the gallery's vectors, and the FAISS index's
# bytes, which FAISS copies into its own index (so they need not be read first).
_MAPPED = ("embeddings_", "faiss_index")


def _gallery_json(gallery):
    """The gallery as JSON: paths, and lists of paths for items of several images."""
    entries = []
    for row, image in enumerate(gallery):
        parts = image if isinstance(image, tuple) else (image,)
        if not all(isinstance(part, str) for part in parts):
            raise ValueError(
                f"gallery_[{row}] holds an image in memory "
                f"({', '.join(type(part).__name__ for part in parts)}); a model file keeps the "
                "gallery's paths, so only a gallery of image files can be saved. Write the "
                "images to files and fit on their paths.")
        entries.append(list(parts) if isinstance(image, tuple) else image)
    return entries


def save_neighbors(neighbors, path):
    """Write a fitted :class:`ImageNeighbors` to ``path`` (see its ``save``)."""
    embedder, state = embedder_content(neighbors.embedder_)
    arrays = {_EMBEDDER + name: array for name, array in state.items()}
    arrays["embeddings_"] = neighbors.embeddings_
    state = neighbors._to_file()
    if state["faiss_index"] is not None:
        arrays["faiss_index"] = state["faiss_index"]
    keys = state["gallery_keys"]
    keys = None if all(key is None for key in keys) else list(keys)
    params = {**neighbors.get_params(deep=False), "embedder": None, "classifier": None}
    content = {
        "params": persisted_params(params, constructor_defaults(type(neighbors))),
        "embedder": embedder,
        "fitted": {"gallery_": _gallery_json(neighbors.gallery_),
                   "match_threshold_": neighbors.match_threshold_,
                   "feature_names_in_": [str(name) for name in
                                         getattr(neighbors, "feature_names_in_", [])],
                   "embedding_dim_": int(neighbors.embedding_dim_)},
        "versions": library_versions(),
    }
    version = embedder_format_version(embedder)
    version = 5 if version == 4 else version
    if keys is not None:
        content["fitted"]["gallery_keys"] = keys
        version = max(version, 4)
    return write_container(path, type(neighbors).__name__, content, arrays,
                           format_version=version)


def load_neighbors(cls, path, *, embedder_class, device=None, mmap_mode="r"):
    """Read an :class:`ImageNeighbors` written by :func:`save_neighbors`.

    ``embedder_class`` (:class:`ImageEmbedder`) rebuilds the saved embedder; it
    is passed in by the estimator, which sits above this module. With
    ``mmap_mode="r"`` the gallery's embeddings are a read-only
    :class:`numpy.memmap` of the file (see :func:`read_container`); with None
    they are read into memory.
    """
    if mmap_mode not in ("r", None):
        raise ValueError(f"mmap_mode must be 'r' or None; got {mmap_mode!r}.")
    content, arrays = read_container(path, cls.__name__, max_version=NEIGHBORS_FORMAT_VERSION,
                                     mapped=_MAPPED if mmap_mode else ())
    try:
        fitted = content["fitted"]
        params = decode_params(content["params"])
        gallery = np.empty(len(fitted["gallery_"]), dtype=object)
        gallery[:] = [tuple(entry) if isinstance(entry, list) else entry
                      for entry in fitted["gallery_"]]
        embeddings = arrays.pop("embeddings_")
        faiss_index = arrays.pop("faiss_index", None)
        state = {name[len(_EMBEDDER):]: array for name, array in arrays.items()
                 if name.startswith(_EMBEDDER)}
        embedder_document = content["embedder"]
        threshold = fitted.get("match_threshold_")
        keys = fitted.get("gallery_keys")  # absent before version 4
        if keys is not None and (not isinstance(keys, list) or len(keys) != len(gallery) or not
                                 all(key is None or isinstance(key, str) for key in keys)):
            raise ValueError(f"gallery_keys must be a key (str or null) per gallery image; "
                             f"got {type(keys).__name__} {str(keys)[:60]}")
        if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"match_threshold_ {threshold!r} is not a probability")
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{os.fspath(path)!r} holds an ImageNeighbors that cannot be rebuilt: "
                         f"{type(exc).__name__}: {exc}") from None
    embedder = embedder_from_content(embedder_class, embedder_document, state, path,
                                     device=device)
    dims = {"the network's output": embedder.embedding_dim_,
            "the saved embedding_dim_": fitted.get("embedding_dim_"),
            "the gallery embeddings'": embeddings.shape[1] if embeddings.ndim == 2 else None}
    if len(set(dims.values())) != 1 or embeddings.shape[0] != len(gallery):
        raise ValueError(
            f"{os.fspath(path)!r} holds mismatched embeddings: dimensions "
            f"{', '.join(f'{name} {value}' for name, value in dims.items())}; "
            f"{embeddings.shape[0] if embeddings.ndim else 0} vectors for {len(gallery)} "
            "gallery images.")
    if embeddings.dtype != np.float32:  # a mapped array of the right dtype is kept as it is
        embeddings = embeddings.astype(np.float32)
    return cls._from_file(
        params, embedder=embedder, gallery=gallery, embeddings=embeddings,
        match_threshold=None if threshold is None else float(threshold),
        feature_names_in=fitted.get("feature_names_in_") or None, faiss_index=faiss_index,
        gallery_keys=keys, path=os.fspath(path))
