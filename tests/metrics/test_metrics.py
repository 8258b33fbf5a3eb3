"""Tests of the ranking metrics and of the retrieval scorer in scikit-learn searches."""

import os
import pickle

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from PIL import Image
from sklearn.base import BaseEstimator
from sklearn.model_selection import GridSearchCV, GroupKFold, StratifiedKFold
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from sklearn_imgpair import ImageEmbedder
from sklearn_imgpair.metrics import (
    make_retrieval_scorer,
    mean_average_precision_at_r,
    precision_at_1,
    r_precision,
    recall_at_k,
)

from conftest import TINY_IMAGE_SIZE, TINY_SWIN

METRICS = [recall_at_k, precision_at_1, r_precision, mean_average_precision_at_r]


# ----------------------------------------------------------------------
# a reference implementation, one query at a time, from the definitions
# ----------------------------------------------------------------------


def reference_scores(y_query, y_gallery, neighbors, k, exclude_self):
    """The four metrics, query by query, in plain Python."""
    per_query = {"recall": [], "p1": [], "rp": [], "map": []}
    for row, label in enumerate(y_query):
        n_relevant = sum(other == label for other in y_gallery) - int(exclude_self)
        if n_relevant == 0:
            continue
        relevant = [y_gallery[index] == label for index in neighbors[row]]
        per_query["recall"].append(float(any(relevant[:k])))
        per_query["p1"].append(float(relevant[0]))
        per_query["rp"].append(sum(relevant[:n_relevant]) / n_relevant)
        average_precision = 0.0
        for rank in range(1, n_relevant + 1):
            if relevant[rank - 1]:
                average_precision += sum(relevant[:rank]) / rank
        per_query["map"].append(average_precision / n_relevant)
    return {name: float(np.mean(values)) for name, values in per_query.items()}


def compute_all(y_query, y_gallery, neighbors, k, exclude_self):
    return {
        "recall": recall_at_k(y_query, y_gallery, neighbors, k=k, exclude_self=exclude_self),
        "p1": precision_at_1(y_query, y_gallery, neighbors, exclude_self=exclude_self),
        "rp": r_precision(y_query, y_gallery, neighbors, exclude_self=exclude_self),
        "map": mean_average_precision_at_r(y_query, y_gallery, neighbors,
                                           exclude_self=exclude_self),
    }


# ----------------------------------------------------------------------
# hand-computed examples
# ----------------------------------------------------------------------

# Separate queries and gallery, string labels. Gallery: a a b b b c.
GALLERY = ["a", "a", "b", "b", "b", "c"]
QUERIES = ["a", "b", "c", "d"]  # "d" has no gallery item (R = 0): left out
NEIGHBORS = np.array([
    [2, 0, 1, 3],   # a, R=2: b a a b -> F T T F
    [2, 5, 3, 4],   # b, R=3: b c b b -> T F T T
    [0, 5, 1, 2],   # c, R=1: a c a b -> F T F F
    [0, 1, 2, 3],   # d: left out
])


@pytest.mark.parametrize("k, expected", [(1, 1 / 3), (2, 1.0), (4, 1.0)])
def test_recall_at_k_by_hand(k, expected):
    assert recall_at_k(QUERIES, GALLERY, NEIGHBORS, k=k) == pytest.approx(expected)


def test_precision_at_1_by_hand():
    assert precision_at_1(QUERIES, GALLERY, NEIGHBORS) == pytest.approx(1 / 3)


def test_r_precision_by_hand():
    # 1/2 of the first 2, 2/3 of the first 3, 0 of the first 1.
    assert r_precision(QUERIES, GALLERY, NEIGHBORS) == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)


def test_mean_average_precision_at_r_by_hand():
    # a: P(2) / 2; b: (P(1) + P(3)) / 3 = (1 + 2/3) / 3; c: 0.
    expected = (1 / 2 / 2 + (1 + 2 / 3) / 3 + 0) / 3
    assert mean_average_precision_at_r(QUERIES, GALLERY, NEIGHBORS) == pytest.approx(expected)
    assert expected == pytest.approx(29 / 108)


