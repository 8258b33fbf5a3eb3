"""Model files of ImageNeighbors: the embedder's network, the gallery and its index."""

import os

import numpy as np
import torch

from sklearn_imgpair._io.model_file import (
    constructor_defaults,
    decode_params,
    embedder_content,
    embedder_from_content,
    persisted_params,
    read_model_file,
    write_model_file,
)

__all__ = ["load_neighbors", "save_neighbors"]

_EMBEDDER = "embedder."


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
    embedder, tensors = embedder_content(neighbors.embedder_)
    tensors = {_EMBEDDER + name: tensor for name, tensor in tensors.items()}
    tensors["embeddings_"] = torch.from_numpy(neighbors.embeddings_)
    if neighbors.algorithm == "faiss":
        tensors["faiss_index"] = torch.from_numpy(neighbors._index.to_bytes())
    content = {
        "params": persisted_params(neighbors, constructor_defaults(type(neighbors)),
                                   overrides={"embedder": None, "classifier": None}),
        "embedder": embedder,
        "fitted": {"gallery_": _gallery_json(neighbors.gallery_),
                   "match_threshold_": neighbors.match_threshold_,
                   "feature_names_in_": [str(name) for name in
                                         getattr(neighbors, "feature_names_in_", [])],
                   "embedding_dim_": int(neighbors.embedding_dim_)},
    }
    return write_model_file(path, type(neighbors).__name__, content, tensors)


def load_neighbors(cls, path, *, device=None):
    """Read an :class:`ImageNeighbors` written by :func:`save_neighbors`."""
    from sklearn_imgpair._embedder import ImageEmbedder

    content, tensors = read_model_file(path, cls.__name__)
    try:
        fitted = content["fitted"]
        params = decode_params(content["params"])
        gallery = np.empty(len(fitted["gallery_"]), dtype=object)
        gallery[:] = [tuple(entry) if isinstance(entry, list) else entry
                      for entry in fitted["gallery_"]]
        embeddings = tensors.pop("embeddings_").numpy()
        index_bytes = tensors.pop("faiss_index", None)
        state = {name[len(_EMBEDDER):]: tensor for name, tensor in tensors.items()
                 if name.startswith(_EMBEDDER)}
        embedder_document = content["embedder"]
        threshold = fitted.get("match_threshold_")
        if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"match_threshold_ {threshold!r} is not a probability")
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{os.fspath(path)!r} holds an ImageNeighbors that cannot be rebuilt: "
                         f"{type(exc).__name__}: {exc}") from None
    embedder = embedder_from_content(ImageEmbedder, embedder_document, state, path,
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
    neighbors = cls(**params)
    neighbors._validate_params()
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    index = neighbors._build_index(embeddings, embedder,
                                   None if index_bytes is None else index_bytes.numpy())
    if neighbors.algorithm == "faiss" and (index.n_samples, index.n_features) != embeddings.shape:
        raise ValueError(
            f"{os.fspath(path)!r} holds a FAISS index of {index.n_samples} vectors of "
            f"dimension {index.n_features}, not the gallery's {embeddings.shape[0]} of "
            f"dimension {embeddings.shape[1]}.")
    neighbors.embedder_ = embedder
    neighbors.gallery_ = gallery
    neighbors.embeddings_ = embeddings
    neighbors.n_samples_fit_ = len(gallery)
    neighbors.embedding_dim_ = int(embeddings.shape[1])
    neighbors.match_threshold_ = None if threshold is None else float(threshold)
    neighbors.n_features_in_ = 1
    if fitted.get("feature_names_in_"):
        neighbors.feature_names_in_ = np.asarray(fitted["feature_names_in_"], dtype=object)
    neighbors._index = index
    return neighbors
