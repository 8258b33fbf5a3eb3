"""Build timm backbones from random, hub or local weights, with clear offline errors."""

import functools
import os
import socket
from numbers import Integral
from urllib.parse import urlparse

import huggingface_hub
import timm
import torch
from sklearn.utils._param_validation import Interval
from timm.data import resolve_model_data_config
from timm.models import load_state_dict

__all__ = ["BACKBONE_PARAMETER_CONSTRAINTS", "create_backbone", "expected_image_size",
           "read_checkpoint", "resolve_preprocessing"]

# Constraints of the parameters every estimator passes to create_backbone.
BACKBONE_PARAMETER_CONSTRAINTS = {
    "model_name": [str],
    "pretrained": ["boolean"],
    "weights_path": [str, os.PathLike, None],
    "model_kwargs": [dict, None],
    "image_size": [Interval(Integral, 8, None, closed="left"), None],
}

_HUB_PROBE_TIMEOUT = 3.0


def _hub_reachable(timeout=_HUB_PROBE_TIMEOUT):
    """Return True if the Hugging Face Hub answers a TCP connection quickly.

    huggingface_hub's offline mode (``HF_HUB_OFFLINE``, read by
    ``huggingface_hub.constants`` when it is imported) and its endpoint
    (``HF_ENDPOINT``) are the hub library's own settings.
    """
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        return False
    parsed = urlparse(huggingface_hub.constants.ENDPOINT)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _cached_weights_file(pretrained_cfg):
    """Return a local copy of a model's pretrained weights, or None.

    Looks in the Hugging Face cache (where timm stores hub downloads) and in
    torch hub's checkpoint folder (where timm stores URL downloads).
    """
    hf_hub_id = pretrained_cfg.get("hf_hub_id")
    if hf_hub_id:
        repo_id, _, revision = hf_hub_id.partition("@")
        candidates = [pretrained_cfg.get("hf_hub_filename"), "model.safetensors",
                      "pytorch_model.bin", "open_clip_model.safetensors"]
        for filename in filter(None, candidates):
            path = huggingface_hub.try_to_load_from_cache(repo_id, filename,
                                                          revision=revision or None)
            if isinstance(path, str) and os.path.isfile(path):
                return path
    url = pretrained_cfg.get("url")
    if url:
        path = os.path.join(
            torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(url).path)
        )
        if os.path.isfile(path):
            return path
    return None


def _offline_message(model_name):
    return (
        f"Pretrained weights for {model_name!r} are not in the local cache and the "
        "model hub cannot be reached (offline, or HF_HUB_OFFLINE is set). Pass "
        "weights_path='path/to/weights.safetensors' (or .pth) with a local "
        "checkpoint of this backbone, or pretrained=False to start from random "
        "weights."
    )


def create_backbone(model_name, *, pretrained=False, weights_path=None,
                    image_size=None, model_kwargs=None):
    """Create a timm feature extractor with no classification head.

    Parameters
    ----------
    model_name : str
        Any name :func:`timm.create_model` accepts, e.g.
        ``"swin_tiny_patch4_window7_224"``.
    pretrained : bool, default=False
        Load the model's pretrained weights: from the local cache if present,
        else from the model hub. Ignored when ``weights_path`` is given.
    weights_path : str or path-like, default=None
        Local ``.pth``, ``.bin`` or ``.safetensors`` checkpoint of the
        backbone. timm's checkpoint filter adapts it to ``image_size`` and
        drops a classifier head it may hold.
    image_size : int, default=None
        Input side length, passed to timm as ``img_size`` for models whose
        architecture depends on it (ViT, Swin, ...). None keeps the model's
        default.
    model_kwargs : dict, default=None
        Further keyword arguments for :func:`timm.create_model`, such as a
        small Swin configuration (``embed_dim``, ``depths``, ``num_heads``,
        ``window_size``, ``patch_size``).

    Returns
    -------
    backbone : torch.nn.Module
        A model whose forward returns pooled features of shape
        ``(n, backbone.num_features)``.

    Raises
    ------
    FileNotFoundError
        If ``weights_path`` does not exist.
    OSError
        If pretrained weights are neither cached nor downloadable; the message
        names the model and says to pass ``weights_path`` or
        ``pretrained=False``.
    ValueError
        If ``model_name`` is not a timm model.
    """
    if not timm.is_model(model_name):
        raise ValueError(
            f"Unknown timm model {model_name!r}; see timm.list_models() for the "
            "available names."
        )
    kwargs = dict(model_kwargs or {})
    kwargs["num_classes"] = 0
    if image_size is not None:
        kwargs["img_size"] = image_size

    weights_file = None
    if weights_path is not None:
        weights_file = os.fspath(weights_path)
        if not os.path.isfile(weights_file):
            raise FileNotFoundError(f"weights_path does not exist: {weights_file!r}.")
    elif pretrained:
        pretrained_cfg = timm.models.get_pretrained_cfg(model_name)
        if pretrained_cfg is None:
            raise ValueError(
                f"timm has no pretrained weights for {model_name!r}; pass weights_path "
                "or pretrained=False."
            )
        weights_file = _cached_weights_file(pretrained_cfg.to_dict())
        if weights_file is None and not _hub_reachable():
            raise OSError(_offline_message(model_name))
    try:
        if weights_file is not None:
            kwargs["pretrained_cfg_overlay"] = _weights_overlay(model_name, weights_file)
        backbone = _create_model(model_name,
                                 pretrained=weights_file is not None or pretrained, **kwargs)
    except OSError as exc:
        if weights_file is not None:
            raise OSError(f"Cannot load weights for {model_name!r} from "
                          f"{weights_file!r}: {exc}") from exc
        raise OSError(_offline_message(model_name) + f" (cause: {exc})") from exc
    config = getattr(backbone, "pretrained_cfg", None)
    if isinstance(config, dict) and config.pop("state_dict", None) is not None:
        # The model keeps its config: name the file, do not hold (and pickle) the weights.
        config["file"] = weights_file
    return backbone


