"""scikit-learn's estimator contract, checked on every estimator without expected failures.

The estimators take image paths, not numeric arrays, and say so in their tags
as scikit-learn's own string-input estimators do (``CountVectorizer``,
``DictVectorizer``): ``input_tags.string=True`` and
``input_tags.two_d_array=False`` (``one_d_array=True`` for the estimators of
one column of paths: the embedder, the neighbour search and the clusterer).
With those tags scikit-learn's generic suite, which builds numeric data, runs
only its clone check (``test_generic_suite``). So, as in scikit-learn's own
``test_common.py``:

* the checks that need no data, and the error-path checks (which must fail
  cleanly on numeric input), are called directly (``test_check``);
* the checks that need a fit are written again on image paths, asserting
  what scikit-learn's versions assert (``test_*`` below, one function each,
  parametrized over the estimators). For :class:`ImageNeighbors` the
  outputs compared are those of its queries (``kneighbors``, the graphs,
  ``embed``); for :class:`ImageMatchClustering`, which answers no query,
  ``labels_``, with scikit-learn's ``check_clustering`` written again.

:class:`ImageMatchClustering` (and the search built on a classifier) need a
fitted :class:`ImagePairClassifier`: it is given in a
:class:`~sklearn.frozen.FrozenEstimator`, which ``clone`` keeps fitted.
"""

import pickle
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from sklearn.base import clone, is_clusterer
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import make_pipeline
from sklearn.utils import estimator_checks as checks
from sklearn.utils.estimator_checks import _NotAnArray, parametrize_with_checks
from sklearn.utils.validation import check_is_fitted

from sklearn_imgpair import (
    ImageEmbedder,
    ImageMatchClustering,
    ImageNeighbors,
    ImagePairClassifier,
    PairFeatures,
)

from conftest import TINY_IMAGE_SIZE, TINY_SWIN

TINY = dict(pretrained=False, image_size=TINY_IMAGE_SIZE, model_kwargs=dict(TINY_SWIN))


def _fitted_match_classifier():
    """A tiny classifier fitted on four pairs of in-memory images, in a FrozenEstimator.

    The estimators are built when the tests are collected, before any
    fixture writes image files, so the classifier learns from arrays. Its
    match probabilities on the test images still split them into a few
    groups (``test_labels_are_integers_from_0_and_fit_predict_gives_them``
    asserts it), which is all the clustering checks need of it.
    """
    rng = np.random.RandomState(0)
    images = list(rng.randint(0, 256, size=(4, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3),
                              dtype=np.uint8))
    X = [(images[0], images[1]), (images[2], images[3]), (images[0], images[2]),
         (images[1], images[3])]
    classifier = ImagePairClassifier(max_epochs=1, train_split=None, random_state=0, verbose=0,
                                     **TINY)
    return FrozenEstimator(classifier.fit(X, [1, 1, 0, 0]))


MATCH_CLASSIFIER = _fitted_match_classifier()


def _estimators():
    estimators = [
        ImagePairClassifier(max_epochs=1, train_split=None, random_state=0, **TINY),
        ImageEmbedder(**TINY),
        PairFeatures(ImageEmbedder(**TINY)),
        ImageNeighbors(ImageEmbedder(**TINY)),
        ImageNeighbors(classifier=MATCH_CLASSIFIER),
        ImageMatchClustering(MATCH_CLASSIFIER),
    ]
    try:
        from accelerate import Accelerator

        from sklearn_imgpair import AcceleratedImagePairClassifier
    except ImportError:  # the distributed extra is optional
        return estimators
    accelerated = AcceleratedImagePairClassifier(
        accelerator=Accelerator(cpu=True), max_epochs=1, train_split=None, random_state=0,
        **TINY)
    return estimators + [accelerated]


def _id(estimator):
    name = type(estimator).__name__
    if isinstance(estimator, ImageNeighbors) and estimator.classifier is not None:
        name += "-classifier"  # the search that also gives match probabilities
    return name


ESTIMATORS = _estimators()
IDS = [_id(estimator) for estimator in ESTIMATORS]


def _is_pairwise(estimator):
    return not estimator.__sklearn_tags__().input_tags.one_d_array


def _is_classifier(estimator):
    return isinstance(estimator, ImagePairClassifier)


# ----------------------------------------------------------------------
# scikit-learn's own checks
# ----------------------------------------------------------------------


