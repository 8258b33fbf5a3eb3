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


def _gallery_strings(gallery):
    """The gallery as JSON strings: only images that are files can travel in the file."""
    strings = []
    for row, image in enumerate(gallery):
        if not isinstance(image, str):
            raise ValueError(
                f"gallery_[{row}] is an image in memory ({type(image).__name__}); a model "
                "file keeps the gallery's paths, so only a gallery of image files can be "
                "saved. Write the images to files and fit on their paths.")
        strings.append(image)
    return strings


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
        "fitted": {"gallery_": _gallery_strings(neighbors.gallery_),
                   "match_threshold_": neighbors.match_threshold_,
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
        gallery = np.array(fitted["gallery_"], dtype=object).reshape(-1)
        embeddings = tensors.pop("embeddings_").numpy()
        index_bytes = tensors.pop("faiss_index", None)
        state = {name[len(_EMBEDDER):]: tensor for name, tensor in tensors.items()
                 if name.startswith(_EMBEDDER)}
        embedder_document = content["embedder"]
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
            f"{embeddings.shape[0]} vectors for {len(gallery)} gallery images.")
    neighbors = cls(**params)
    neighbors._validate_params()
    neighbors.embedder_ = embedder
    neighbors.gallery_ = gallery
    neighbors.embeddings_ = np.ascontiguousarray(embeddings, dtype=np.float32)
    neighbors.n_samples_fit_ = len(gallery)
    neighbors.embedding_dim_ = int(embeddings.shape[1])
    neighbors.match_threshold_ = fitted.get("match_threshold_")
    neighbors.n_features_in_ = 1
    neighbors._index = neighbors._build_index(
        None if index_bytes is None else index_bytes.numpy())
    return neighbors
