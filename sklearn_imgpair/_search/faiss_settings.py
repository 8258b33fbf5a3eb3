"""The FAISS package and the settings of its indexes: import, threads, kinds, defaults, checks."""

import contextlib
import math
from numbers import Integral

import torch

__all__ = ["FAISS_PARAMS", "HNSW_DEFAULTS", "check_int", "faiss_threads", "import_faiss",
           "resolve_params"]

# The settings each kind of index takes, in ``params``.
FAISS_PARAMS = {
    "flat": (),
    "ivf": ("n_lists", "n_probe"),
    "hnsw": ("m", "ef_construction", "ef_search"),
}
HNSW_DEFAULTS = {"m": 32, "ef_construction": 200, "ef_search": 128}
# FAISS's k-means warns below 39 training points per centroid: the default
# number of lists never asks for more centroids than that.
_MIN_POINTS_PER_LIST = 39


def import_faiss():
    """Import the ``faiss`` module, or say how to install it.

    Returns
    -------
    faiss : module

    Raises
    ------
    ImportError
        If ``faiss`` cannot be imported.
    """
    try:
        import faiss
    except ImportError as exc:
        raise ImportError(
            "algorithm='faiss' needs the faiss package: pip install "
            "'sklearn-imgpair[faiss]' (or faiss-cpu)") from exc
    return faiss


@contextlib.contextmanager
def faiss_threads(faiss):
    """Run FAISS with as many threads as torch uses, restoring its setting afterwards.

    FAISS's thread count is the OpenMP setting of its own runtime, separate
    from torch's; searching with torch's count keeps a process that limited
    its threads (``torch.set_num_threads``) within that limit.
    """
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(torch.get_num_threads())
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def check_int(name, value, low, what="FAISS parameter "):
    """``value`` as an int of at least ``low``; errors name it ``what + repr(name)``."""
    if not isinstance(value, Integral) or isinstance(value, bool):
        raise TypeError(f"{what}{name!r} must be an int; got {type(value).__name__} "
                        f"{value!r}.")
    if value < low:
        raise ValueError(f"{what}{name!r} must be >= {low}; got {value}.")
    return int(value)


def resolve_params(index, params, n_samples):
    """The full settings of an index of kind ``index`` over ``n_samples`` vectors.

    Parameters
    ----------
    index : {"flat", "ivf", "hnsw"}
        Kind of index.
    params : dict or None
        Settings given by the user (a subset of ``FAISS_PARAMS[index]``).
    n_samples : int
        Gallery size.

    Returns
    -------
    params : dict
        Every setting of that kind, defaults filled in (see :class:`FaissIndex`).

    Raises
    ------
    ValueError
        If ``index`` is unknown, a key is not a setting of that kind, or a
        value is out of range.
    TypeError
        If a value is not an int.
    """
    if index not in FAISS_PARAMS:
        raise ValueError(f"index must be one of {sorted(FAISS_PARAMS)}; got {index!r}.")
    allowed = FAISS_PARAMS[index]
    params = {} if params is None else dict(params)
    unknown = sorted(map(str, set(params) - set(allowed)))
    if unknown:
        raise ValueError(f"Unknown FAISS parameter(s) {unknown} for index={index!r}; "
                         f"allowed: {list(allowed) or 'none'}.")
    if index == "ivf":
        if params.get("n_lists") is None:
            n_lists = min(round(4 * math.sqrt(n_samples)), n_samples // _MIN_POINTS_PER_LIST)
            n_lists = max(1, n_lists)
        else:
            n_lists = check_int("n_lists", params["n_lists"], 1)
            if n_lists > n_samples:
                raise ValueError(f"FAISS parameter 'n_lists' must be at most the gallery "
                                 f"size ({n_samples}); got {n_lists}.")
        if params.get("n_probe") is None:
            n_probe = 2 * math.ceil(math.sqrt(n_lists))
        else:
            n_probe = check_int("n_probe", params["n_probe"], 1)
        return {"n_lists": n_lists, "n_probe": min(n_probe, n_lists)}
    if index == "hnsw":
        resolved = {**HNSW_DEFAULTS,
                    **{key: value for key, value in params.items() if value is not None}}
        return {"m": check_int("m", resolved["m"], 2),
                "ef_construction": check_int("ef_construction",
                                              resolved["ef_construction"], 1),
                "ef_search": check_int("ef_search", resolved["ef_search"], 1)}
    return {}