@parametrize_with_checks(ESTIMATORS)
def test_generic_suite(estimator, check):
    # With string input tags this is the clone check alone, and no check is
    # expected to fail.
    check(estimator)


DATA_INDEPENDENT_CHECKS = [
    checks.check_estimator_cloneable,
    checks.check_estimator_repr,
    checks.check_valid_tag_types,
    checks.check_estimator_tags_renamed,
    checks.check_mixin_order,
    checks.check_no_attributes_set_in_init,
    checks.check_get_params_invariance,
    checks.check_set_params,
    checks.check_parameters_default_constructible,
    checks.check_do_not_raise_errors_in_init_or_set_params,
    checks.check_estimators_unfitted,
    checks.check_param_validation,
]
# Numeric, sparse, complex, empty or one-class input must fail with the error
# (and, where the check reads it, the wording) scikit-learn expects.
ERROR_PATH_CHECKS = [
    checks.check_estimators_empty_data_messages,
    checks.check_estimator_sparse_tag,
    checks.check_estimator_sparse_array,
    checks.check_estimator_sparse_matrix,
    checks.check_complex_data,
]
CLASSIFIER_ERROR_PATH_CHECKS = [
    checks.check_requires_y_none,
    checks.check_classifiers_regression_target,
    checks.check_classifiers_one_label,
    checks.check_fit2d_1sample,
    checks.check_fit2d_1feature,
]
TRANSFORMER_CHECKS = [checks.check_get_feature_names_out_error]
# scikit-learn's NearestNeighbors gets the generic checks only. Of its
# clusterer checks, check_clustering is written again on paths below; the
# others test a compute_labels parameter, partial_fit or max_iter, which
# ImageMatchClustering does not have (they would return without checking
# anything), so they are not run: check_clusterer_compute_labels_predict,
# check_estimators_partial_fit_n_features, check_non_transformer_estimators_n_iter.


def _direct_checks():
    for estimator, name in zip(ESTIMATORS, IDS):
        selected = DATA_INDEPENDENT_CHECKS + ERROR_PATH_CHECKS
        if _is_classifier(estimator):
            selected = selected + CLASSIFIER_ERROR_PATH_CHECKS
        elif hasattr(estimator, "transform"):
            selected = selected + TRANSFORMER_CHECKS
        if estimator.__sklearn_tags__().input_tags.one_d_array:
            # scikit-learn builds 1-D data for one_d_array estimators, and scipy
            # cannot make a 1-D sparse array in LIL format: the check itself
            # fails before it calls the estimator. Sparse input is covered by
            # check_estimator_sparse_matrix for these estimators.
            selected = [check for check in selected
                        if check is not checks.check_estimator_sparse_array]
        for check in selected:
            yield pytest.param(estimator, check, id=f"{name}-{check.__name__}")


@pytest.mark.parametrize("estimator, check", list(_direct_checks()))
def test_check(estimator, check):
    check(type(estimator).__name__, clone(estimator))


# ----------------------------------------------------------------------
# the checks that need a fit, on image paths
# ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(image_pairs):
    """``(pairs, labels)`` of the tiny synthetic catalogue."""
    return image_pairs


@pytest.fixture(scope="module")
def identities(data):
    """Identity labels of the first image of each pair: images joined by matching pairs."""
    pairs, labels = data
    images, image_of = np.unique(pairs, return_inverse=True)
    image_of = image_of.reshape(pairs.shape)
    match = labels == 1
    graph = sparse.coo_matrix((np.ones(match.sum()), (image_of[match, 0], image_of[match, 1])),
                              shape=(len(images), len(images)))
    return connected_components(graph, directed=False)[1][image_of[:, 0]]


def _X(estimator, data):
    pairs, _ = data
    return pairs if _is_pairwise(estimator) else pairs[:, 0]


def _fit(estimator, data, X=None):
    X = _X(estimator, data) if X is None else X
    return clone(estimator).fit(X, data[1] if _is_classifier(estimator) else None)


# What a fitted estimator answers about new images X.
QUERY_METHODS = ["predict", "predict_proba", "decision_function", "transform", "embed",
                 "kneighbors", "kneighbors_graph", "kneighbors_proba", "radius_neighbors",
                 "radius_neighbors_graph"]


