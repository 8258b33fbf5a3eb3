"""The model file: tensors as safetensors, everything else as JSON, and no pickle.

One ``.safetensors`` file holds a fitted estimator. Its tensors are the
network's state dict; its metadata holds, as JSON, the estimator's class name,
parameters, fitted attributes, the format version, the library versions, and a
SHA-256 checksum of the JSON and every tensor. Reading a file parses JSON and
copies tensor bytes, nothing else: classes named in the file are looked up in
a fixed table of known classes, never imported, so a file cannot run code.
The save and load of both estimators live here too.
"""

import contextlib
import inspect
import json
import os
import platform
import struct
import warnings

import numpy as np
import safetensors
import safetensors.torch
import skorch
import sklearn
import timm
import torch
from skorch import NeuralNet, NeuralNetBinaryClassifier
from skorch.dataset import Dataset, ValidSplit
from skorch.history import History

from sklearn_imgpair._io.atomic import write_atomically
from sklearn_imgpair._io.device import loadable_device, loadable_precision, seeded
from sklearn_imgpair._io.embedding_cache import tensors_digest
from sklearn_imgpair._nn.augment import ViewAugmentation
from sklearn_imgpair._nn.siamese import SiameseNet, embedding_dim, siamese_net_kwargs
from sklearn_imgpair._training.split import IdentityValidSplit
from sklearn_imgpair._version import __version__

__all__ = ["FORMAT_VERSION", "embedder_content", "embedder_from_content", "load_classifier",
           "load_embedder", "read_model_file", "save_classifier", "save_embedder",
           "stored_estimator", "write_model_file"]

FORMAT_NAME = "sklearn-imgpair"
# 2: the head's link (the tensor head.link_atanh) and the network settings (JSON "network");
# files of version 1 load as a linear head without test-time flips.
# 3: the network setting "colour_share" (files of version 2 have no colour). A file is
# written in the oldest version that holds its content, so that a model without colour
# stays readable by readers of version 2.
FORMAT_VERSION = 3
_MAX_HEADER_BYTES = 100 * 2**20
_TUPLE, _CLASS, _OBJECT = "__tuple__", "__class__", "__object__"


def _known_classes():
    """Classes a parameter may name: the library's, torch optimizers and losses."""
    classes = {SiameseNet, Dataset, torch.utils.data.DataLoader}
    for namespace, base in ((torch.optim, torch.optim.Optimizer),
                            (torch.nn, torch.nn.modules.loss._Loss)):
        for value in vars(namespace).values():
            if isinstance(value, type) and issubclass(value, base) and value is not base:
                classes.add(value)
    return {f"{cls.__module__}.{cls.__qualname__}": cls for cls in classes}


_CLASSES = _known_classes()
# Names that files of earlier versions use for classes that have moved since;
# read, never written.
_FORMER_NAMES = {"sklearn_imgpair._module.SiameseNet": SiameseNet}
# Objects a parameter may hold: their class and the attributes that rebuild them.
_OBJECTS = {
    "skorch.dataset.ValidSplit": (ValidSplit, ("cv", "stratified", "random_state")),
    "sklearn_imgpair.IdentityValidSplit": (IdentityValidSplit, ("test_size", "random_state")),
    "sklearn_imgpair.ViewAugmentation": (
        ViewAugmentation, ("min_scale", "max_rotation", "flip", "brightness", "contrast")),
}


class _Unencodable(ValueError):
    pass


# ----------------------------------------------------------------------
# parameters <-> JSON
# ----------------------------------------------------------------------


def _encode(value):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (np.bool_, np.integer, np.floating)):
        return value.item()
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(item) for item in value]}
    if isinstance(value, list):
        return [_encode(item) for item in value]
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value) or {_TUPLE, _CLASS, _OBJECT} & set(value):
            raise _Unencodable(repr(value))
        return {key: _encode(item) for key, item in value.items()}
    if isinstance(value, type):
        for name, cls in _CLASSES.items():
            if cls is value:
                return {_CLASS: name}
        raise _Unencodable(f"the class {value.__module__}.{value.__qualname__}")
    for name, (cls, attributes) in _OBJECTS.items():
        if type(value) is cls:
            return {_OBJECT: name,
                    "params": {key: _encode(getattr(value, key)) for key in attributes}}
    raise _Unencodable(f"a {type(value).__name__}")


