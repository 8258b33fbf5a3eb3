"""import_optional(): the optional dependencies of the ``distributed`` extra, imported on demand."""

import importlib

__all__ = ["DISTRIBUTED_EXTRA_HINT", "import_optional"]

DISTRIBUTED_EXTRA_HINT = 'pip install "sklearn-imgpair[distributed]"'


def import_optional(name, feature):
    """Import module ``name`` for ``feature``, or say how to install it.

    Parameters
    ----------
    name : str
        Module to import, e.g. ``"dask.distributed"``.
    feature : str
        What needs it, for the error message, e.g. ``"embed_dask"``.

    Returns
    -------
    module : module

    Raises
    ------
    ImportError
        If the module cannot be imported; the message names the feature and
        the extra that installs it.
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(
            f"{feature} needs {name!r}, which is not installed ({exc}). Install the "
            f"distributed extra: {DISTRIBUTED_EXTRA_HINT}"
        ) from exc