def _methods(estimator):
    return [name for name in QUERY_METHODS if hasattr(estimator, name)]


def _outputs(estimator, X):
    """Each query method's answer on ``X`` as arrays, and a clusterer's ``labels_``."""
    outputs = {}
    for name in _methods(estimator):
        if name == "radius_neighbors":
            continue  # ragged, one array per query: compared as radius_neighbors_graph
        answer = getattr(estimator, name)(X)
        for part, value in enumerate(answer if isinstance(answer, tuple) else (answer,)):
            outputs[f"{name}[{part}]"] = value.toarray() if sparse.issparse(value) else value
    if is_clusterer(estimator):
        outputs["labels_"] = estimator.labels_
    return outputs


def _assert_outputs_close(first, second):
    assert first.keys() == second.keys()
    for name in first:
        if first[name].dtype.kind in "fc":
            assert_allclose(first[name], second[name], rtol=1e-5, atol=1e-6, err_msg=name)
        else:
            assert_array_equal(first[name], second[name], err_msg=name)


def _those(select):
    """Parametrize over the estimators that ``select`` accepts."""
    chosen = [(estimator, name) for estimator, name in zip(ESTIMATORS, IDS) if select(estimator)]
    return pytest.mark.parametrize("estimator", [estimator for estimator, _ in chosen],
                                   ids=[name for _, name in chosen])


every_estimator = _those(lambda estimator: True)
# A clusterer answers no query after fit: the checks of query methods pass it by.
every_queried_estimator = _those(_methods)
every_clusterer = _those(is_clusterer)


@every_estimator
def test_fit_and_score_take_y(estimator):
    # check_fit_score_takes_y: y is the second argument wherever there is one
    import inspect

    for name in ["fit", "score", "partial_fit", "fit_predict", "fit_transform"]:
        if hasattr(estimator, name):
            arguments = list(inspect.signature(getattr(estimator, name)).parameters)
            assert arguments[:2] == ["X", "y"], name


@_those(lambda estimator: hasattr(estimator, "transform"))
def test_fit_transform_equals_fit_then_transform(estimator, data):
    # check_transformer_general
    X = _X(estimator, data)
    assert_allclose(clone(estimator).fit_transform(X), _fit(estimator, data).transform(X),
                    rtol=1e-6)


@every_estimator
def test_fit_returns_self_and_then_is_fitted(estimator, data):
    # check_estimators_fit_returns_self, check_fit_check_is_fitted,
    # check_estimators_unfitted (on every query method)
    unfitted = clone(estimator)
    for name in _methods(unfitted):
        with pytest.raises(NotFittedError):
            getattr(unfitted, name)(_X(estimator, data))
    with pytest.raises(NotFittedError):
        check_is_fitted(unfitted)
    X = _X(estimator, data)
    assert unfitted.fit(X, data[1] if _is_classifier(estimator) else None) is unfitted
    check_is_fitted(unfitted)
    for name in _methods(unfitted):
        getattr(unfitted, name)(X)


@every_estimator
def test_fit_changes_no_parameter(estimator, data):
    # check_estimators_overwrite_params, check_dont_overwrite_parameters
    unfitted = clone(estimator)

    def hashes(params):
        # An accelerator is a resource that registers what it prepares, as a
        # Dask client would: the estimator must keep the same one, not an equal one.
        return {name: id(value) if name == "accelerator" else joblib.hash(value)
                for name, value in params.items()}

    before = hashes(unfitted.get_params())
    public_before = {key for key in vars(unfitted) if not key.endswith("_")
                     and not key.startswith("_")}
    fitted = unfitted.fit(_X(estimator, data), data[1] if _is_classifier(estimator) else None)
    assert hashes(fitted.get_params()) == before
    public_after = {key for key in vars(fitted) if not key.endswith("_")
                    and not key.startswith("_")}
    assert public_after == public_before


@every_queried_estimator
def test_prediction_changes_nothing_on_the_estimator(estimator, data):
    # check_dict_unchanged: no attribute added or replaced by predict/transform
    fitted = _fit(estimator, data)
    X = _X(estimator, data)
    for name in _methods(fitted):
        before = dict(vars(fitted))
        getattr(fitted, name)(X)
        assert vars(fitted).keys() == before.keys(), name
        assert all(vars(fitted)[key] is value for key, value in before.items()), name