def _decode(value):
    if isinstance(value, list):
        return [_decode(item) for item in value]
    if not isinstance(value, dict):
        return value
    if _TUPLE in value:
        return tuple(_decode(item) for item in value[_TUPLE])
    if _CLASS in value:
        try:
            name = value[_CLASS]
            return _CLASSES[name] if name in _CLASSES else _FORMER_NAMES[name]
        except (KeyError, TypeError):
            raise ValueError(f"the file names an unknown class {value[_CLASS]!r}; only "
                             "the library's, torch optimizers and losses can be loaded.")
    if _OBJECT in value:
        try:
            cls, attributes = _OBJECTS[value[_OBJECT]]
        except (KeyError, TypeError):
            raise ValueError(f"the file names an unknown object {value[_OBJECT]!r}.")
        params = value.get("params")
        if not isinstance(params, dict) or not set(params) <= set(attributes):
            raise ValueError(f"the file holds bad parameters for {value[_OBJECT]}.")
        return cls(**{key: _decode(item) for key, item in params.items()})
    return {key: _decode(item) for key, item in value.items()}


def persisted_params(estimator, defaults, overrides=None, exclude=()):
    """Encode ``estimator.get_params(deep=False)`` as JSON-ready values.

    Parameters that cannot be written without pickle (a callback object, a
    ``RandomState``, a custom class, ...) are replaced by their default from
    ``defaults``, or left out when they have none, with one warning.

    Parameters
    ----------
    estimator : BaseEstimator
        The estimator to save.
    defaults : dict
        Default value of each parameter that has one.
    overrides : dict, default=None
        Values saved instead of the estimator's, without a warning.
    exclude : collection of str, default=()
        Parameters not saved at all.

    Returns
    -------
    params : dict
    """
    params, replaced = {}, []
    values = {**estimator.get_params(deep=False), **(overrides or {})}
    for name, value in values.items():
        if name in exclude:  # (skorch's private bookkeeping is no parameter: SkorchEstimatorMixin)
            continue
        try:
            params[name] = _encode(value)
        except _Unencodable as exc:
            replaced.append(f"{name} ({exc})")
            if name in defaults:
                params[name] = _encode(defaults[name])
    if replaced:
        warnings.warn(
            "These parameters cannot be saved without pickle and are saved with their "
            f"default values instead: {', '.join(replaced)}. Predictions are not affected; "
            "set them again before refitting the loaded estimator, or use pickle.",
            UserWarning, stacklevel=3)
    return params


def constructor_defaults(*classes):
    """Default values of the keyword arguments of ``classes``' ``__init__``, first wins."""
    defaults = {}
    for cls in reversed(classes):
        for name, parameter in inspect.signature(cls.__init__).parameters.items():
            if parameter.default is not inspect.Parameter.empty:
                defaults[name] = parameter.default
    return defaults


def encode_value(value):
    """Encode one value (a nested structure of numbers, strings, tuples, ...) as JSON."""
    try:
        return _encode(value)
    except _Unencodable as exc:
        raise ValueError(f"{exc} cannot be saved without pickle.") from None


def decode_value(value):
    """Rebuild a value encoded by :func:`encode_value`."""
    return _decode(value)


def decode_params(params):
    """Turn the ``params`` of a model file back into parameter values."""
    if not isinstance(params, dict):
        raise ValueError("the file's parameters are not a mapping.")
    return {name: _decode(value) for name, value in params.items()}


def encode_labels(classes):
    """Encode a ``classes_`` array as ``{"dtype": ..., "values": [...]}``."""
    values = [value.item() if isinstance(value, np.generic) else value for value in classes]
    if not all(isinstance(value, (bool, int, float, str)) for value in values):
        raise ValueError(f"classes_ {classes!r} cannot be saved without pickle: labels must "
                         "be numbers, booleans or strings.")
    dtype = "object" if classes.dtype.kind == "O" else classes.dtype.str
    return {"dtype": dtype, "values": values}


