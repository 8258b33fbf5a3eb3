"""The estimators inside scikit-learn's model selection and pipeline machinery."""

import itertools

import numpy as np
import pytest
from scipy.stats import loguniform
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import (
    GridSearchCV,
    GroupKFold,
    KFold,
    RandomizedSearchCV,
    StratifiedKFold,
    cross_val_score,
)
from sklearn.pipeline import make_pipeline

from sklearn_imgpair import ImageEmbedder, PairFeatures, pair_groups
from sklearn_imgpair._io import embedding_cache as _cache
from sklearn_imgpair._nn import siamese as _siamese

from conftest import TINY_IMAGE_SIZE, TINY_SWIN


def _tiny_embedder(**params):
    return ImageEmbedder(pretrained=False, image_size=TINY_IMAGE_SIZE,
                         model_kwargs=dict(TINY_SWIN), **params)


@pytest.fixture(scope="module")
def grouped_pairs(synthetic_pairs):
    """Pairs only within groups of two products, so that images form 6 components."""
    train, test = synthetic_pairs
    columns = ["Image1", "Image2"]
    paths = sorted(set(np.ravel(train[columns])) | set(np.ravel(test[columns])))
    product = {path: path.rsplit("product", 1)[1][:3] for path in paths}
    products = sorted(set(product.values()))
    rows, labels = [], []
    for group in range(len(products) // 2):
        members = [p for p in paths if product[p] in products[2 * group:2 * group + 2]]
        for a, b in itertools.combinations(members, 2):
            rows.append((a, b))
            labels.append(int(product[a] == product[b]))
    return np.array(rows, dtype=object), np.array(labels)


@pytest.fixture(autouse=True)
def _empty_process_cache():
    _cache._PROCESS_STORE.clear()


def test_naive_kfold_leaks_images_and_grouped_kfold_does_not(grouped_pairs):
    X, y = grouped_pairs
    groups = pair_groups(X)
    assert len(np.unique(groups)) == 6

    def shared_images(splitter, **kwargs):
        leaks = []
        for train, test in splitter.split(X, y, **kwargs):
            leaks.append(len(set(X[train].ravel()) & set(X[test].ravel())))
        return leaks

    assert min(shared_images(KFold(3, shuffle=True, random_state=0))) > 0
    assert shared_images(GroupKFold(3), groups=groups) == [0, 0, 0]


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_grid_search_over_a_classifier_parameter(make_clf, grouped_pairs, n_jobs):
    X, y = grouped_pairs
    search = GridSearchCV(make_clf(max_epochs=1, train_split=None), {"lr": [1e-3, 3e-3]},
                          scoring="roc_auc", cv=GroupKFold(2), n_jobs=n_jobs)
    search.fit(X, y, groups=pair_groups(X))
    assert search.best_params_["lr"] in (1e-3, 3e-3)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.predict_proba(X).shape == (len(X), 2)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_grid_search_over_an_embedder_parameter_in_a_pipeline(grouped_pairs, n_jobs):
    X, y = grouped_pairs
    pipeline = make_pipeline(PairFeatures(_tiny_embedder()), LogisticRegression(max_iter=500))
    search = GridSearchCV(pipeline, {"pairfeatures__embedder__image_size": [32, 48]},
                          scoring="roc_auc", cv=GroupKFold(2), n_jobs=n_jobs)
    search.fit(X, y, groups=pair_groups(X))
    assert search.best_params_["pairfeatures__embedder__image_size"] in (32, 48)
    assert search.score(X, y) > 0.5


def test_grid_search_over_the_head_embeds_each_image_once(grouped_pairs, monkeypatch):
    X, y = grouped_pairs
    embedded = []
    original = _siamese.embed_images

    def counting(module, batches, device):
        vectors, failures = original(module, batches, device)
        embedded.append(len(vectors))
        return vectors, failures

    monkeypatch.setattr(_siamese, "embed_images", counting)
    pipeline = make_pipeline(PairFeatures(_tiny_embedder()), LogisticRegression(max_iter=500))
    grid = {"logisticregression__C": [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]}
    search = GridSearchCV(pipeline, grid, scoring="roc_auc", cv=GroupKFold(3))
    search.fit(X, y, groups=pair_groups(X))
    assert sum(embedded) == len(np.unique(X))  # 6 candidates x 3 folds + refit, one pass


def test_cross_val_score_with_grouped_split(make_clf, grouped_pairs):
    X, y = grouped_pairs
    scores = cross_val_score(make_clf(max_epochs=1, train_split=None), X, y,
                             groups=pair_groups(X), cv=GroupKFold(3), scoring="roc_auc")
    assert scores.shape == (3,) and np.isfinite(scores).all()


def test_randomized_search(make_clf, grouped_pairs):
    X, y = grouped_pairs
    search = RandomizedSearchCV(make_clf(max_epochs=1, train_split=None),
                                {"lr": loguniform(1e-4, 1e-2)}, n_iter=2, cv=GroupKFold(2),
                                scoring="roc_auc", random_state=0)
    search.fit(X, y, groups=pair_groups(X))
    assert len(search.cv_results_["params"]) == 2


def test_single_image_classification_pipeline(separable_pairs):
    X, _ = separable_pairs
    paths = np.unique(X.ravel())
    labels = np.array([path.rsplit("/", 1)[1].split("_")[0] for path in paths])
    pipeline = make_pipeline(_tiny_embedder(), LogisticRegression(max_iter=2000))
    scores = cross_val_score(pipeline, paths, labels, cv=StratifiedKFold(2))
    assert len(np.unique(labels)) == 6
    assert scores.mean() > 0.8
