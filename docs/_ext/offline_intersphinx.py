"""Intersphinx from inventories kept in ``docs/_intersphinx``, never from the network.

The build must work offline. For each library below, an inventory file
``docs/_intersphinx/<name>.inv`` in the repository turns the library's names into
links; without the file the mapping is left out, and references into that library
(and only into it) are left as plain text instead of failing the nitpicky build.

Run this file as a script, where the network is reachable, to fetch the missing
inventories (``--force`` fetches all of them again) and commit them::

    python docs/_ext/offline_intersphinx.py
"""

import builtins
import re
import sys
import urllib.request
from pathlib import Path

INVENTORY_DIR = Path(__file__).resolve().parents[1] / "_intersphinx"

# name: (documentation root, top-level modules whose references point there)
LIBRARIES = {
    "python": ("https://docs.python.org/3/", ()),
    "numpy": ("https://numpy.org/doc/stable/", ("numpy",)),
    "pandas": ("https://pandas.pydata.org/docs/", ("pandas",)),
    "sklearn": ("https://scikit-learn.org/stable/", ("sklearn",)),
    "skorch": ("https://skorch.readthedocs.io/en/stable/", ("skorch",)),
    "timm": ("https://huggingface.co/docs/timm/main/en/", ("timm",)),
    "torch": ("https://docs.pytorch.org/docs/stable/", ("torch",)),
    "torchvision": ("https://docs.pytorch.org/vision/stable/", ("torchvision",)),
    "PIL": ("https://pillow.readthedocs.io/en/stable/", ("PIL",)),
    "joblib": ("https://joblib.readthedocs.io/en/stable/", ("joblib",)),
    "onnxruntime": ("https://onnxruntime.ai/docs/api/python/", ("onnxruntime",)),
    "dask": ("https://docs.dask.org/en/stable/", ("dask", "distributed")),
    "accelerate": ("https://huggingface.co/docs/accelerate/main/en/", ("accelerate",)),
}


def _python_modules():
    """The standard library's modules and the builtins, the targets of the python inventory."""
    names = sorted(set(sys.stdlib_module_names) | set(dir(builtins)), key=len, reverse=True)
    return [name for name in names if not name.startswith("_")]


def inventory_path(name):
    """Return where the inventory of library ``name`` is cached."""
    return INVENTORY_DIR / f"{name}.inv"


def offline_mapping():
    """Split the libraries into those with a cached inventory and the others.

    Returns
    -------
    mapping : dict
        ``intersphinx_mapping`` entries for the libraries with a cached inventory.
    ignored : list of str
        Regular expressions of the reference targets of the other libraries.
    """
    mapping, ignored = {}, []
    for name, (url, modules) in LIBRARIES.items():
        path = inventory_path(name)
        if path.is_file():
            mapping[name] = (url, str(path))
        else:
            names = _python_modules() if name == "python" else modules
            alternatives = "|".join(re.escape(module) for module in names)
            ignored.append(rf"(?:{alternatives})(\..*)?")
    return mapping, ignored


def _modules_without_inventory():
    """The top-level modules of the libraries that have no cached inventory."""
    return {module for name, (_, modules) in LIBRARIES.items()
            if not inventory_path(name).is_file() for module in modules}


def _configure(app, config):
    mapping, ignored = offline_mapping()
    config.intersphinx_mapping = {**mapping, **config.intersphinx_mapping}
    config.nitpick_ignore_regex = list(config.nitpick_ignore_regex) + [
        (r"py:.*", target) for target in ignored]


def _plain_text_in_their_docstrings(app, env, node, contnode):
    """Leave as plain text a reference written in another library's inherited docstring.

    Inherited methods (``set_output`` of scikit-learn's mixins, say) keep their
    library's docstrings, whose references (``:ref:`` labels of its own
    documentation included) only its inventory resolves. autodoc names such a
    docstring ``docstring of sklearn.utils._set_output._SetOutputMixin.set_output``.
    """
    owner = (node.source or "").rpartition("docstring of ")[2]
    if owner.split(".")[0] in _modules_without_inventory():
        return contnode
    return None


def setup(app):
    """Register the offline intersphinx configuration with Sphinx."""
    # Before sphinx.ext.intersphinx normalises the mapping (priority 800).
    app.connect("config-inited", _configure, priority=400)
    app.connect("missing-reference", _plain_text_in_their_docstrings)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def fetch(force=False):
    """Download the inventories that are not cached yet (all of them with ``force``)."""
    INVENTORY_DIR.mkdir(exist_ok=True)
    for name, (url, _) in LIBRARIES.items():
        path = inventory_path(name)
        if path.is_file() and not force:
            continue
        try:
            with urllib.request.urlopen(url + "objects.inv", timeout=30) as response:
                path.write_bytes(response.read())
        except OSError as error:  # no inventory published there (timm's, accelerate's)
            print(f"{path.name}: not fetched from {url}objects.inv: {error}")
        else:
            print(f"{path.name}: {url}objects.inv")


if __name__ == "__main__":
    fetch(force="--force" in sys.argv[1:])
