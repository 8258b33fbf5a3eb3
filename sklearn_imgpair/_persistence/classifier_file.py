"""The model file of ImagePairClassifier: its schema, its versions, its save and load.

The file is a :mod:`~sklearn_imgpair._io.container` whose arrays are the
network's state dict (without the training-only augmentation) and whose JSON
document holds:

``params``
    The parameters (:meth:`ImagePairClassifier._to_file`), encoded by
    :func:`~sklearn_imgpair._persistence.estimator_state.persisted_params`.
``fitted``
    ``classes_`` (with its dtype), ``image_size_``, ``embedding_dim_``,
    ``n_features_in_`` and ``feature_names_in_``.
``network``
    The network's settings that its weights do not record
    (:func:`~sklearn_imgpair._persistence.estimator_state.network_options`).
``preprocessing``
    The input size and the normalisation's mean and std, for readers of the
    file that do not rebuild the network.
``history``
    skorch's training history.
``versions``
    The versions of the library and of what it runs on.

Versions of the schema:

1. The first.
2. The head's link (the tensor ``head.link_atanh``) and ``network``; files
   of version 1 load as a linear head without test-time flips.
3. The network setting ``colour_share`` (``module__colour_share``); files of
   version 2 have no colour.
4. ``precision="auto"``, resolved on the machine that loads the file;
   files of earlier versions hold an explicit precision.

A file is written in the oldest version that holds its content, so that a
model without colour and with an explicit precision stays readable by
readers of version 2.
"""

import json

import numpy as np
from skorch import NeuralNet, NeuralNetBinaryClassifier
from skorch.history import History

from sklearn_imgpair._io.container import (
    decode_labels,
    encode_labels,
    read_container,
    write_container,
)
from sklearn_imgpair._nn.device import seeded
from sklearn_imgpair._nn.siamese import SiameseNet, embedding_dim
from sklearn_imgpair._persistence.estimator_state import (
    apply_network_options,
    constructor_defaults,
    encode_value,
    library_versions,
    load_module_state,
    loadable_params,
    network_options,
    network_state,
    persisted_params,
    rebuilding,
)

__all__ = ["CLASSIFIER_FORMAT_VERSION", "load_classifier", "save_classifier"]

CLASSIFIER_FORMAT_VERSION = 4
_ESTIMATOR = "ImagePairClassifier"


def _format_version(content):
    """The oldest version that holds ``content``: 4 with "auto", 3 with colour, else 2."""
    if content["params"].get("precision") == "auto":
        return 4
    colour = ("colour_share" in content["network"]
              or "module__colour_share" in content["params"])
    return 3 if colour else 2


def _json_scalar(value):
    """JSON form of the numpy scalars and other values a skorch history may hold."""
    if isinstance(value, np.generic):
        return value.item()
    return repr(value)


def save_classifier(clf, path):
    """Write a fitted :class:`ImagePairClassifier` to ``path`` (see its ``save``)."""
    if type(clf.module_) is not SiameseNet:
        raise ValueError(f"save supports the SiameseNet module, not "
                         f"{type(clf.module_).__name__}; use pickle for this model.")
    defaults = constructor_defaults(type(clf), NeuralNetBinaryClassifier, NeuralNet)
    content = {
        "params": persisted_params(clf._to_file(), defaults),
        "fitted": {"classes_": encode_labels(clf.classes_),
                   "image_size_": clf.image_size_,
                   "embedding_dim_": clf.embedding_dim_,
                   "n_features_in_": 2,
                   "feature_names_in_": encode_value(
                       getattr(clf, "feature_names_in_", np.array([])).tolist())},
        "network": network_options(clf.module_),
        "preprocessing": {"image_size": clf.image_size_,
                          "mean": clf.module_.mean.reshape(-1).tolist(),
                          "std": clf.module_.std.reshape(-1).tolist()},
        "history": json.loads(json.dumps(clf.history_.to_list(), default=_json_scalar)),
        "versions": library_versions(),
    }
    return write_container(path, _ESTIMATOR, content, network_state(clf.module_),
                           format_version=_format_version(content))


def load_classifier(cls, path, *, device=None):
    """Read an :class:`ImagePairClassifier` written by :func:`save_classifier`.

    The saved architecture is built with random weights (no download, no
    weights file), then filled with the saved weights.
    """
    content, state = read_container(path, _ESTIMATOR, max_version=CLASSIFIER_FORMAT_VERSION)
    fitted = content.get("fitted", {})
    with rebuilding(path, fitted, lambda: clf.image_size_):
        params = loadable_params(content["params"], device)
        classes = decode_labels(fitted["classes_"])
        clf = cls(**{**params, "pretrained": False, "weights_path": None})
        with seeded(0):
            clf.initialize()
        load_module_state(clf.module_, state, ignore_missing=("augment.",))
        apply_network_options(clf.module_, content.get("network"))
        clf.embedding_dim_ = embedding_dim(clf.module_)
    clf.pretrained = params.get("pretrained", True)
    clf.weights_path = params.get("weights_path")
    clf.classes_ = classes
    clf.n_features_in_ = fitted["n_features_in_"]
    if fitted.get("feature_names_in_"):
        clf.feature_names_in_ = np.asarray(fitted["feature_names_in_"], dtype=object)
    clf.history_ = History(content.get("history") or [])
    clf.module_.eval()
    return clf
