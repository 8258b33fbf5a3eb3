"""The model file of ImageEmbedder: its schema, its versions, its save and load.

The file is a :mod:`~sklearn_imgpair._io.container` whose arrays are the
network's state dict and whose JSON document holds:

``params``
    The parameters, ``classifier`` saved as None (the weights copied from it
    are in the file).
``architecture``
    What rebuilds the network without download: ``model_name``,
    ``model_kwargs`` and ``image_size`` (:meth:`ImageEmbedder._to_file`).
``network``
    The network's settings that its weights do not record
    (:func:`~sklearn_imgpair._persistence.estimator_state.network_options`).
``fitted``
    ``image_size_``, ``n_features_in_`` and ``feature_names_in_``.
``versions``
    The versions of the library and of what it runs on.

An :class:`ImageNeighbors` file holds the same document under ``"embedder"``
(:func:`embedder_content`, :func:`embedder_from_content`).

Versions of the schema, numbered as the classifier's:

1. The first.
2. The head's link (the tensor ``head.link_atanh``) and ``network``; files
   of version 1 load as a linear head without test-time flips.
3. The network setting ``colour_share`` (an embedder copied from a
   classifier with colour); files of version 2 have no colour.
4. ``precision="auto"`` or ``batch_size="auto"``, resolved on the machine
   that loads the file; files of earlier versions hold explicit values.

A file is written in the oldest version that holds its content.
"""

import numpy as np

from sklearn_imgpair._io.container import read_container, write_container
from sklearn_imgpair._nn.device import seeded
from sklearn_imgpair._nn.siamese import SiameseNet, siamese_net_kwargs
from sklearn_imgpair._persistence.estimator_state import (
    apply_network_options,
    constructor_defaults,
    decode_value,
    encode_value,
    library_versions,
    load_module_state,
    loadable_params,
    network_options,
    network_state,
    persisted_params,
    rebuilding,
)

__all__ = ["EMBEDDER_FORMAT_VERSION", "embedder_content", "embedder_format_version",
           "embedder_from_content", "load_embedder", "save_embedder"]

EMBEDDER_FORMAT_VERSION = 4


def embedder_format_version(content):
    """The oldest version that holds an embedder's ``content``.

    4 with a setting ``"auto"``, 3 with colour, else 2.
    """
    if "auto" in (content["params"].get("precision"), content["params"].get("batch_size")):
        return 4
    return 3 if "colour_share" in content["network"] else 2


def embedder_content(embedder):
    """The JSON content and arrays of a fitted :class:`ImageEmbedder`."""
    params = {**embedder.get_params(deep=False), "classifier": None}
    content = {
        "params": persisted_params(params, constructor_defaults(type(embedder))),
        "architecture": encode_value(embedder._to_file()["architecture"]),
        "network": network_options(embedder.module_),
        "fitted": {"image_size_": embedder.image_size_,
                   "n_features_in_": getattr(embedder, "n_features_in_", None),
                   "feature_names_in_": encode_value(
                       getattr(embedder, "feature_names_in_", np.array([])).tolist())},
    }
    return content, network_state(embedder.module_)


def embedder_from_content(cls, content, state, path, *, device=None):
    """Rebuild an :class:`ImageEmbedder` from :func:`embedder_content`'s output."""
    fitted = content.get("fitted", {})
    with rebuilding(path, fitted, lambda: image_size):
        params = loadable_params(content["params"], device)
        architecture = decode_value(content["architecture"])
        with seeded(0):
            kwargs, image_size = siamese_net_kwargs(**architecture, pretrained=False)
            module = SiameseNet(**kwargs)
        load_module_state(module, state)
        apply_network_options(module, content.get("network"))
        names = fitted["feature_names_in_"]
        embedder = cls._from_file(params, module=module, image_size=image_size,
                                  architecture=architecture,
                                  feature_names_in=names or None,
                                  n_features_in=fitted.get("n_features_in_"))
    return embedder


def save_embedder(embedder, path):
    """Write a fitted :class:`ImageEmbedder` to ``path`` (see its ``save``)."""
    content, arrays = embedder_content(embedder)
    content["versions"] = library_versions()
    return write_container(path, type(embedder).__name__, content, arrays,
                           format_version=embedder_format_version(content))


def load_embedder(cls, path, *, device=None):
    """Read an :class:`ImageEmbedder` written by :func:`save_embedder`."""
    content, state = read_container(path, cls.__name__, max_version=EMBEDDER_FORMAT_VERSION)
    return embedder_from_content(cls, content, state, path, device=device)