@every_estimator
def test_fit_is_idempotent(estimator, data):
    # check_fit_idempotent: fit(X).fit(X) predicts as fit(X), and so does
    # another clone fitted on X
    X = _X(estimator, data)
    once = _fit(estimator, data)
    expected = _outputs(once, X)
    twice = once.fit(X, data[1] if _is_classifier(estimator) else None)
    _assert_outputs_close(_outputs(twice, X), expected)
    _assert_outputs_close(_outputs(_fit(estimator, data), X), expected)


@every_queried_estimator
def test_outputs_follow_the_order_and_subsets_of_the_samples(estimator, data):
    # check_methods_sample_order_invariance, check_methods_subset_invariance
    # (for a clusterer: test_clusters_do_not_depend_on_the_order_of_the_images)
    fitted = _fit(estimator, data)
    X = _X(estimator, data)
    expected = _outputs(fitted, X)
    order = np.random.RandomState(0).permutation(len(X))
    permuted = _outputs(fitted, X[order])
    _assert_outputs_close(permuted, {key: value[order] for key, value in expected.items()})
    batches = [_outputs(fitted, X[start:start + 7]) for start in range(0, len(X), 7)]
    joined = {name: np.concatenate([batch[name] for batch in batches]) for name in expected}
    _assert_outputs_close(joined, expected)


@every_estimator
def test_pipeline_gives_the_same_outputs(estimator, data, identities):
    # check_pipeline_consistency: predictions, score and fit_predict
    X, y = _X(estimator, data), data[1] if _is_classifier(estimator) else None
    alone = _fit(estimator, data)
    pipeline = make_pipeline(clone(estimator)).fit(X, y)
    compared = [name for name in _methods(alone) if hasattr(pipeline, name)]
    for name in compared:
        assert_allclose(np.asarray(getattr(pipeline, name)(X), dtype=float),
                        np.asarray(getattr(alone, name)(X), dtype=float), rtol=1e-5)
    if hasattr(alone, "score"):
        # ImageNeighbors scores a search among X by identity labels
        y_score = y if _is_classifier(estimator) else identities
        assert_allclose(pipeline.score(X, y_score), alone.score(X, y_score))
        compared.append("score")
    if hasattr(alone, "fit_predict"):
        assert_array_equal(make_pipeline(clone(estimator)).fit_predict(X, y),
                           clone(estimator).fit_predict(X, y))
        compared.append("fit_predict")
    assert compared, "the pipeline was compared on nothing"


@every_estimator
def test_pickle_round_trip_keeps_the_outputs(estimator, data):
    # check_estimators_pickle
    fitted = _fit(estimator, data)
    X = _X(estimator, data)
    restored = pickle.loads(pickle.dumps(fitted))
    _assert_outputs_close(_outputs(restored, X), _outputs(fitted, X))


def _polars(X):
    """``X`` as a polars DataFrame (two columns) or Series (one)."""
    polars = pytest.importorskip("polars")
    if X.ndim == 1:
        return polars.Series("image", X.tolist())
    return polars.DataFrame({f"image{column}": X[:, column].tolist()
                             for column in range(X.shape[1])})


@every_estimator
@pytest.mark.parametrize("container", ["readonly_memmap", "readonly_objects", "not_an_array",
                                       "list", "frame", "polars"])
def test_every_container_of_paths_gives_the_same_outputs(estimator, data, container,
                                                         tmp_path):
    # check_readonly_memmap_input, check_*_data_not_an_array, on paths; and the
    # caller's X is left as it was
    X = _X(estimator, data)
    fitted = _fit(estimator, data)
    expected = _outputs(fitted, X)
    if container == "readonly_memmap":
        strings = np.asarray(X, dtype="U")
        path = tmp_path / "paths.npy"
        np.save(path, strings)
        other = np.load(path, mmap_mode="r")
        assert not other.flags.writeable
    elif container == "readonly_objects":
        other = np.asarray(X, dtype=object).copy()
        other.setflags(write=False)
    elif container == "not_an_array":
        other = _NotAnArray(X)
    elif container == "list":
        other = X.tolist()
    elif container == "frame":
        other = pd.DataFrame(X) if X.ndim == 2 else pd.Series(X)
    else:
        other = _polars(X)
    before = np.array(other, dtype=object)
    with warnings.catch_warnings():
        # A polars table's columns have names and X's none: scikit-learn warns
        # when only one of fit and predict saw names.
        warnings.filterwarnings("ignore", "X (does not have valid|has) feature names")
        _assert_outputs_close(_outputs(fitted, other), expected)
        refitted = _fit(estimator, data, X=other)
        _assert_outputs_close(_outputs(refitted, X), expected)
    assert_array_equal(np.array(other, dtype=object), before)