def decode_labels(encoded):
    """Rebuild a ``classes_`` array from :func:`encode_labels`'s output."""
    try:
        dtype, values = encoded["dtype"], encoded["values"]
        if dtype == "object":
            labels = np.empty(len(values), dtype=object)
            labels[:] = values
            return labels
        if np.dtype(dtype).kind not in "biufU":
            raise TypeError(dtype)
        return np.asarray(values, dtype=np.dtype(dtype))
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"the file holds bad class labels: {encoded!r}.") from None


# ----------------------------------------------------------------------
# the file
# ----------------------------------------------------------------------


def _versions():
    return {"sklearn_imgpair": __version__, "torch": torch.__version__,
            "timm": timm.__version__, "skorch": skorch.__version__,
            "scikit-learn": sklearn.__version__, "numpy": np.__version__,
            "safetensors": safetensors.__version__, "python": platform.python_version()}


def write_model_file(path, estimator_name, content, tensors):
    """Write an estimator's JSON ``content`` and ``tensors`` to ``path``, atomically.

    Parameters
    ----------
    path : str or path-like
        The file to write; an existing file is replaced only once the new one
        is complete.
    estimator_name : str
        Class name of the estimator, checked by :func:`read_model_file`.
    content : dict
        JSON-ready parameters and fitted attributes.
    tensors : dict of str to Tensor
        The network's state dict.

    Returns
    -------
    path : str
        The absolute path written.
    """
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    document = {"estimator": estimator_name, **content, "versions": _versions()}
    text = json.dumps(document, sort_keys=True)
    # Readers of version 2 know neither the setting nor SiameseNet's argument.
    colour = ("colour_share" in content.get("network", {})
              or "module__colour_share" in content.get("params", {}))
    version = FORMAT_VERSION if colour else 2
    metadata = {"format": FORMAT_NAME, "format_version": str(version),
                "content": text, "sha256": tensors_digest(text, tensors)}
    data = safetensors.torch.save(tensors, metadata=metadata)

    def write(partial):
        with open(partial, "wb") as file:
            file.write(data)

    return write_atomically(os.fspath(path), write)


def _read_metadata(data, path):
    if len(data) < 8:
        raise ValueError(f"{path!r} is not a sklearn-imgpair model file: it is "
                         f"{len(data)} bytes long (truncated or empty).")
    (size,) = struct.unpack("<Q", data[:8])
    if size > min(len(data) - 8, _MAX_HEADER_BYTES):
        raise ValueError(f"{path!r} is not a sklearn-imgpair model file, or it is truncated: "
                         "its header does not fit in the file.")
    try:
        header = json.loads(data[8:8 + size])
        metadata = header.get("__metadata__") or {}
    except (ValueError, AttributeError):
        raise ValueError(f"{path!r} is not a sklearn-imgpair model file: its header is "
                         "not valid safetensors JSON.") from None
    if metadata.get("format") != FORMAT_NAME:
        raise ValueError(f"{path!r} is not a sklearn-imgpair model file (a safetensors file "
                         "without the library's metadata, such as bare weights?). Bare "
                         "backbone weights go to the weights_path parameter.")
    return metadata


