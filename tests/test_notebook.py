"""The tutorial notebook is committed clean and runs, offline, with tiny settings."""

from pathlib import Path

import numpy as np
import pytest

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


@pytest.mark.filterwarnings("ignore:FigureCanvasAgg is non-interactive")
def test_notebook_runs_offline_with_tiny_settings(notebook, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKLEARN_IMGPAIR_NOTEBOOK_TINY", "1")
    monkeypatch.delenv("SKLEARN_IMGPAIR_DOWNLOAD", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    namespace = {"__name__": "__main__"}
    try:
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type == "code":
                exec(compile(cell.source, f"{NOTEBOOK.name} cell {index}", "exec"), namespace)
        assert plt.get_fignums()  # the pairs and the ROC curve were drawn
    finally:
        plt.close("all")

    assert namespace["source"] == "synthetic"
    assert 0.0 <= namespace["score"] <= 1.0
    assert namespace["pred"].shape == (3,) and namespace["proba"].shape == (3, 2)
    dim = namespace["clf"].embedding_dim_
    assert namespace["embeddings_1"].shape == namespace["embeddings_2"].shape == (5, dim)
    assert namespace["search"].best_params_["logisticregression__C"] in (0.1, 1.0, 10.0)
    assert len(namespace["scores"]) == namespace["cv"].get_n_splits() >= 2
    assert np.isfinite(namespace["scores"]).all()