# Queries are the gallery (leave-one-out), integer labels. Labels 0 and 1
# tie: queries of label 0 have R = 2, of label 1 R = 1, of label 2 R = 0.
Y_SELF = [0, 0, 0, 1, 1, 2]
NEIGHBORS_SELF = np.array([
    [1, 3, 2, 4, 5],   # 0, R=2: 0 1 0 1 2 -> T F | RP 1/2, AP 1/2
    [3, 0, 4, 2, 5],   # 0, R=2: 1 0 1 0 2 -> F T | RP 1/2, AP (1/2)/2
    [0, 1, 3, 4, 5],   # 0, R=2: 0 0 -> T T       | RP 1,   AP 1
    [4, 0, 1, 2, 5],   # 1, R=1: 1 -> T           | RP 1,   AP 1
    [5, 0, 3, 1, 2],   # 1, R=1: 2 -> F (1 at 3)  | RP 0,   AP 0
    [0, 1, 2, 3, 4],   # 2, R=0: left out
])


@pytest.mark.parametrize("metric, kwargs, expected", [
    (recall_at_k, {"k": 1}, 3 / 5),
    (recall_at_k, {"k": 2}, 4 / 5),
    (recall_at_k, {"k": 3}, 1.0),
    (precision_at_1, {}, 3 / 5),
    (r_precision, {}, (1 / 2 + 1 / 2 + 1 + 1 + 0) / 5),
    (mean_average_precision_at_r, {}, (1 / 2 + 1 / 4 + 1 + 1 + 0) / 5),
])
def test_metrics_by_hand_with_exclude_self(metric, kwargs, expected):
    score = metric(Y_SELF, Y_SELF, NEIGHBORS_SELF, exclude_self=True, **kwargs)
    assert score == pytest.approx(expected)


def test_exclude_self_changes_r():
    # Without exclude_self, R is the whole count of the label: 3, 3, 3, 2, 2, 1.
    # The lists still leave each query out, so at most R - 1 are found; query 5
    # now counts (RP 0), and the first three queries need 3 columns.
    assert r_precision(Y_SELF, Y_SELF, NEIGHBORS_SELF[:, :3],
                       exclude_self=False) == pytest.approx(
        (2 / 3 + 1 / 3 + 2 / 3 + 1 / 2 + 0 + 0) / 6)


@pytest.mark.parametrize("make_labels", [list, np.array, pd.Series,
                                         lambda y: pd.Series(y, dtype="category")])
def test_labels_of_any_container(make_labels):
    labels = make_labels(Y_SELF)
    assert r_precision(labels, labels, NEIGHBORS_SELF, exclude_self=True) == pytest.approx(0.6)


def test_labels_compare_by_value_not_by_text():
    # The integer 1 and the string "1" are different labels.
    y_gallery = [1, "1", 2, 2]
    assert precision_at_1([1, 2], y_gallery, [[1, 0], [2, 3]]) == pytest.approx(0.5)


def test_extra_columns_are_ignored():
    wide = np.column_stack([NEIGHBORS, [4, 0, 3, 4]])
    assert compute_all(QUERIES, GALLERY, wide, 2, False) == pytest.approx(
        compute_all(QUERIES, GALLERY, NEIGHBORS, 2, False))


def test_kneighbors_output_is_accepted():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(12, 4))
    y = np.repeat(["x", "y", "z"], 4)
    neighbors = NearestNeighbors(n_neighbors=3).fit(embeddings).kneighbors(
        return_distance=False)
    assert 0 <= mean_average_precision_at_r(y, y, neighbors, exclude_self=True) <= 1


# ----------------------------------------------------------------------
# against the reference on random data
# ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 3, 10])
def test_metrics_match_reference_on_random_rankings(seed, k):
    rng = np.random.default_rng(seed)
    y_gallery = rng.integers(0, 6, size=40)
    y_query = rng.integers(0, 7, size=15)  # label 6 has no gallery item
    neighbors = np.array([rng.permutation(40) for _ in range(15)])
    assert compute_all(y_query, y_gallery, neighbors, k, False) == pytest.approx(
        reference_scores(y_query, y_gallery, neighbors, k, False))


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_reference_leave_one_out(seed):
    rng = np.random.default_rng(seed)
    y = rng.choice(["cat", "dog", "emu", "fox", "gnu"], size=30)
    y[0] = "yak"  # a label seen once: left out
    neighbors = np.array([rng.permutation(np.delete(np.arange(30), row))
                          for row in range(30)])
    assert compute_all(y, y, neighbors, 5, True) == pytest.approx(
        reference_scores(y, y, neighbors, 5, True))


