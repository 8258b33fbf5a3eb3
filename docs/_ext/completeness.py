"""Build checks: a reference page for every public name, a figure for every example.

Every gallery example and executed notebook must show a figure. The checks report
through Sphinx's logger, so that ``sphinx-build -W`` fails on them.
"""

import importlib
from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)

# The public modules whose ``__all__`` the API reference documents, name by name.
PUBLIC_MODULES = (
    "sklearn_imgpair",
    "sklearn_imgpair.datasets",
    "sklearn_imgpair.metrics",
    "sklearn_imgpair.onnx",
)
# Documented in the API reference's text instead of a page of its own.
NOT_A_PAGE = {"__version__"}

API_PAGES = "api/generated"


def public_names():
    """Return the fully qualified public names that need a reference page.

    Returns
    -------
    names : list of str
        ``module.name`` for each name in the ``__all__`` of each public module.
    """
    names = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        names += [f"{module_name}.{name}" for name in module.__all__ if name not in NOT_A_PAGE]
    return names


def missing_pages(srcdir):
    """Return the public names without a generated page under ``srcdir``.

    Parameters
    ----------
    srcdir : path-like
        The documentation's source folder.

    Returns
    -------
    missing : list of str
        Public names, in :func:`public_names` order, that have no page.
    """
    pages = Path(srcdir) / API_PAGES
    return [name for name in public_names() if not (pages / f"{name}.rst").is_file()]


def examples_without_figure(srcdir, gallery_conf):
    """Return the executed gallery examples that drew no figure.

    Parameters
    ----------
    srcdir : path-like
        The documentation's source folder.

    gallery_conf : dict
        sphinx-gallery's configuration.

    Returns
    -------
    missing : list of str
        File names of the ``plot_*.py`` examples without an image.
    """
    examples = Path(gallery_conf["examples_dirs"])
    if not examples.is_absolute():
        examples = Path(srcdir) / examples
    images = Path(srcdir) / gallery_conf["gallery_dirs"] / "images"
    return [script.name for script in sorted(examples.glob("plot_*.py"))
            if not list(images.glob(f"sphx_glr_{script.stem}_[0-9][0-9][0-9].png"))]


def notebooks_without_figure(outdir, docnames):
    """Return the built notebooks whose page shows no image.

    Parameters
    ----------
    outdir : path-like
        The folder the HTML builder wrote.

    docnames : iterable of str
        The documents that are notebooks.

    Returns
    -------
    missing : list of str
        Those of ``docnames`` whose HTML page holds no ``<img>``.
    """
    return [docname for docname in sorted(docnames)
            if "<img" not in (Path(outdir) / f"{docname}.html").read_text(encoding="utf-8")]


def _check_pages(app):
    for name in missing_pages(app.srcdir):
        logger.warning("public name %s has no page in the API reference (add it to "
                       "docs/api.rst)", name, type="imgpair", subtype="api")


def _check_figures(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    conf = app.config.sphinx_gallery_conf
    if str(conf.get("plot_gallery")) != "True":
        return  # examples not executed (-D plot_gallery=0)
    for name in examples_without_figure(app.srcdir, conf):
        logger.warning("gallery example %s drew no figure", name, type="imgpair",
                       subtype="gallery")


def _check_notebooks(app, exception):
    if (exception is not None or app.builder.format != "html"
            or app.config.nb_execution_mode == "off"):
        return
    notebooks = [docname for docname in app.env.found_docs
                 if app.env.doc2path(docname).suffix == ".ipynb"]
    for docname in notebooks_without_figure(app.outdir, notebooks):
        logger.warning("notebook %s shows no figure once executed", docname,
                       type="imgpair", subtype="notebook")


def setup(app):
    """Register the checks with Sphinx."""
    # After autosummary has generated the pages (it runs at the default priority, 500).
    app.connect("builder-inited", _check_pages, priority=900)
    app.connect("build-finished", _check_figures)
    app.connect("build-finished", _check_notebooks)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
