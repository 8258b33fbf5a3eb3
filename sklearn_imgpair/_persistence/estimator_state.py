"""Estimator state in model files: parameters as JSON, network weights and settings.

What the schemas of :mod:`~sklearn_imgpair._persistence.classifier_file`,
:mod:`~sklearn_imgpair._persistence.embedder_file` and
:mod:`~sklearn_imgpair._persistence.neighbors_file` share, on top of the torch-free
:mod:`~sklearn_imgpair._io.container`. Parameters are encoded as JSON without
pickle: classes named in a file are looked up in a fixed table of known
classes, never imported, so a file cannot run code.
"""

import contextlib
import inspect
import os
import platform
import warnings

import numpy as np
import safetensors
import sklearn
import skorch
import timm
import torch
from skorch.dataset import Dataset, ValidSplit

from sklearn_imgpair._nn.augment import ViewAugmentation
from sklearn_imgpair._nn.device import loadable_device, loadable_precision
from sklearn_imgpair._nn.siamese import SiameseNet
from sklearn_imgpair._training.split import IdentityValidSplit
from sklearn_imgpair._version import __version__

__all__ = ["apply_network_options", "constructor_defaults", "decode_params", "decode_value",
           "encode_value", "library_versions", "load_module_state", "loadable_params",
           "network_options", "network_state", "persisted_params", "rebuilding"]

_TUPLE, _CLASS, _OBJECT = "__tuple__", "__class__", "__object__"


def _known_classes():
    """Classes a parameter may name: the library's, torch optimizers and losses."""
    classes = {SiameseNet, Dataset, torch.utils.data.DataLoader}
    # torch.nn.modules.loss._Loss: torch has no public base class of its losses
    # (test_persistence.py::test_torch_losses_and_optimizers_are_known_classes).
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
        reserved = {_TUPLE, _CLASS, _OBJECT} & set(value)
        if reserved or not all(isinstance(key, str) for key in value):
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
                             "the library's, torch optimizers and losses can be loaded.") from None
    if _OBJECT in value:
        try:
            cls, attributes = _OBJECTS[value[_OBJECT]]
        except (KeyError, TypeError):
            raise ValueError(f"the file names an unknown object {value[_OBJECT]!r}.") from None
        params = value.get("params")
        if not isinstance(params, dict) or not set(params) <= set(attributes):
            raise ValueError(f"the file holds bad parameters for {value[_OBJECT]}.")
        return cls(**{key: _decode(item) for key, item in params.items()})
    return {key: _decode(item) for key, item in value.items()}


def persisted_params(values, defaults):
    """Encode an estimator's parameter ``values`` as JSON-ready values.

    Parameters that cannot be written without pickle (a callback object, a
    ``RandomState``, a custom class, ...) are replaced by their default from
    ``defaults``, or left out when they have none, with one warning.

    Parameters
    ----------
    values : dict
        The parameters to save by name, as ``get_params(deep=False)`` gives
        them.
    defaults : dict
        Default value of each parameter that has one.

    Returns
    -------
    params : dict
    """
    params, replaced = {}, []
    for name, value in values.items():
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


def loadable_params(params, device):
    """:func:`decode_params`, with the saved device and precision made loadable here.

    ``device`` is the one asked of ``load`` (None keeps the saved one, or the
    CPU where that is missing); the precision falls back where the device
    cannot do it.
    """
    params = decode_params(params)
    params["device"] = loadable_device(params.get("device", "cpu"), device)
    params["precision"] = loadable_precision(params.get("precision", "fp32"), params["device"])
    return params


def library_versions():
    """The versions of the library and of what it runs on, for a file's JSON."""
    return {"sklearn_imgpair": __version__, "torch": torch.__version__,
            "timm": timm.__version__, "skorch": skorch.__version__,
            "scikit-learn": sklearn.__version__, "numpy": np.__version__,
            "safetensors": safetensors.__version__, "python": platform.python_version()}


# ----------------------------------------------------------------------
# the network
# ----------------------------------------------------------------------


# Settings of a SiameseNet that its state dict does not hold (``content["network"]``),
# and the values they had in files written before they were saved.
_NETWORK_OPTIONS_BEFORE = {"test_time_flip": False, "colour_share": 0.0}
# State that files written before it existed lack; the freshly built network's
# value is what those files meant (the head's link: linear).
_STATE_ADDED_LATER = ("head.link_atanh",)


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
    state : dict of str to ndarray
        The saved state dict, as the container reads it.
    ignore_missing : tuple of str, default=()
        Prefixes of the network's entries that the file need not hold (state
        of training-only parts such as the augmentation). State that files
        written before it existed lack is never required.

    Raises
    ------
    ValueError
        If names differ; ``RuntimeError`` (from torch) if shapes differ.
    """
    state = {name: torch.from_numpy(array) for name, array in state.items()}
    missing, unexpected = module.load_state_dict(state, strict=False)
    ignored = (*ignore_missing, *_STATE_ADDED_LATER)
    missing = [name for name in missing if not name.startswith(ignored)]
    if missing or unexpected:
        raise ValueError(f"the saved weights do not fit the network: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}.")


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


def network_state(module):
    """The state dict to save, as numpy arrays: all but the training-only augmentation."""
    return {name: tensor.detach().cpu().numpy() for name, tensor in module.state_dict().items()
            if not name.startswith("augment.")}