def test_perfect_and_worst_rankings():
    y = np.repeat([0, 1, 2], 3)
    order = np.argsort(y, kind="stable")
    best = np.array([[j for j in order if j != i and y[j] == y[i]]
                     + [j for j in order if y[j] != y[i]] for i in range(9)])
    worst = np.array([[j for j in order if y[j] != y[i]]
                      + [j for j in order if j != i and y[j] == y[i]] for i in range(9)])
    for metric in METRICS:
        assert metric(y, y, best, exclude_self=True) == 1.0
        assert metric(y, y, worst, exclude_self=True) == 0.0


# ----------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------


@pytest.mark.parametrize("metric", [r_precision, mean_average_precision_at_r])
def test_r_metrics_say_how_many_columns_they_need(metric):
    with pytest.raises(ValueError, match="3 columns of neighbors at the most; got 2. Ask for "
                                         "n_neighbors=3"):
        metric(QUERIES, GALLERY, NEIGHBORS[:, :2])


def test_recall_at_k_needs_k_columns():
    with pytest.raises(ValueError, match="k=5 needs 5 columns of neighbors; got 4"):
        recall_at_k(QUERIES, GALLERY, NEIGHBORS, k=5)


@pytest.mark.parametrize("metric", METRICS)
def test_no_relevant_item_at_all_is_an_error(metric):
    with pytest.raises(ValueError, match="No query has a relevant gallery item"):
        metric(["a", "b"], ["a", "b"], [[1], [0]], exclude_self=True)
    with pytest.raises(ValueError, match="No query has a relevant gallery item"):
        metric(["x"], ["a", "b"], [[0, 1]])


@pytest.mark.parametrize("metric", METRICS)
def test_exclude_self_rejects_a_query_among_its_neighbours(metric):
    neighbors = NEIGHBORS_SELF.copy()
    neighbors[2, 1] = 2
    with pytest.raises(ValueError, match="neighbors row 2 holds the query itself"):
        metric(Y_SELF, Y_SELF, neighbors, exclude_self=True)


def test_exclude_self_needs_the_same_labels():
    with pytest.raises(ValueError, match="exclude_self=True says that the queries are the "
                                         "gallery"):
        r_precision(["a", "a"], ["a", "b"], [[1], [0]], exclude_self=True)
    with pytest.raises(ValueError, match=r"y_query \(2 labels\) and y_gallery \(3 labels\)"):
        r_precision(["a", "a"], ["a", "a", "b"], [[1], [0]], exclude_self=True)


@pytest.mark.parametrize("neighbors, error, match", [
    ([0, 1, 2, 3], ValueError, r"must be a 2-D array .* got shape \(4,\)"),
    (np.zeros((3, 2), dtype=int), ValueError, "neighbors has 3 rows but y_query has 4"),
    (np.zeros((4, 0), dtype=int), ValueError, "neighbors has no column"),
    (NEIGHBORS.astype(float), TypeError, "must hold integer indices into y_gallery; got "
                                         "dtype float64"),
    (NEIGHBORS + 3, ValueError, r"neighbors\[0, 3\] = 6 is not an index of y_gallery "
                                r"\(0 to 5\)"),
    (NEIGHBORS - 1, ValueError, r"neighbors\[0, 1\] = -1 is not an index"),
    (np.where(NEIGHBORS == 3, 1, NEIGHBORS), ValueError,
     "neighbors row 0 lists gallery item 1 more than once"),
])
def test_bad_neighbors(neighbors, error, match):
    with pytest.raises(error, match=match):
        recall_at_k(QUERIES, GALLERY, neighbors)


@pytest.mark.parametrize("y_query, y_gallery, match", [
    (["a", None, "c", "d"], GALLERY, r"y_query\[1\] is missing"),
    (QUERIES, ["a", "a", np.nan, "b", "b", "c"], r"y_gallery\[2\] is missing"),
    ([], GALLERY, "y_query is empty"),
    (np.array(QUERIES).reshape(2, 2), GALLERY, r"y_query must be one label per item .*"
                                               r"shape \(2, 2\)"),
])
def test_bad_labels(y_query, y_gallery, match):
    with pytest.raises(ValueError, match=match):
        precision_at_1(y_query, y_gallery, NEIGHBORS[:max(len(y_query), 1)])