@_those(_is_classifier)
@pytest.mark.parametrize("labels, match_label", [
    (("other", "same"), "same"),
    ((0, 1), 1),
    ((3, -2), -2),  # the match label is the smaller one
    ((False, True), True),
])
def test_classes_and_decisions_follow_the_labels(estimator, data, labels, match_label):
    # check_classifiers_classes, check_decision_proba_consistency
    X, y = data
    other = [label for label in labels if label != match_label][0]
    y_labelled = np.where(y == 1, match_label, other)
    clf = clone(estimator).set_params(match_label=match_label).fit(X, y_labelled)
    assert_array_equal(clf.classes_, np.unique(y_labelled))
    predicted = clf.predict(X)
    assert set(predicted.tolist()) <= set(labels)
    proba = clf.predict_proba(X)
    decision = clf.decision_function(X)
    # decision_function is signed for classes_[1], as predict_proba's column 1
    order = np.argsort(decision, kind="stable")
    assert np.all(np.diff(proba[order, 1]) >= -1e-6)
    match_column = list(clf.classes_).index(match_label)
    assert_array_equal(predicted == match_label, proba[:, match_column] > clf.threshold)


@every_estimator
def test_input_feature_semantics(estimator, data):
    # check_n_features_in, check_dataframe_column_names_consistency
    X = _X(estimator, data)
    columns = ["query", "response"] if X.ndim == 2 else ["image"]
    frame = pd.DataFrame(X.reshape(len(X), -1), columns=columns)
    fitted = _fit(estimator, data, X=frame if X.ndim == 2 else frame["image"].to_frame())
    assert fitted.n_features_in_ == len(columns)
    assert_array_equal(fitted.feature_names_in_, columns)
    plain = _fit(estimator, data)
    assert plain.n_features_in_ == len(columns)
    assert not hasattr(plain, "feature_names_in_")
    renamed = frame.set_axis([f"other_{column}" for column in columns], axis=1)
    for name in _methods(fitted):
        with pytest.raises(ValueError, match="feature names should match"):
            getattr(fitted, name)(renamed)


@every_clusterer
@pytest.mark.parametrize("linkage", ["single", "complete"])
def test_labels_are_integers_from_0_and_fit_predict_gives_them(estimator, data, linkage):
    # check_clustering: labels_ of shape (n_samples,) and integer dtype, the
    # same from fit_predict and on a second fit, every label from 0 to the
    # largest used
    X = _X(estimator, data)
    clusterer = clone(estimator).set_params(linkage=linkage)
    labels = clusterer.fit(X).labels_
    assert labels.shape == (len(X),)
    assert labels.dtype in (np.dtype("int32"), np.dtype("int64"))
    assert_array_equal(clone(clusterer).fit_predict(X), labels)
    assert_array_equal(np.unique(labels), np.arange(clusterer.n_clusters_))
    # Neither one group nor one per image: the order test below has a
    # partition to get wrong.
    assert 1 < clusterer.n_clusters_ < len(np.unique(X))


@every_clusterer
@pytest.mark.parametrize("linkage", ["single", "complete"])
def test_clusters_do_not_depend_on_the_order_of_the_images(estimator, data, linkage):
    # check_methods_sample_order_invariance, for labels_: the groups of the
    # permuted images are the permuted groups, numbered in order of first appearance
    X = _X(estimator, data)
    clusterer = clone(estimator).set_params(linkage=linkage)
    labels = clusterer.fit_predict(X)
    order = np.random.RandomState(0).permutation(len(X))
    _, first, numbered = np.unique(labels[order], return_index=True, return_inverse=True)
    expected = np.argsort(np.argsort(first))[numbered]
    assert_array_equal(clone(clusterer).fit_predict(X[order]), expected)


def test_accelerated_classifier_is_checked_when_accelerate_is_installed():
    pytest.importorskip("accelerate")
    assert "AcceleratedImagePairClassifier" in IDS
