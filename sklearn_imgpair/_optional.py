"""import_optional(): the dependencies of the optional extras, imported on demand."""

import importlib

__all__ = ["DISTRIBUTED_EXTRA_HINT", "import_optional"]

DISTRIBUTED_EXTRA_HINT = 'pip install "sklearn-imgpair[distributed]"'


def import_optional(name, feature, *, extra="distributed"):
    """Import module ``name`` for ``feature``, or say how to install it.

    Parameters
    ----------
    name : str
        Module to import, e.g. ``"dask.distributed"``.
    feature : str
        What needs it, for the error message, e.g. ``"embed_dask"``.
    extra : str, default="distributed"
        The extra of ``setup.cfg`` that installs it, for the error message.

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
            f'{extra} extra: pip install "sklearn-imgpair[{extra}]"'
        ) from exc
