"""Interrupted fits, determinism and concurrent prediction."""

import copy
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from numpy.testing import assert_array_equal
from skorch.callbacks import Callback

from sklearn_imgpair import ImageEmbedder

from conftest import TINY_IMAGE_SIZE, TINY_SWIN


class InterruptDuring(Callback):
    """Press Ctrl-C (raise KeyboardInterrupt) in a training batch of ``epoch``.

    Keeps a copy of the backbone's weights at the end of every epoch.
    """

    def __init__(self, epoch, batch=2):
        self.epoch = epoch
        self.batch = batch

    def initialize(self):
        self.snapshots_ = {}
        self._batches = 0
        return self

    def on_batch_end(self, net, training=False, **kwargs):
        if training and len(net.history) == self.epoch:
            self._batches += 1
            if self._batches == self.batch:
                raise KeyboardInterrupt

    def on_epoch_end(self, net, **kwargs):
        self.snapshots_[len(net.history)] = copy.deepcopy(net.module_.backbone.state_dict())


def _assert_same_weights(module, state):
    for name, tensor in module.state_dict().items():
        assert torch.equal(tensor, state[name]), name


def test_keyboard_interrupt_keeps_the_best_weights_seen(make_clf, image_pairs):
    X, y = image_pairs
    interrupt = InterruptDuring(epoch=4)
    clf = make_clf(max_epochs=10, callbacks=[("interrupt", interrupt)])
    with pytest.warns(UserWarning, match=r"interrupted \(KeyboardInterrupt\) in epoch 4"):
        assert clf.fit(X, y) is clf
    assert len(clf.history) == 4 and "valid_auc" not in clf.history[-1]  # cut mid-epoch
    best_epoch = dict(clf.callbacks_)["early_stopping"].best_epoch_
    assert 1 <= best_epoch <= 3
    _assert_same_weights(clf.module_.backbone, interrupt.snapshots_[best_epoch])
    proba = clf.predict_proba(X)
    assert np.isfinite(proba).all() and clf.score(X, y) > 0.5
    assert clf.n_features_in_ == 2 and clf.classes_.tolist() == [0, 1]


def test_keyboard_interrupt_without_validation_keeps_the_last_weights(make_clf, image_pairs):
    X, y = image_pairs
    clf = make_clf(max_epochs=10, train_split=None,
                   callbacks=[("interrupt", InterruptDuring(epoch=2, batch=1))])
    with pytest.warns(UserWarning, match="interrupted"):
        clf.fit(X, y)
    assert np.isfinite(clf.predict_proba(X)).all()


def test_the_time_limit_stops_without_the_interrupt_warning(make_clf, image_pairs, recwarn,
                                                            monkeypatch):
    X, y = image_pairs
    from sklearn_imgpair import TimeBudget

    from conftest import FakeClock

    monkeypatch.setattr(TimeBudget, "clock", staticmethod(FakeClock()))
    clf = make_clf(max_epochs=1000, time_limit=30)
    clf.fit(X, y)
    assert dict(clf.callbacks_)["time_limit"].stopped_
    assert not [w for w in recwarn if "interrupted" in str(w.message)]


def test_decoding_workers_do_not_change_the_model(make_clf, image_pairs):
    X, y = image_pairs
    plain = make_clf(max_epochs=2, random_state=5).fit(X, y)
    workers = make_clf(max_epochs=2, random_state=5, iterator_train__num_workers=2,
                       iterator_valid__num_workers=2).fit(X, y)
    assert_array_equal(workers.predict_proba(X), plain.predict_proba(X))


def test_concurrent_predict_proba_matches_sequential_calls(fitted_clf, image_pairs):
    X, _ = image_pairs
    chunks = [X[start::5] for start in range(5)] * 3
    expected = [fitted_clf.predict_proba(chunk) for chunk in chunks]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(fitted_clf.predict_proba, chunks))
    for result, reference in zip(results, expected):
        assert_array_equal(result, reference)


def test_concurrent_transform_matches_sequential_calls(image_pairs):
    paths = np.unique(image_pairs[0])
    embedder = ImageEmbedder(pretrained=False, image_size=TINY_IMAGE_SIZE,
                             model_kwargs=dict(TINY_SWIN), random_state=9).fit()
    chunks = [paths[start::4] for start in range(4)] * 3  # cache misses, then hits, at once
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(embedder.transform, chunks))
    uncached = embedder.set_params(cache=False)
    for result, chunk in zip(results, chunks):
        assert_array_equal(result, uncached.transform(chunk))