def test_k_is_validated():
    with pytest.raises(ValueError, match="'k' parameter of recall_at_k must be an int in the "
                                         "range"):
        recall_at_k(QUERIES, GALLERY, NEIGHBORS, k=0)


# ----------------------------------------------------------------------
# the scorer
# ----------------------------------------------------------------------


class LookupEmbedder(BaseEstimator):
    """Embeds each path by looking it up; ``embed`` only, as ImageNeighbors will."""

    def __init__(self, table=None):
        self.table = table

    def fit(self, X=None, y=None):
        return self

    def embed(self, X):
        return np.array([self.table[path] for path in X], dtype=np.float32)


def loo_neighbors(embeddings, n_neighbors):
    """Leave-one-out cosine neighbours by a matrix product."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return np.argsort(-similarity, axis=1, kind="stable")[:, :n_neighbors]


@pytest.fixture
def lookup_data():
    rng = np.random.default_rng(3)
    paths = [f"img{i}.png" for i in range(15)]
    y = np.repeat(["red", "green", "blue"], 5)
    vectors = rng.normal(size=(15, 6)) + 1.5 * np.repeat(rng.normal(size=(3, 6)), 5, axis=0)
    return paths, y, dict(zip(paths, vectors))


@pytest.mark.parametrize("metric, k", [("recall_at_k", 1), ("recall_at_k", 3),
                                       ("precision_at_1", 1), ("r_precision", 1),
                                       ("mean_average_precision_at_r", 1)])
def test_scorer_scores_leave_one_out_cosine_neighbours(lookup_data, metric, k):
    paths, y, table = lookup_data
    neighbors = loo_neighbors(np.array([table[path] for path in paths]), 14)
    expected = reference_scores(y, y, neighbors, k, True)
    name = {"recall_at_k": "recall", "precision_at_1": "p1", "r_precision": "rp",
            "mean_average_precision_at_r": "map"}[metric]
    score = make_retrieval_scorer(metric, k=k)(LookupEmbedder(table), paths, y)
    assert score == pytest.approx(expected[name])
    assert 0 < score < 1  # neither trivial end: the comparison means something


def test_scorer_uses_transform_of_a_pipeline(lookup_data):
    paths, y, table = lookup_data
    pipeline = make_pipeline(FunctionTransformer(
        lambda X: np.array([table[path] for path in X])))
    scorer = make_retrieval_scorer("mean_average_precision_at_r")
    assert scorer(pipeline.fit(paths), paths, y) == pytest.approx(
        scorer(LookupEmbedder(table), paths, y))


def test_scorer_pickles_and_has_a_repr():
    scorer = make_retrieval_scorer("recall_at_k", k=5)
    assert repr(scorer) == "make_retrieval_scorer(metric='recall_at_k', k=5)"
    assert repr(pickle.loads(pickle.dumps(scorer))) == repr(scorer)
    assert repr(make_retrieval_scorer("r_precision")) == (
        "make_retrieval_scorer(metric='r_precision')")


def test_scorer_names_images_without_embedding(lookup_data):
    paths, y, table = lookup_data
    table = dict(table)
    table["img4.png"] = np.full(6, np.nan)
    with pytest.raises(ValueError, match=r"1 of 15 images have no embedding .*X\[4\] "
                                         r"\('img4.png'\)"):
        make_retrieval_scorer()(LookupEmbedder(table), paths, y)


def test_scorer_rejects_estimators_that_do_not_embed(lookup_data):
    paths, y, _ = lookup_data
    with pytest.raises(TypeError, match="with transform\\(X\\) or embed\\(X\\); "
                                        "NearestNeighbors has neither"):
        make_retrieval_scorer()(NearestNeighbors(), paths, y)


def test_scorer_rejects_too_small_splits(lookup_data):
    paths, y, table = lookup_data
    with pytest.raises(ValueError, match="so it needs 16 images at least; got 15"):
        make_retrieval_scorer("recall_at_k", k=15)(LookupEmbedder(table), paths, y)
    with pytest.raises(ValueError, match="Every label of y appears once among the 3 images"):
        make_retrieval_scorer("r_precision")(LookupEmbedder(table), paths[::5], y[::5])


def test_scorer_checks_the_length_of_y(lookup_data):
    paths, y, table = lookup_data
    with pytest.raises(ValueError, match="gave 15 embeddings for X, but y has 14 labels"):
        make_retrieval_scorer()(LookupEmbedder(table), paths, y[:14])


@pytest.mark.parametrize("kwargs, match", [
    ({"metric": "ndcg"}, "'metric' parameter of make_retrieval_scorer must be a str among"),
    ({"k": 0}, "'k' parameter of make_retrieval_scorer must be an int"),
])
def test_make_retrieval_scorer_validates_its_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_retrieval_scorer(**kwargs)


# ----------------------------------------------------------------------
# in GridSearchCV, on real images and the tiny Swin
# ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def identity_images(tmp_path_factory):
    """``(paths, identities)``: 6 identities of 6 views, each one flat colour plus noise."""
    directory = tmp_path_factory.mktemp("identities")
    rng = np.random.default_rng(1)
    paths, identities = [], []
    for identity in range(6):
        colour = rng.integers(0, 256, size=3)
        for view in range(6):
            pixels = colour + rng.normal(0, 80, size=(TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3))
            path = os.path.join(directory, f"id{identity}_view{view}.png")
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
            paths.append(path)
            identities.append(f"id{identity}")
    return np.array(paths, dtype=object), np.array(identities)


def tiny_embedder(random_state=0):
    return ImageEmbedder(pretrained=False, model_kwargs=dict(TINY_SWIN),
                         image_size=TINY_IMAGE_SIZE, random_state=random_state)


def expected_fold_scores(paths, y, cv, groups, random_state, metric, k):
    """The metric on each test fold, recomputed with the reference implementation."""
    name = {"recall_at_k": "recall", "mean_average_precision_at_r": "map"}[metric]
    scores = []
    for train, test in cv.split(paths, y, groups):
        embedder = tiny_embedder(random_state).fit(paths[train])
        embeddings = embedder.transform(paths[test])
        neighbors = loo_neighbors(embeddings, len(test) - 1)
        scores.append(reference_scores(y[test], y[test], neighbors, k, True)[name])
    return scores


def test_grid_search_with_several_retrieval_scorers(identity_images):
    paths, y = identity_images
    cv = StratifiedKFold(2, shuffle=True, random_state=0)
    scoring = {"recall@2": make_retrieval_scorer("recall_at_k", k=2),
               "map@r": make_retrieval_scorer("mean_average_precision_at_r")}
    search = GridSearchCV(tiny_embedder(), {"random_state": [0, 1]}, scoring=scoring,
                          refit="map@r", cv=cv).fit(paths, y)
    results = search.cv_results_
    for candidate, random_state in enumerate([0, 1]):
        for name, metric, k in [("recall@2", "recall_at_k", 2),
                                ("map@r", "mean_average_precision_at_r", 1)]:
            expected = expected_fold_scores(paths, y, cv, None, random_state, metric, k)
            got = [results[f"split{fold}_test_{name}"][candidate] for fold in range(2)]
            assert_allclose(got, expected, rtol=1e-6)
    assert search.best_score_ == pytest.approx(results["mean_test_map@r"].max())


def test_grid_search_on_unseen_identities(identity_images):
    paths, y = identity_images
    cv = GroupKFold(2)
    search = GridSearchCV(tiny_embedder(), {"random_state": [0, 1]}, cv=cv,
                          scoring=make_retrieval_scorer("mean_average_precision_at_r"))
    search.fit(paths, y, groups=y)
    for candidate, random_state in enumerate([0, 1]):
        expected = expected_fold_scores(paths, y, cv, y, random_state,
                                        "mean_average_precision_at_r", 1)
        assert search.cv_results_["mean_test_score"][candidate] == pytest.approx(
            np.mean(expected))
    assert search.best_score_ == pytest.approx(search.cv_results_["mean_test_score"].max())
    assert search.best_estimator_.random_state == search.best_params_["random_state"]
