"""PairNet: one skorch net for the pair classifiers, each hook overridden once."""

import inspect
import pickle

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from skorch import NeuralNet
from skorch.callbacks import Callback
from skorch.hf import AccelerateMixin

from sklearn_imgpair import AcceleratedImagePairClassifier, ImagePairClassifier
from sklearn_imgpair._training.net import PairNet


def test_the_classifiers_are_thin_subclasses_of_one_net():
    assert ImagePairClassifier.__bases__ == (PairNet,)
    assert AcceleratedImagePairClassifier.__bases__ == (AccelerateMixin, ImagePairClassifier)
    ours = [klass for klass in ImagePairClassifier.__mro__ if klass.__module__.startswith(
        "sklearn_imgpair")]
    assert ours == [ImagePairClassifier, PairNet]


def test_skorch_partial_fit_takes_the_routing_method_of_fit():
    # PairNet._train_on passes skorch's private _routing_method to partial_fit,
    # as skorch's own fit does; this fails if skorch renames or drops it.
    assert '_routing_method="fit"' in inspect.getsource(NeuralNet.fit)
    assert 'fit_params.pop("_routing_method"' in inspect.getsource(NeuralNet.partial_fit)


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_parameters_are_validated_once_per_fit(make_clf, image_pairs, monkeypatch, method):
    X, y = image_pairs
    calls = []
    original = PairNet._validate_hyperparameters

    def spy(self):
        calls.append(self)
        return original(self)

    monkeypatch.setattr(PairNet, "_validate_hyperparameters", spy)
    clf = make_clf(max_epochs=1, train_split=None, pair_mining="none")
    getattr(clf, method)(X[:16], y[:16])
    assert len(calls) == 1
    clf.initialize()  # outside a fit, initialize validates by itself
    assert len(calls) == 2


def test_fit_and_partial_fit_train_through_one_entry(make_clf, image_pairs, monkeypatch):
    X, y = image_pairs
    trained = []
    original = PairNet._train_on

    def spy(self, dataset, **fit_params):
        trained.append((len(dataset), fit_params))
        return original(self, dataset, **fit_params)

    monkeypatch.setattr(PairNet, "_train_on", spy)
    clf = make_clf(max_epochs=1, train_split=None, pair_mining="none")
    clf.fit(X[:16], y[:16]).partial_fit(X[16:24], y[16:24])
    assert trained == [(16, {"_routing_method": "fit"}), (8, {"_routing_method": "partial_fit"})]
    assert clf.time_budget_.ended


def test_a_warm_start_fit_keeps_the_network_and_its_image_size(make_clf, image_pairs):
    X, y = image_pairs
    clf = make_clf(max_epochs=1, train_split=None, pair_mining="none", warm_start=True)
    module = clf.fit(X[:16], y[:16]).module_
    proba = clf.predict_proba(X[:4])
    clf.fit(X[:16], y[:16])
    assert clf.module_ is module and len(clf.history) == 2
    assert not np.array_equal(clf.predict_proba(X[:4]), proba)
    assert_array_equal(clf.classes_, [0, 1])


class _PickleEachEpoch(Callback):
    """Keeps a pickle of the net at the end of every epoch, as a checkpoint might."""

    def initialize(self):
        self.pickles_ = []
        return self

    def on_epoch_end(self, net, **kwargs):
        self.pickles_.append(pickle.dumps(net))


def test_a_net_pickled_during_fit_checks_its_parameters_again_once_loaded(make_clf, image_pairs):
    X, y = image_pairs
    clf = make_clf(max_epochs=1, train_split=None, pair_mining="none",
                   callbacks=[("pickle", _PickleEachEpoch())])
    clf.fit(X[:16], y[:16])
    loaded = pickle.loads(dict(clf.callbacks_)["pickle"].pickles_[0])
    loaded.set_params(head_lr=-1.0)
    with pytest.raises(ValueError, match="head_lr"):
        loaded.initialize()


def test_the_accelerate_class_replaces_two_hooks_of_skorch_s_accelerate_mixin():
    # AcceleratedImagePairClassifier replaces AccelerateMixin's get_iterator (which would
    # prepare the identity batches rather than the pairs, and split validation between
    # processes) and evaluation_step (which would gather the processes' shares), building on
    # PairNet's _data_loader and _evaluation_step_here. This fails if skorch's mixin stops
    # defining them, so that the replacement is looked at again.
    for hook in ("get_iterator", "evaluation_step"):
        assert hook in vars(AccelerateMixin)
        assert hook in vars(AcceleratedImagePairClassifier)
        assert getattr(AcceleratedImagePairClassifier, hook) is not getattr(AccelerateMixin, hook)
