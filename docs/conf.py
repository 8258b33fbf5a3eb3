"""Sphinx configuration of the sklearn-imgpair documentation site.

Build it from the repository root, offline, with::

    pip install -e ".[docs]"
    sphinx-build -W --keep-going -b html docs docs/_build/html

The build executes the gallery (``examples/``) and the tutorial notebook on the
synthetic data set with a tiny Swin Transformer, and fails (through ``-W``) on a
public name without a reference page, a docstring that numpydoc rejects, a
gallery example without a figure, or a broken internal link or anchor
(``docs/_ext``).
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))

import sklearn_imgpair  # noqa: E402

# The gallery and the notebook run offline, small and fast: no download of pretrained
# weights or data; the notebook's tiny settings (the ones tests/test_notebook.py uses) and
# an empty scikit-learn data home, so that it always shows the synthetic data set.
# Set any of them before building to override.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SKLEARN_IMGPAIR_NOTEBOOK_TINY", "1")
os.environ.setdefault("SCIKIT_LEARN_DATA", tempfile.mkdtemp(prefix="sklearn-imgpair-docs-"))
# The notebook's kernel draws inline, ipykernel's default, which an inherited MPLBACKEND
# would override; sphinx-gallery chooses its own backend for the examples.
os.environ.pop("MPLBACKEND", None)

# -- Project -----------------------------------------------------------------------------

project = "sklearn-imgpair"
author = "the sklearn-imgpair developers"
copyright = "the sklearn-imgpair developers"
release = sklearn_imgpair.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "myst_nb",
    # Ours, in docs/_ext:
    "offline_intersphinx",
    "completeness",
    "internal_links",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "_intersphinx", "_ext", "_templates", "Thumbs.db", ".DS_Store",
                    "auto_examples/*.ipynb", "auto_examples/*.py", "auto_examples/*.zip"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"

# Every cross-reference must resolve. The only ones left unresolved, as plain text, are
# references into libraries whose intersphinx inventory is not cached in docs/_intersphinx:
# _ext/offline_intersphinx.py adds exactly those to nitpick_ignore_regex. Nothing else is
# ignored.
nitpicky = True
nitpick_ignore = []
nitpick_ignore_regex = []

# -- API reference: autosummary, autodoc and numpydoc, as scikit-learn does ----------------

autosummary_generate = True
autodoc_typehints = "none"
add_module_names = False
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# The build fails on these (with -W): a missing docstring, unknown or misordered sections,
# an undocumented or unknown parameter, a parameter without a description or a malformed
# "name : type" line.
numpydoc_validation_checks = {"GL06", "GL07", "GL08", "PR01", "PR02", "PR07", "PR10"}
# Methods that scikit-learn generates (metadata routing) keep scikit-learn's docstrings.
numpydoc_validation_exclude = {r"\.set_\w+_request$", r"\.get_metadata_routing$"}

# -- Intersphinx: only inventories cached in docs/_intersphinx, never the network ---------

intersphinx_mapping = {}  # filled by _ext/offline_intersphinx.py
intersphinx_timeout = 1

# -- Gallery: examples/ run at build time --------------------------------------------------

sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "gallery_order.ExampleOrder",
    "doc_module": ("sklearn_imgpair",),
    "backreferences_dir": "api/generated/backreferences",
    "download_all_examples": False,
    "remove_config_comments": True,
    "show_memory": False,
    "write_computation_times": False,
    "image_scrapers": ("matplotlib",),
}

# -- The tutorial notebook, executed by myst-nb --------------------------------------------

NOTEBOOK = ROOT / "notebooks" / "image_to_image_matching.ipynb"
(DOCS / "notebooks").mkdir(exist_ok=True)
shutil.copyfile(NOTEBOOK, DOCS / "notebooks" / NOTEBOOK.name)  # a build copy, git-ignored

nb_execution_mode = "force"
nb_execution_in_temp = True
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
# Library warnings on stderr (tqdm's about Jupyter widgets) are no part of the tutorial.
nb_output_stderr = "remove"
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# -- HTML ----------------------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"sklearn-imgpair {release}"
html_static_path = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_prev_next": False,
    "navbar_align": "left",
    "secondary_sidebar_items": ["page-toc"],
}
html_context = {"default_mode": "light"}
html_show_sourcelink = False


# -- Which members a class page shows ------------------------------------------------------

# Methods that skorch or torch define and users call. The other methods that skorch's nets
# and callbacks or torch's modules define, and our overrides of them (training hooks,
# ``on_epoch_end``, ``forward``), belong to skorch's and torch's own documentation.
ESTIMATOR_API = {"fit", "partial_fit", "predict", "predict_proba", "decision_function",
                 "score", "transform", "fit_transform", "get_params", "set_params"}


def _hook_names():
    from skorch import NeuralNetBinaryClassifier
    from skorch.callbacks import Callback
    from skorch.hf import AccelerateMixin
    from torch.nn import Module

    names = set()
    for klass in (NeuralNetBinaryClassifier, Callback, AccelerateMixin, Module):
        names.update(dir(klass))
    return names - ESTIMATOR_API


HOOK_NAMES = _hook_names()


def _defining_class(obj):
    """The class that defines a method or property, found from its qualified name."""
    function = getattr(obj, "fget", None) or getattr(obj, "__func__", None) or obj
    module = sys.modules.get(getattr(function, "__module__", None) or "")
    qualname = getattr(function, "__qualname__", "")
    if module is None or "." not in qualname or "<locals>" in qualname:
        return None
    owner = module
    for part in qualname.split(".")[:-1]:
        owner = getattr(owner, part, None)
    return owner if isinstance(owner, type) else None


def skip_member(app, what, name, obj, skip, options):
    """Show a class's own members and scikit-learn's, not skorch's, torch's or Python's."""
    if what == "module" or skip:
        return skip
    if name.endswith("_") and isinstance(obj, property):
        return False  # a fitted attribute (``classes_``), which the Attributes section links
    if name in HOOK_NAMES:
        return True
    owner = _defining_class(obj)
    # Data attributes, Python's own methods, and what other libraries define.
    return owner is None or not owner.__module__.startswith(("sklearn_imgpair", "sklearn."))


def setup(app):
    """Connect the member filter."""
    app.connect("autodoc-skip-member", skip_member)
