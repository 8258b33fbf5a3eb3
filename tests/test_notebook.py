"""The tutorial notebook is committed clean and runs, offline, on both of its data sources."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from sklearn.metrics import roc_auc_score

from sklearn_imgpair import ImageNeighbors, find_duplicates
from sklearn_imgpair.datasets import fetch_stanford_online_products
from sklearn_imgpair.metrics import mean_average_precision_at_r, recall_at_k

from conftest import go_offline, write_sop_zip

nbformat = pytest.importorskip("nbformat", reason="the notebook tests need nbformat")
matplotlib = pytest.importorskip("matplotlib", reason="the notebook draws with matplotlib")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "image_to_image_matching.ipynb"


@pytest.fixture(scope="module")
def notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def test_notebook_is_committed_without_outputs(notebook):
    nbformat.validate(notebook)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells
    for cell in code_cells:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
    for cell in notebook.cells:
        assert not cell.get("attachments") and "widgets" not in notebook.metadata


def _sop_rows(categories, products, n_views, rng):
    """Pairs as in SOP: views of one product match; negatives pair any two products."""
    views = {(category, product): [f"{category}_final/{product}_{view}.png"
                                   for view in range(n_views)]
             for category, product in zip(categories, products)}
    rows = []
    for key, images in views.items():
        rows += [(a, b, 1) for i, a in enumerate(images) for b in images[i + 1:]]
        others = [image for other, images_ in views.items() if other != key
                  for image in images_]
        for image in images:  # each view is the first image of one non-matching pair
            rows.append((image, others[rng.integers(len(others))], 0))
    return rows


@pytest.fixture(scope="module")
def sop_home(tmp_path_factory):
    """A scikit-learn data home holding a small fake SOP, fetched from a local zip."""
    folder = tmp_path_factory.mktemp("fake_sop")
    rng = np.random.default_rng(0)
    splits = {
        "train": _sop_rows(["bicycle", "kettle"] * 4, range(100, 108), 3, rng),
        "test": _sop_rows(["mug", "sofa", "mug"], range(200, 203), 3, rng),
    }
    archive = write_sop_zip(folder / "Stanford_Online_Products.zip", splits, image_size=16)
    home = folder / "scikit_learn_data"
    fetch_stanford_online_products(data_home=home, url=archive.as_uri(), verbose=False)
    return home, splits


def _run(notebook, monkeypatch, data_home):
    """Execute every code cell; return the namespace and the number of open figures."""
    monkeypatch.setenv("SKLEARN_IMGPAIR_NOTEBOOK_TINY", "1")
    monkeypatch.delenv("SKLEARN_IMGPAIR_DOWNLOAD", raising=False)
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(data_home))
    go_offline(monkeypatch)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.close("all")
    namespace = {"__name__": "__main__"}
    try:
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type == "code":
                exec(compile(cell.source, f"{NOTEBOOK.name} cell {index}", "exec"), namespace)
        return namespace, len(plt.get_fignums())
    finally:
        plt.close("all")


def _images(X, rows):
    return set(np.ravel(X.iloc[rows].to_numpy()))


def _check_results(ns, n_figures):
    """What every run must show, whichever the data."""
    # A matching pair, a non-matching pair, the ROC curve, queries and their matches.
    assert n_figures == 4
    clf, X_test, y_test = ns["clf"], ns["X_test"], ns["y_test"]
    assert len(clf.history) == 2  # the tiny settings: two epochs
    match = clf.predict_proba(X_test)[:, list(clf.classes_).index(ns["match_label"])]
    assert isinstance(ns["score"], float)
    assert ns["score"] == pytest.approx(roc_auc_score(y_test == ns["match_label"], match))
    assert_allclose(ns["match_proba"], match, rtol=1e-5)

    assert ns["pred"].tolist() == clf.predict(X_test.head(3)).tolist()
    assert_allclose(ns["proba"], clf.predict_proba(X_test.head(3)), rtol=1e-5)
    dim = clf.embedding_dim_
    assert ns["embeddings_1"].shape == ns["embeddings_2"].shape == (5, dim)
    assert_allclose(np.linalg.norm(ns["embeddings_1"], axis=1), 1.0, rtol=1e-5)

    search, cv = ns["search"], ns["cv"]
    assert [params["logisticregression__C"] for params in search.cv_results_["params"]] == [
        0.1, 1.0, 10.0]  # one row per candidate
    assert search.n_splits_ == cv.get_n_splits() == min(3, ns["n_groups"]) >= 2
    assert len(ns["scores"]) == cv.get_n_splits() and np.isfinite(ns["scores"]).all()
    _check_search(ns)


def _check_search(ns):
    """The catalogue search: every test image once, its product, scores of its ranking."""
    clf, test_data, catalogue = ns["clf"], ns["test_data"], ns["catalogue"]
    assert sorted(catalogue) == sorted(set(test_data["Image1"]) | set(test_data["Image2"]))
    products = ns["products"]
    assert len(set(products)) < len(catalogue)  # several views of a product
    neighbors = ns["neighbors"]
    assert neighbors.gallery_.tolist() == list(catalogue)
    # The saved, grown search equals one fit on the whole catalogue, and its file holds it all.
    fitted = ImageNeighbors(classifier=clf).fit(catalogue)
    assert_allclose(neighbors.embeddings_, fitted.embeddings_, atol=1e-6)
    assert ImageNeighbors.load(ns["index_path"]).gallery_.tolist() == list(catalogue)
    distances, ranked = neighbors.kneighbors(n_neighbors=ns["n_neighbors"])
    assert_allclose(ns["match_proba_ranked"], neighbors.match_proba(distances), rtol=1e-6)
    assert (ns["ranked"] == ranked).all()
    assert (ranked != np.arange(len(catalogue))[:, None]).all()  # each image left out
    for k, value in ns["recall"].items():
        assert value == recall_at_k(products, products, ranked, k=k, exclude_self=True)
    assert 1 in ns["recall"]
    map_at_r = mean_average_precision_at_r(products, products, ranked, exclude_self=True)
    assert ns["map_at_r"] == map_at_r
    expected = find_duplicates(catalogue, clf, n_neighbors=10)
    pd.testing.assert_frame_equal(ns["duplicates"], expected)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:FigureCanvasAgg is non-interactive")
def test_notebook_runs_on_synthetic_data_without_a_cached_sop(notebook, tmp_path,
                                                               monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ns, n_figures = _run(notebook, monkeypatch, tmp_path / "empty_data_home")
    assert "Stanford Online Products is not cached here" in capsys.readouterr().out
    assert ns["source"] == "synthetic" and ns["sop"] is None
    _check_results(ns, n_figures)
    # Negatives within categories: groups of pairs that share no image.
    assert ns["grouping"] == "shared images"
    X, y, groups = ns["X_train"], ns["y_train"], ns["groups"]
    for train, valid in ns["cv"].split(X, y, groups):
        assert not _images(X, train) & _images(X, valid)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:FigureCanvasAgg is non-interactive")
@pytest.mark.filterwarnings("ignore:One group holds")
def test_notebook_runs_on_a_cached_sop_copy(notebook, sop_home, tmp_path, monkeypatch):
    home, splits = sop_home
    monkeypatch.chdir(tmp_path)
    ns, n_figures = _run(notebook, monkeypatch, home)
    assert ns["source"] == "sop"
    assert len(ns["train_data"]) == len(splits["train"])
    assert len(ns["test_data"]) == len(splits["test"])
    assert ns["train_data"]["Image1"].str.startswith(str(home)).all()
    _check_results(ns, n_figures)
    # Negatives between any products: grouped by the first image's product instead, so
    # the matching pairs of a product never straddle a split.
    assert ns["grouping"] == "first image's product"
    X, y, groups = ns["X_train"], ns["y_train"], ns["groups"]
    is_match = (y == ns["match_label"]).to_numpy()
    for train, valid in ns["cv"].split(X, y, groups):
        assert not (_images(X, train[is_match[train]])
                    & _images(X, valid[is_match[valid]]))