def stored_estimator(path):
    """The class name of the estimator a model file holds; only its header is read.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If it is not a model file of this library.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Model file not found: {path!r}.")
    if not os.path.isfile(path):
        raise ValueError(f"Model path is not a file: {path!r}.")
    with open(path, "rb") as file:
        head = file.read(8)
        size = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        data = head + file.read(min(size, _MAX_HEADER_BYTES))
    metadata = _read_metadata(data, path)
    try:
        return json.loads(metadata.get("content", ""))["estimator"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path!r} is corrupt: its content names no estimator.") from None


def read_model_file(path, estimator_name):
    """Read and verify a file written by :func:`write_model_file`.

    Parameters
    ----------
    path : str or path-like
        The model file.
    estimator_name : str
        The class name the file must hold.

    Returns
    -------
    content : dict
        The JSON content (parameters, fitted attributes, versions).
    tensors : dict of str to Tensor
        The state dict, on CPU.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a model file of this library, is truncated or
        corrupt, was modified after saving (checksum), holds another
        estimator, or was written by a newer format version.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Model file not found: {path!r}.")
    if not os.path.isfile(path):
        raise ValueError(f"Model path is not a file: {path!r}.")
    with open(path, "rb") as file:
        data = file.read()
    metadata = _read_metadata(data, path)
    try:
        version = int(metadata.get("format_version", ""))
    except ValueError:
        raise ValueError(f"{path!r} has no valid format version.") from None
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path!r} was written in model file format {version} by a newer sklearn-imgpair; "
            f"this version reads formats up to {FORMAT_VERSION}. Upgrade sklearn-imgpair.")
    try:
        tensors = safetensors.torch.load(data)
    except Exception as exc:  # safetensors raises its own error types for broken data
        raise ValueError(f"{path!r} is truncated or corrupt: its tensors cannot be read "
                         f"({exc}).") from None
    text = metadata.get("content", "")
    if tensors_digest(text, tensors) != metadata.get("sha256"):
        raise ValueError(f"{path!r} is corrupt or was modified after it was saved: its "
                         "checksum does not match its content.")
    try:
        content = json.loads(text)
    except ValueError:
        content = None
    if not isinstance(content, dict):
        raise ValueError(f"{path!r} is corrupt: its content is not a JSON object.")
    if content.get("estimator") != estimator_name:
        raise ValueError(f"{path!r} holds a {content.get('estimator')!r}, not a "
                         f"{estimator_name}; load it with {content.get('estimator')}.load.")
    return content, tensors


@contextlib.contextmanager
def rebuilding(path, fitted, image_size):
    """Wrap the rebuilding of an estimator from a model file.

    Any error in the block becomes a ``ValueError`` naming the file. Then the
    input size the rebuilt network got, ``image_size()``, must be the saved
    ``fitted["image_size_"]``.
    """
    try:
        yield
        if image_size() != fitted["image_size_"]:
            raise ValueError(f"the saved image size {fitted['image_size_']} does not match "
                             f"the network's ({image_size()}).")
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{os.fspath(path)!r} holds a model that cannot be rebuilt: "
                         f"{type(exc).__name__}: {exc}") from None


def load_module_state(module, state, ignore_missing=()):
    """Fill ``module`` with the saved ``state``; every saved tensor must fit.

    Parameters
    ----------
    module : torch.nn.Module
        The freshly built network.
    state : dict of str to Tensor
        The saved state dict.
    ignore_missing : tuple of str, default=()
        Prefixes of the network's entries that the file need not hold (state
        of training-only parts such as the augmentation).

    Raises
    ------
    ValueError
        If names differ; ``RuntimeError`` (from torch) if shapes differ.
    """
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [name for name in missing if not name.startswith(tuple(ignore_missing))]
    if missing or unexpected:
        raise ValueError(f"the saved weights do not fit the network: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}.")


def _json_scalar(value):
    """JSON form of the numpy scalars and other values a skorch history may hold."""
    if isinstance(value, np.generic):
        return value.item()
    return repr(value)


# Settings of a SiameseNet that its state dict does not hold (``content["network"]``),
# and the values they had in files written before they were saved.
_NETWORK_OPTIONS_BEFORE = {"test_time_flip": False, "colour_share": 0.0}
# State that files written before it existed lack; the freshly built network's
# value is what those files meant (the head's link: linear).
_STATE_ADDED_LATER = ("head.link_atanh",)


def network_options(module):
    """The settings of ``module`` that its weights do not record, for the file's JSON.

    Colour is written only when there is some: a file without it reads as before.
    """
    options = {"test_time_flip": bool(module.test_time_flip)}
    if module.colour_share:
        options["colour_share"] = float(module.colour_share)
    return options


def apply_network_options(module, options):
    """Give a rebuilt ``module`` the saved :func:`network_options` (None: an older file's)."""
    options = {**_NETWORK_OPTIONS_BEFORE, **(options or {})}
    if set(options) != set(_NETWORK_OPTIONS_BEFORE) or not isinstance(
            options["test_time_flip"], bool):
        raise ValueError(f"unknown network settings {options!r}.")
    module.test_time_flip = options["test_time_flip"]
    try:
        module.colour_share = options["colour_share"]
    except (TypeError, ValueError) as error:
        raise ValueError(f"unknown network settings {options!r}: {error}") from None


