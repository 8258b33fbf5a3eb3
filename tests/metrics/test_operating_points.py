"""Operating points of a fitted classifier: scikit-learn's threshold tuning and calibration."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import (
    balanced_accuracy_score,
    brier_score_loss,
    f1_score,
    log_loss,
    make_scorer,
)
from sklearn.model_selection import PredefinedSplit, TunedThresholdClassifierCV

from conftest import make_tiny_classifier

# (labels of non-matching and matching pairs, match_label): the match label is the
# greater class (as 1 in {0, 1}), then the smaller one, where scikit-learn's positive
# class (classes_[1]) is the non-match.
LABELS = {
    "same-is-greater": (("different", "same"), "same"),
    "match-is-smaller": (("no match", "match"), "match"),
}


@pytest.fixture(scope="module", params=list(LABELS))
def fitted(request, image_pairs):
    """``(clf, X, y)``: a classifier fitted for 2 epochs on ``y`` with these labels."""
    X, y01 = image_pairs
    (other, match), match_label = LABELS[request.param]
    y = np.where(y01 == 1, match, other)
    clf = make_tiny_classifier(max_epochs=2, match_label=match_label).fit(X, y)
    return clf, X, y


@pytest.fixture(scope="module")
def test_pairs(synthetic_pairs):
    """Pairs of products the classifier never saw."""
    return synthetic_pairs[1][["Image1", "Image2"]].to_numpy(dtype=object)


def _response(clf, X, response_method):
    """What scikit-learn thresholds by default: the score of ``classes_[1]``."""
    if response_method == "decision_function":
        return clf.decision_function(X)
    return clf.predict_proba(X)[:, 1]


def _best_over_every_cut(score, y, response, positive, negative):
    """Brute force: the best score of ``response >= t`` over every distinct cut."""
    cuts = np.r_[np.unique(response), np.inf]
    return max(score(y, np.where(response >= cut, positive, negative)) for cut in cuts)


def _one_split_on_all(X):
    """A splitter whose one validation fold holds every pair: tune on all of them."""
    return PredefinedSplit(np.zeros(len(X)))


@pytest.mark.parametrize("response_method", ["predict_proba", "decision_function"])
def test_tuned_threshold_maximises_balanced_accuracy_on_the_tuning_pairs(fitted,
                                                                         response_method):
    clf, X, y = fitted
    response = _response(clf, X, response_method)
    tuned = TunedThresholdClassifierCV(
        FrozenEstimator(clf), scoring="balanced_accuracy", response_method=response_method,
        thresholds=np.unique(response), cv=_one_split_on_all(X)).fit(X, y)
    best = _best_over_every_cut(balanced_accuracy_score, y, response, *clf.classes_[::-1])
    assert best > 0.5  # the classifier has learnt something: a cut beats the chance level
    assert_allclose(tuned.best_score_, best)
    assert_allclose(balanced_accuracy_score(y, tuned.predict(X)), best)
    assert_array_equal(tuned.classes_, clf.classes_)


def test_tuned_classifier_predicts_with_its_threshold_on_the_classifiers_probability(
        fitted, test_pairs):
    clf, X, y = fitted
    n_epochs = len(clf.history)
    # Cross-validation: the frozen classifier is scored on each fold, never refit.
    tuned = TunedThresholdClassifierCV(FrozenEstimator(clf), cv=3).fit(X, y)
    assert tuned.estimator_.estimator is clf and len(clf.history) == n_epochs
    proba = clf.predict_proba(X)[:, 1]
    assert proba.min() <= tuned.best_threshold_ <= proba.max()
    # On pairs that took no part in tuning, by scikit-learn's rule: classes_[1] at or above.
    expected = np.where(clf.predict_proba(test_pairs)[:, 1] >= tuned.best_threshold_,
                        clf.classes_[1], clf.classes_[0])
    assert_array_equal(tuned.predict(test_pairs), expected)


def test_tuning_for_the_match_label_thresholds_the_match_probability(fitted, test_pairs):
    clf, X, y = fitted
    column = list(clf.classes_).index(clf.match_label)
    other = clf.classes_[1 - column]
    match = clf.predict_proba(X)[:, column]
    f1_of_matches = make_scorer(f1_score, pos_label=clf.match_label)
    tuned = TunedThresholdClassifierCV(FrozenEstimator(clf), scoring=f1_of_matches,
                                       thresholds=np.unique(match),
                                       cv=_one_split_on_all(X)).fit(X, y)

    def f1(y_true, y_pred):
        return f1_score(y_true, y_pred, pos_label=clf.match_label)

    assert_allclose(tuned.best_score_, _best_over_every_cut(f1, y, match, clf.match_label,
                                                            other))
    # The threshold is on P(match), whichever column of classes_ holds it.
    expected = np.where(clf.predict_proba(test_pairs)[:, column] >= tuned.best_threshold_,
                        clf.match_label, other)
    assert_array_equal(tuned.predict(test_pairs), expected)


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_calibration_keeps_the_order_and_does_not_worsen_the_losses(fitted, method):
    clf, X, y = fitted
    calibrated = CalibratedClassifierCV(FrozenEstimator(clf), method=method).fit(X, y)
    assert_array_equal(calibrated.classes_, clf.classes_)
    column = list(clf.classes_).index(clf.match_label)
    before, after = clf.predict_proba(X), calibrated.predict_proba(X)
    assert after.shape == (len(X), 2)
    assert ((after >= 0) & (after <= 1)).all()
    assert_allclose(after.sum(axis=1), 1.0, rtol=1e-6)
    # A monotone map of the match score: sorted by the classifier's decision function
    # (what scikit-learn calibrates), the calibrated match probability never decreases.
    score = clf.decision_function(X) * (1 if column == 1 else -1)
    order = np.argsort(score, kind="stable")
    assert (np.diff(after[order, column]) >= -1e-6).all()  # float32 rounding of 1 - p
    assert np.ptp(after[:, column]) > 0
    is_match = y == clf.match_label
    assert log_loss(y, after, labels=clf.classes_) <= log_loss(y, before, labels=clf.classes_)
    assert (brier_score_loss(is_match, after[:, column])
            <= brier_score_loss(is_match, before[:, column]))
