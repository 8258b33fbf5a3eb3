"""Grid search and embedding on a Dask cluster give what one process gives."""

import os

import numpy as np
import pandas as pd
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

_REASON = 'Dask tests need the distributed extra: pip install "sklearn-imgpair[distributed]"'
dd = pytest.importorskip("dask.dataframe", reason=_REASON)
distributed = pytest.importorskip("dask.distributed", reason=_REASON)
import joblib  # noqa: E402

from sklearn_imgpair import ImageEmbedder, PairFeatures, create_backbone, embed_dask  # noqa: E402
from sklearn_imgpair._nn.backbone import _read_checkpoint  # noqa: E402

from conftest import TINY_IMAGE_SIZE, TINY_SWIN, make_tiny_classifier  # noqa: E402

MODEL = "swin_tiny_patch4_window7_224"


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes on loopback."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            yield client


@pytest.fixture
def one_thread():
    """Run the single-process reference with the workers' one thread (OMP_NUM_THREADS=1)."""
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n_threads)


@pytest.fixture(scope="module")
def weights_path(tmp_path_factory):
    """A checkpoint of the tiny Swin, so that fits load weights from a file."""
    torch.manual_seed(1)
    backbone = create_backbone(MODEL, image_size=TINY_IMAGE_SIZE, model_kwargs=dict(TINY_SWIN))
    path = tmp_path_factory.mktemp("weights") / "tiny_swin.pth"
    torch.save(backbone.state_dict(), path)
    return str(path)


def _checkpoint_reads():
    """(files read from disk, reads served from memory) in this process."""
    info = _read_checkpoint.cache_info()
    return info.misses, info.hits


def _clear_checkpoints():
    _read_checkpoint.cache_clear()


def _assert_read_once_per_worker(reads, n_fits):
    """``reads`` maps workers to ``_checkpoint_reads()``; every fit built a backbone."""
    assert sum(misses + hits for misses, hits in reads.values()) == n_fits
    assert [misses for misses, hits in reads.values()] == [
        min(misses + hits, 1) for misses, hits in reads.values()]


def test_grid_search_on_dask_matches_one_process(client, image_pairs, weights_path, one_thread):
    X, y = image_pairs
    clf = make_tiny_classifier(weights_path=weights_path, pretrained=True, max_epochs=1,
                               pair_mining="none", train_split=None)
    grid = {"lr": [1e-3, 1e-2]}
    local = GridSearchCV(clf, grid, cv=2, scoring="roc_auc", n_jobs=1).fit(X, y)

    client.run(_clear_checkpoints)
    remote = GridSearchCV(clf, grid, cv=2, scoring="roc_auc")
    with joblib.parallel_config(backend="dask"):
        remote.fit(X, y)

    assert remote.best_params_ == local.best_params_
    for key in ("split0_test_score", "split1_test_score", "mean_test_score"):
        assert_allclose(remote.cv_results_[key], local.cv_results_[key], rtol=1e-5)
    assert_allclose(remote.predict_proba(X[:20]), local.predict_proba(X[:20]), rtol=1e-5)
    # 4 fits on 2 workers (so at least one fitted twice or more); every
    # worker that fitted read the checkpoint from disk once.
    _assert_read_once_per_worker(client.run(_checkpoint_reads), n_fits=4)


def test_pipeline_grid_search_on_dask_matches_one_process(client, image_pairs, weights_path):
    X, y = image_pairs
    embedder = ImageEmbedder(weights_path=weights_path, image_size=TINY_IMAGE_SIZE,
                             model_kwargs=dict(TINY_SWIN))
    pipeline = make_pipeline(PairFeatures(embedder), LogisticRegression(max_iter=1000))
    grid = {"logisticregression__C": [0.1, 1.0, 10.0]}
    local = GridSearchCV(pipeline, grid, cv=3, scoring="roc_auc", n_jobs=1).fit(X, y)

    client.run(_clear_checkpoints)
    remote = GridSearchCV(pipeline, grid, cv=3, scoring="roc_auc")
    with joblib.parallel_config(backend="dask"):
        remote.fit(X, y)

    assert remote.best_params_ == local.best_params_
    assert_allclose(remote.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"],
                    rtol=1e-5)
    _assert_read_once_per_worker(client.run(_checkpoint_reads), n_fits=9)


# ----------------------------------------------------------------------
# embed_dask
# ----------------------------------------------------------------------

_N_UNPICKLED = 0


class CountingEmbedder(ImageEmbedder):
    """An ImageEmbedder that counts how often this process unpickles one."""

    def __setstate__(self, state):
        global _N_UNPICKLED
        _N_UNPICKLED += 1
        super().__setstate__(state)


def _n_unpickled():
    return _N_UNPICKLED


@pytest.fixture(scope="module")
def fitted_embedder():
    return CountingEmbedder(pretrained=False, image_size=TINY_IMAGE_SIZE,
                            model_kwargs=dict(TINY_SWIN), cache=False).fit()


def test_embed_dask_matches_transform_in_order(client, fitted_embedder, synthetic_pairs):
    # Repeated paths, in an order that is not sorted, in more partitions than workers.
    paths = pd.concat([synthetic_pairs[1]["Image1"], synthetic_pairs[1]["Image2"]],
                      ignore_index=True)
    series = dd.from_pandas(paths, npartitions=6)
    embeddings = embed_dask(fitted_embedder, series, client=client)

    assert list(embeddings.columns) == list(fitted_embedder.get_feature_names_out())
    result = embeddings.compute()
    assert_array_equal(result.index, paths.index)
    assert result.dtypes.unique().tolist() == [np.float32]
    assert_allclose(result.to_numpy(), fitted_embedder.transform(paths), rtol=1e-5, atol=1e-6)
    # The network went to each worker once, not once per partition.
    assert sorted(client.run(_n_unpickled).values()) == [1, 1]


def test_embed_dask_takes_a_one_column_frame(client, fitted_embedder, synthetic_pairs):
    frame = synthetic_pairs[1][["Image1"]].iloc[:10]
    embeddings = embed_dask(fitted_embedder, dd.from_pandas(frame, npartitions=3))
    assert_allclose(embeddings.compute().to_numpy(), fitted_embedder.transform(frame),
                    rtol=1e-5, atol=1e-6)


def test_embed_dask_rejects_bad_input(fitted_embedder, synthetic_pairs):
    frame = synthetic_pairs[1]
    with pytest.raises(TypeError, match="paths must be a dask Series.*got Series"):
        embed_dask(fitted_embedder, frame["Image1"])
    with pytest.raises(ValueError, match="paths must have one column of image paths; got 3"):
        embed_dask(fitted_embedder, dd.from_pandas(frame, npartitions=1))
    with pytest.raises(NotFittedError):
        embed_dask(ImageEmbedder(), dd.from_pandas(frame["Image1"], npartitions=1))


def test_embed_dask_needs_a_client(fitted_embedder, synthetic_pairs, monkeypatch):
    def no_client():
        raise ValueError("No clients found")

    monkeypatch.setattr("distributed.default_client", no_client)
    series = dd.from_pandas(synthetic_pairs[1]["Image1"], npartitions=1)
    with pytest.raises(ValueError, match="needs a running dask.distributed Client"):
        embed_dask(fitted_embedder, series)


def test_worker_processes_are_separate(client):
    assert os.getpid() not in client.run(os.getpid).values()