def _network_state(module):
    """The state dict to save: everything but the training-only augmentation."""
    return {name: tensor for name, tensor in module.state_dict().items()
            if not name.startswith("augment.")}


def save_classifier(clf, path):
    """Write a fitted :class:`ImagePairClassifier` to ``path`` (see its ``save``)."""
    if type(clf.module_) is not SiameseNet:
        raise ValueError(f"save supports the SiameseNet module, not "
                         f"{type(clf.module_).__name__}; use pickle for this model.")
    defaults = constructor_defaults(type(clf), NeuralNetBinaryClassifier, NeuralNet)
    params = clf.get_params(deep=False)
    content = {
        "params": persisted_params(clf, defaults, exclude=clf._not_saved,
                                   overrides={"device": params["device"] or "cpu"}),
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
    }
    return write_model_file(path, "ImagePairClassifier", content, _network_state(clf.module_))


def load_classifier(cls, path, *, device=None):
    """Read an :class:`ImagePairClassifier` written by :func:`save_classifier`.

    The saved architecture is built with random weights (no download, no
    weights file), then filled with the saved weights.
    """
    content, state = read_model_file(path, "ImagePairClassifier")
    fitted = content.get("fitted", {})
    with rebuilding(path, fitted, lambda: clf.image_size_):
        params = decode_params(content["params"])
        classes = decode_labels(fitted["classes_"])
        params["device"] = loadable_device(params.get("device", "cpu"), device)
        params["precision"] = loadable_precision(params.get("precision", "fp32"),
                                                 params["device"])
        clf = cls(**{**params, "pretrained": False, "weights_path": None})
        with seeded(0):
            clf.initialize()
        load_module_state(clf.module_, state, ignore_missing=("augment.", *_STATE_ADDED_LATER))
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


def embedder_content(embedder):
    """The JSON content and tensors of a fitted :class:`ImageEmbedder`."""
    content = {
        "params": persisted_params(embedder, constructor_defaults(type(embedder)),
                                   overrides={"classifier": None}),
        "architecture": encode_value(embedder._architecture),
        "network": network_options(embedder.module_),
        "fitted": {"image_size_": embedder.image_size_,
                   "n_features_in_": getattr(embedder, "n_features_in_", None),
                   "feature_names_in_": encode_value(
                       getattr(embedder, "feature_names_in_", np.array([])).tolist())},
    }
    return content, _network_state(embedder.module_)


def embedder_from_content(cls, content, state, path, *, device=None):
    """Rebuild an :class:`ImageEmbedder` from :func:`embedder_content`'s output."""
    fitted = content.get("fitted", {})
    with rebuilding(path, fitted, lambda: image_size):
        params = decode_params(content["params"])
        architecture = decode_value(content["architecture"])
        params["device"] = loadable_device(params.get("device", "cpu"), device)
        params["precision"] = loadable_precision(params.get("precision", "fp32"),
                                                 params["device"])
        embedder = cls(**params)
        embedder._validate_params()
        with seeded(0):
            kwargs, image_size = siamese_net_kwargs(**architecture, pretrained=False)
            module = SiameseNet(**kwargs)
        load_module_state(module, state, ignore_missing=_STATE_ADDED_LATER)
        apply_network_options(module, content.get("network"))
    names = fitted["feature_names_in_"]
    return embedder._set_network(module, image_size, architecture,
                                 np.asarray(names, dtype=object) if names else None,
                                 n_features_in=fitted.get("n_features_in_"))


def save_embedder(embedder, path):
    """Write a fitted :class:`ImageEmbedder` to ``path`` (see its ``save``)."""
    return write_model_file(path, type(embedder).__name__, *embedder_content(embedder))


def load_embedder(cls, path, *, device=None):
    """Read an :class:`ImageEmbedder` written by :func:`save_embedder`."""
    content, state = read_model_file(path, cls.__name__)
    return embedder_from_content(cls, content, state, path, device=device)
