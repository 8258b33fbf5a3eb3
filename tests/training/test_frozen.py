"""Tests of freeze_backbone=True: each image embedded once, the match head trained alone."""

import collections
import copy
import warnings

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from skorch.callbacks import Callback

from sklearn_imgpair import ImageEmbedder
from sklearn_imgpair._images import datasets as _datasets
from sklearn_imgpair._images import decode as _dataset
from sklearn_imgpair._images.datasets import EmbeddingPairDataset

from conftest import make_tiny_classifier


class _BackboneSnapshot(Callback):
    """Keep a copy of the backbone's weights as training starts."""

    def on_train_begin(self, net, **kwargs):
        self.state_ = copy.deepcopy(net.module_.backbone.state_dict())
        self.head_ = copy.deepcopy(net.module_.head.state_dict())


@pytest.fixture(scope="module")
def frozen(separable_pairs):
    """``(clf, decodes, snapshot)``: a frozen-backbone fit and what it decoded."""
    X, y = separable_pairs
    counts = collections.Counter()
    original = _dataset.load_image

    def counting_load_image(path, image_size):
        counts[path] += 1
        return original(path, image_size)

    snapshot = _BackboneSnapshot()
    _dataset.load_image = _datasets.load_image = counting_load_image
    try:
        clf = make_tiny_classifier(freeze_backbone=True, max_epochs=8, num_workers=0,
                                   callbacks=[("snapshot", snapshot)]).fit(X, y)
    finally:
        _dataset.load_image = _datasets.load_image = original
    return clf, counts, snapshot


def test_frozen_fit_embeds_each_image_once(frozen, separable_pairs):
    _, counts, _ = frozen
    assert set(counts) == set(separable_pairs[0].ravel())
    assert set(counts.values()) == {1}


def test_frozen_fit_leaves_the_backbone_unchanged(frozen):
    clf, _, snapshot = frozen
    for name, tensor in clf.module_.backbone.state_dict().items():
        torch.testing.assert_close(tensor, snapshot.state_[name], rtol=0, atol=0)
    assert not any(param.requires_grad for param in clf.module_.backbone.parameters())
    optimized = {id(param) for group in clf.optimizer_.param_groups for param in group["params"]}
    assert optimized == {id(param) for param in clf.module_.head.parameters()}


def test_frozen_fit_trains_the_head(frozen, separable_pairs):
    clf, _, snapshot = frozen
    losses = clf.history[:, "train_loss"]
    assert losses[-1] < losses[0]
    head = clf.module_.head.state_dict()
    assert any(not torch.equal(head[name], snapshot.head_[name]) for name in head)
    X, y = separable_pairs
    assert clf.score(X, y) > 0.6


def test_frozen_predictions_use_the_embeddings_it_trained_on(frozen, separable_pairs):
    clf, _, _ = frozen
    X, y = separable_pairs
    unique, inverse = np.unique(X.ravel(), return_inverse=True)
    embedder = ImageEmbedder(classifier=clf, cache=False).fit()
    embeddings = torch.from_numpy(embedder.transform(unique))
    dataset = EmbeddingPairDataset(X, y.astype(np.float32), embeddings=embeddings,
                                   index=inverse.reshape(-1, 2))
    logits = clf.forward(dataset).numpy()
    assert_allclose(clf.decision_function(X), logits, rtol=1e-5, atol=1e-6)


def test_frozen_fit_without_validation_split(separable_pairs):
    X, y = separable_pairs
    clf = make_tiny_classifier(freeze_backbone=True, max_epochs=2, train_split=None,
                               num_workers=0).fit(X, y)
    assert clf.predict_proba(X).shape == (len(X), 2)
    assert "valid_loss" not in clf.history[-1]


def test_early_stopping_ends_a_frozen_fit_without_an_interruption_warning(separable_pairs):
    X, y = separable_pairs
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf = make_tiny_classifier(freeze_backbone=True, max_epochs=30, num_workers=0,
                                   callbacks__early_stopping__patience=1).fit(X, y)
    assert len(clf.history) < 30


def test_a_frozen_fit_trains_the_head_for_what_is_left_of_its_time_budget(separable_pairs,
                                                                        monkeypatch):
    # Embedding every image comes before the first epoch: it is spent, but the
    # time limit must not take it for the length of a training step.
    from sklearn_imgpair import TimeBudget
    from sklearn_imgpair._training import frozen

    from conftest import FakeClock

    X, y = separable_pairs
    clock = FakeClock(step=0.01)
    monkeypatch.setattr(TimeBudget, "clock", staticmethod(clock))
    original = frozen.embed_pair_dataset

    def slow_embedding(*args, **kwargs):
        clock.now += 60.0  # of a 100 s budget
        return original(*args, **kwargs)

    monkeypatch.setattr(frozen, "embed_pair_dataset", slow_embedding)
    clf = make_tiny_classifier(freeze_backbone=True, max_epochs=20, time_limit=100,
                               train_split=None).fit(X, y)
    assert len(clf.history) == 20  # the 40 s left hold every epoch