def _weights_overlay(model_name, weights_file):
    """timm's ``pretrained_cfg_overlay`` that loads ``weights_file``.

    The state dict is read through :func:`read_checkpoint`, once per process,
    and handed to timm, which still applies the model's checkpoint filter
    (adapting it to ``img_size``) and drops a classifier head. Models with
    their own loader (timm's ``custom_load``) get the file name instead.
    """
    pretrained_cfg = timm.models.get_pretrained_cfg(model_name)
    if pretrained_cfg is not None and pretrained_cfg.custom_load:
        return {"file": weights_file}
    return {"state_dict": read_checkpoint(weights_file)}


def _create_model(model_name, **kwargs):
    try:
        return timm.create_model(model_name, **kwargs)
    except TypeError as exc:
        # Convolutional networks take any input size and have no img_size.
        if "img_size" in kwargs and "img_size" in str(exc):
            kwargs.pop("img_size")
            return timm.create_model(model_name, **kwargs)
        raise


def expected_image_size(model_name, image_size=None, model_kwargs=None):
    """The input side length a backbone will have, known before it is built.

    Parameters
    ----------
    model_name : str
        A timm model name.
    image_size : int, default=None
        The estimator's ``image_size``; wins when given.
    model_kwargs : dict, default=None
        May hold ``img_size``.

    Returns
    -------
    size : int or None
        None when only building the model tells (see
        :func:`resolve_preprocessing`, which has the last word).
    """
    size = image_size if image_size is not None else (model_kwargs or {}).get("img_size")
    if size is None:
        config = timm.models.get_pretrained_cfg(model_name) if timm.is_model(model_name) else None
        size = getattr(config, "input_size", None)
    if isinstance(size, (tuple, list)):
        size = size[-1] if size else None
    return int(size) if isinstance(size, Integral) else None


def resolve_preprocessing(backbone, image_size=None):
    """Return the input size and normalisation a backbone expects.

    Parameters
    ----------
    backbone : torch.nn.Module
        A timm model.
    image_size : int, default=None
        Overrides the model's own input size; timm's data config does not
        follow the ``img_size`` a model was created with.

    Returns
    -------
    config : dict
        ``{"image_size": int, "mean": tuple, "std": tuple}``.
    """
    config = resolve_model_data_config(backbone)
    size = image_size
    if size is None:
        # Models built with model_kwargs={"img_size": ...} know their own size.
        size = getattr(getattr(backbone, "patch_embed", None), "img_size", None)
        size = size[-1] if isinstance(size, (tuple, list)) else size
    if size is None:
        size = config["input_size"][-1]
    return {
        "image_size": int(size),
        "mean": tuple(float(v) for v in config["mean"]),
        "std": tuple(float(v) for v in config["std"]),
    }


def read_checkpoint(path):
    """Return the state dict of a weights file, read from disk once per process.

    A grid search fits many clones of one estimator, and on a cluster every
    worker process fits several of them; each would otherwise read (and for
    a ``.pth`` file, unpickle) the same checkpoint again. Files are keyed by
    absolute path, size and modification time, so an edited or replaced file
    is read again. The two most recently used files are kept.

    Parameters
    ----------
    path : str or path-like
        A ``.pth``, ``.bin`` or ``.safetensors`` checkpoint, read with timm's
        :func:`timm.models.load_state_dict` (EMA or ``state_dict`` entries
        unwrapped, a ``module.`` prefix removed).

    Returns
    -------
    state_dict : dict
        A new dict each call, holding the cached tensors: callers may add or
        remove keys, but must not modify the tensors in place.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    """
    path = os.path.abspath(os.fspath(path))
    stat = os.stat(path)
    return dict(_read_checkpoint(path, stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=2)
def _read_checkpoint(path, size, mtime_ns):
    # size and mtime_ns are part of the cache key only.
    return load_state_dict(path)
