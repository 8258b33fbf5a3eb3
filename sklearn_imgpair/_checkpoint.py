"""read_checkpoint(): backbone weights files read once per process and file version."""

import functools
import os

from timm.models import load_state_dict

__all__ = ["read_checkpoint"]


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
