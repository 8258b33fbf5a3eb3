import math
import warnings

import numpy as np
import pytest
import torch
from numpy.testing import assert_array_equal
from torch.utils.data import DataLoader, Subset

from sklearn_imgpair._images.datasets import PairDataset, training_pairs
from sklearn_imgpair._training.mining import (
    IdentityBatches,
    IdentitySampler,
    image_identities,
    supervised_contrastive_loss,
)


def _unit(*rows):
    vectors = torch.tensor(rows, dtype=torch.float32)
    return vectors / vectors.norm(dim=1, keepdim=True)


def test_supervised_contrastive_loss_by_hand():
    embeddings = _unit([1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0])
    labels = torch.tensor([0, 0, 1, 1])
    t = 0.5
    s = (embeddings @ embeddings.T).numpy() / t
    # Each anchor has exactly one positive: 0<->1 and 2<->3.
    positive = {0: 1, 1: 0, 2: 3, 3: 2}
    expected = []
    for i, p in positive.items():
        others = [a for a in range(4) if a != i]
        expected.append(-(s[i, p] - math.log(sum(math.exp(s[i, a]) for a in others))))
    loss = supervised_contrastive_loss(embeddings, labels, temperature=t)
    assert loss.item() == pytest.approx(np.mean(expected), rel=1e-5)


def test_supervised_contrastive_loss_averages_over_several_positives():
    embeddings = _unit([1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0])
    labels = torch.tensor([5, 5, 5, 7])  # the last vector has no positive: not an anchor
    s = (embeddings @ embeddings.T).numpy() / 0.1
    expected = []
    for i in range(3):
        log_denominator = math.log(sum(math.exp(s[i, a]) for a in range(4) if a != i))
        positives = [p for p in range(3) if p != i]
        expected.append(-np.mean([s[i, p] - log_denominator for p in positives]))
    loss = supervised_contrastive_loss(embeddings, labels)
    assert loss.item() == pytest.approx(np.mean(expected), rel=1e-5)


def test_supervised_contrastive_loss_rewards_separated_identities():
    labels = torch.tensor([0, 0, 1, 1])
    separated = _unit([1.0, 0.0], [1.0, 0.01], [-1.0, 0.0], [-1.0, 0.01])
    mixed = _unit([1.0, 0.0], [-1.0, 0.0], [1.0, 0.01], [-1.0, 0.01])
    assert supervised_contrastive_loss(separated, labels) < supervised_contrastive_loss(
        mixed, labels)


def test_supervised_contrastive_loss_without_positives_is_zero_and_differentiable():
    embeddings = _unit([1.0, 0.0], [0.0, 1.0]).requires_grad_()
    loss = supervised_contrastive_loss(embeddings, torch.tensor([0, 1]))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(embeddings.grad, torch.zeros_like(embeddings))


def _graph_pairs():
    # Identities: {a, b, c} (chain a-b, b-c), {d, e}, {f, g, h, i}; x only in a
    # non-matching pair (no second view); d-a is a non-match between components.
    rows = [("a", "b", 1), ("b", "c", 1), ("d", "e", 1), ("f", "g", 1), ("g", "h", 1),
            ("h", "i", 1), ("x", "a", 0), ("d", "a", 0), ("f", "e", 0)]
    pairs = np.array([row[:2] for row in rows], dtype=object)
    return pairs, np.array([row[2] for row in rows], dtype=np.float32)


def _truth(images, identities):
    return dict(zip(images.tolist(), identities.tolist()))


def test_image_identities_are_match_components():
    pairs, targets = _graph_pairs()
    images, identities = image_identities(pairs, targets > 0.5)
    assert_array_equal(images, list("abcdefghix"))
    label = _truth(images, identities)
    assert label["a"] == label["b"] == label["c"]
    assert label["d"] == label["e"] != label["a"]
    assert label["f"] == label["g"] == label["h"] == label["i"]
    assert len({label["a"], label["d"], label["f"], label["x"]}) == 4


def _sampler(n_views=2, seed=0):
    pairs, targets = _graph_pairs()
    images, identities = image_identities(pairs, targets > 0.5)
    sampler = IdentitySampler(images, identities, n_views=n_views,
                              random_state=np.random.RandomState(seed))
    return sampler, _truth(images, identities)


def _assert_blocks(labels, sizes):
    """The labels come in consecutive blocks of these sizes, one distinct identity each."""
    starts = np.cumsum([0, *sizes[:-1]])
    assert len(labels) == sum(sizes)
    for start, size in zip(starts, sizes):
        assert (labels[start:start + size] == labels[start]).all()
    assert len(set(labels[starts].tolist())) == len(sizes)


def test_sampler_draws_p_identities_with_k_views():
    sampler, truth = _sampler(n_views=2)
    assert sampler.n_eligible == 3  # x has no second view
    seen_orders = set()
    for _ in range(50):
        paths, labels = sampler.sample(6)
        assert len(paths) == len(labels) == 6
        _assert_blocks(labels, [2, 2, 2])
        assert set(labels.tolist()) == {0, 1, 2}  # indices of the eligible identities
        seen_orders.add(tuple(labels[::2].tolist()))
        assert "x" not in paths.tolist()
        for label in range(3):
            members = paths[labels == label]
            assert len({truth[path] for path in members}) == 1
            assert len(set(members.tolist())) == 2  # distinct views: every identity has >= 2
    assert len(seen_orders) > 1  # identities are drawn in random order


def test_sampler_fills_batches_beyond_the_number_of_identities():
    sampler, truth = _sampler(n_views=2)
    paths, labels = sampler.sample(9)  # 3 identities only: 3 views each
    _assert_blocks(labels, [3, 3, 3])
    for label in range(3):
        members = paths[labels == label].tolist()
        assert len({truth[path] for path in members}) == 1
        assert len(set(members)) >= 2
    paths, labels = sampler.sample(5)  # the last identity gets fewer views
    _assert_blocks(labels, [2, 2, 1])


def test_no_positive_pair_is_ever_a_negative():
    sampler, truth = _sampler(n_views=3, seed=1)
    for n_images in [2, 3, 5, 6, 7, 9]:
        for _ in range(30):
            paths, labels = sampler.sample(n_images)
            identity = np.array([truth[path] for path in paths])
            same_label = labels[:, None] == labels[None, :]
            same_identity = identity[:, None] == identity[None, :]
            # A pair the loss treats as negative (different labels) is never
            # two views of one identity, and vice versa.
            assert_array_equal(same_label, same_identity)


def test_sampler_is_reproducible():
    first, _ = _sampler(seed=3)
    second, _ = _sampler(seed=3)
    for _ in range(5):
        assert_array_equal(first.sample(4)[0], second.sample(4)[0])


def _six_identities(hard_identities, seed=0):
    images = np.array([f"{identity}-{view}" for identity in range(6) for view in range(3)])
    identities = np.repeat(np.arange(6), 3)
    return IdentitySampler(images, identities, n_views=2, hard_identities=hard_identities,
                           random_state=np.random.RandomState(seed))


def _look_alike_embeddings():
    # Identities 0 and 1, 2 and 3, 4 and 5 are look-alikes: 10 degrees apart,
    # while the three groups are 120 degrees apart.
    angles = np.radians([0, 10, 120, 130, 240, 250])
    return np.column_stack([np.cos(angles), np.sin(angles)]).astype(np.float32)


def test_hard_identities_bring_the_nearest_look_alike_of_each_drawn_identity():
    sampler = _six_identities(hard_identities=0.5)
    partner = {0: 1, 1: 0, 2: 3, 3: 2, 4: 5, 5: 4}
    first_batch = sampler.sample(4)[1]  # no centroids yet: drawn at random
    assert sampler.centroids_ is None and len(set(first_batch.tolist())) == 2
    sampler.observe(np.arange(6), _look_alike_embeddings())
    for _ in range(30):
        paths, labels = sampler.sample(4)  # P = 2: one drawn, one its look-alike
        drawn, brought = labels[0], labels[2]
        assert brought == partner[drawn]
        assert all(path.startswith(f"{label}-") for path, label in zip(paths, labels))
    brought_by_first = 0
    for _ in range(60):  # P = 3: floor(0.5 * 3) = 1 brought, two drawn
        labels = sampler.sample(6)[1][::2]
        if labels[1] != partner[labels[0]]:  # else the look-alike was drawn already
            assert labels[2] == partner[labels[0]]
            brought_by_first += 1
        assert len(set(labels.tolist())) == 3
    assert brought_by_first > 30


def test_hard_identities_come_from_the_seen_identities_only():
    sampler = _six_identities(hard_identities=0.5)
    views = _look_alike_embeddings()
    sampler.observe(np.array([0, 2]), views[[0, 2]])  # only identities 0 and 2 seen
    for _ in range(40):
        labels = sampler.sample(4)[1][::2]
        drawn, brought = labels
        if drawn in (0, 2):  # the other seen identity, whatever its distance
            assert brought == 2 - drawn
        else:  # a drawn identity not seen yet has no centroid: either seen one
            assert brought in (0, 2)
    sampler = _six_identities(hard_identities=0.5)
    sampler.observe(np.array([0]), views[[0]])  # nothing seen but the drawn one
    for _ in range(20):
        labels = sampler.sample(4)[1][::2]
        assert labels[0] != labels[1]  # still two distinct identities


def test_random_identities_ignore_the_centroids():
    sampler = _six_identities(hard_identities=0.0)
    sampler.observe(np.arange(6), _look_alike_embeddings())
    partner = {0: 1, 1: 0, 2: 3, 3: 2, 4: 5, 5: 4}
    pairs = [sampler.sample(4)[1][::2] for _ in range(60)]
    assert any(b != partner[a] for a, b in pairs)


def test_observe_moves_centroids_with_momentum():
    sampler = _six_identities(hard_identities=0.5)
    views = _look_alike_embeddings()
    sampler.observe(np.array([0, 0, 2]), np.stack([views[0], views[1], views[2]]))
    mean = (views[0] + views[1]) / np.linalg.norm(views[0] + views[1])
    np.testing.assert_allclose(sampler.centroids_[0], mean, rtol=1e-6)
    np.testing.assert_allclose(sampler.centroids_[2], views[2], rtol=1e-6)
    assert not sampler.centroids_[1].any()  # unseen identities stay zero
    sampler.observe(torch.tensor([0]), torch.from_numpy(views[3:4]))  # tensors accepted
    moved = 0.9 * mean + 0.1 * views[3]
    np.testing.assert_allclose(sampler.centroids_[0], moved / np.linalg.norm(moved), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(sampler.centroids_[[0, 2]], axis=1), 1.0,
                               rtol=1e-6)


def _pair_dataset(image_pairs):
    X, y = image_pairs
    return PairDataset(X, y.astype(np.float32), image_size=8)


def test_training_pairs_unwraps_nested_subsets(image_pairs):
    dataset = _pair_dataset(image_pairs)
    outer = Subset(Subset(dataset, np.arange(10, 40)), np.arange(5))
    pairs, targets = training_pairs(outer)
    assert_array_equal(pairs, image_pairs[0][10:15])
    assert_array_equal(targets, image_pairs[1][10:15])
    assert training_pairs(PairDataset(image_pairs[0], None, image_size=8)) is None


def test_identity_batches_join_views_of_the_batch_length(image_pairs):
    X, y = image_pairs
    dataset = _pair_dataset(image_pairs)
    images, identities = image_identities(X, y == 1)
    sampler = IdentitySampler(images, identities, n_views=2,
                              random_state=np.random.RandomState(0))
    loaded = []

    def load(path):
        loaded.append(path)
        return torch.full((3, 8, 8), len(loaded), dtype=torch.uint8)

    loader = DataLoader(dataset, batch_size=7)
    batches = list(IdentityBatches(loader, sampler, load))
    assert len(batches) == len(IdentityBatches(loader, sampler, load)) == math.ceil(len(X) / 7)
    truth = _truth(images, identities)
    first = 0
    for Xi, yi in batches:
        n = len(yi)
        assert Xi["x1"].shape == Xi["x2"].shape == Xi["views"].shape[:1] + (3, 8, 8)
        assert len(Xi["views"]) == len(Xi["view_identities"]) == n
        paths = loaded[first:first + n]
        assert_array_equal(Xi["views"][:, 0, 0, 0], np.arange(first + 1, first + n + 1))
        labels = Xi["view_identities"].numpy()
        identity = np.array([truth[path] for path in paths])
        assert_array_equal(labels[:, None] == labels[None, :],
                           identity[:, None] == identity[None, :])
        first += n


class CountingAugmentation(torch.nn.Module):
    """A no-op augmentation that records how many images each training step sees."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, images):
        if self.training:
            self.seen.append(len(images))
        return images


def _train_batches(clf):
    return [batch for epoch in clf.history for batch in epoch["batches"]
            if "train_loss" in batch]


def test_classifier_mining_off_is_plain_pair_training(make_clf, image_pairs):
    X, y = image_pairs
    # With mining off, the mining parameters change nothing and no views are drawn.
    first = make_clf(pair_mining="none", mining_weight=5.0, views_per_identity=3,
                     augment=CountingAugmentation(), max_epochs=2).fit(X, y)
    second = make_clf(pair_mining="none", augment=CountingAugmentation(),
                      max_epochs=2).fit(X, y)
    assert_array_equal(first.predict_proba(X), second.predict_proba(X))
    assert all("identity_loss" not in batch for batch in _train_batches(first))
    sizes = [batch["train_batch_size"] for batch in _train_batches(first)]
    assert first.module_.augment.seen == [2 * size for size in sizes]  # two images per pair


def test_classifier_graph_mining_adds_views_and_identity_loss(make_clf, image_pairs):
    X, y = image_pairs
    clf = make_clf(pair_mining="graph", augment=CountingAugmentation(), max_epochs=1).fit(X, y)
    # A full batch holds several identities to contrast (a last batch of two
    # images may hold one identity only, whose loss is zero).
    assert all(batch["identity_loss"] > 0 for batch in _train_batches(clf)
               if batch["train_batch_size"] == clf.batch_size)
    sizes = [batch["train_batch_size"] for batch in _train_batches(clf)]
    # Two images per pair plus one mined view per pair, in one backbone call.
    assert clf.module_.augment.seen == [3 * size for size in sizes]


def test_identity_loss_trains_the_backbone_but_not_the_head(make_clf, image_pairs):
    X, y = image_pairs
    clf = make_clf(pair_mining="graph", max_epochs=1).fit(X, y)
    dataset = clf.get_dataset(X, (y == 1).astype(np.float32))
    Xi, yi = next(iter(clf.get_iterator(dataset, training=True)))
    clf.module_.train()
    clf.module_.zero_grad()
    logits, views = clf.infer(Xi)
    loss = supervised_contrastive_loss(views, Xi["view_identities"])
    loss.backward()
    assert clf.module_.head.log_scale.grad is None or clf.module_.head.log_scale.grad == 0
    grads = [p.grad for p in clf.module_.backbone.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def test_graph_mining_warns_and_trains_on_pairs_without_identities(make_clf, image_pairs):
    X, y = image_pairs
    # Only one matching pair: a single identity with two views, nothing to contrast.
    y_one = np.zeros_like(y)
    y_one[np.flatnonzero(y == 1)[0]] = 1
    with pytest.warns(UserWarning, match="found 1 identities"):
        clf = make_clf(pair_mining="graph", max_epochs=1, train_split=None).fit(X, y_one)
    assert "identity_loss" not in clf.history[-1, "batches", 0]


def test_graph_mining_is_reproducible(make_clf, image_pairs):
    X, y = image_pairs
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = make_clf(pair_mining="graph", max_epochs=2).fit(X, y)
    second = make_clf(pair_mining="graph", max_epochs=2).fit(X, y)
    assert_array_equal(first.predict_proba(X), second.predict_proba(X))


def test_mining_uses_training_pairs_only(make_clf, image_pairs, monkeypatch):
    X, y = image_pairs
    import sklearn_imgpair._training.mining as module

    seen = []
    original = module.image_identities

    def spy(pairs, is_match):
        seen.append(pairs)
        return original(pairs, is_match)

    monkeypatch.setattr(module, "image_identities", spy)
    make_clf(pair_mining="graph", max_epochs=1).fit(X, y)
    n_valid = math.ceil(0.1 * len(X))
    assert seen and len(seen[0]) == len(X) - n_valid  # validation pairs are not mined


def test_graph_mining_with_worker_processes(make_clf, image_pairs):
    X, y = image_pairs
    clf = make_clf(pair_mining="graph", max_epochs=1, iterator_train__num_workers=1)
    clf.fit(X, y)
    assert all("identity_loss" in batch for batch in _train_batches(clf))
    assert clf.predict_proba(X).shape == (len(X), 2)


def test_classifier_hard_identities_keep_one_sampler_per_fit(make_clf, image_pairs, monkeypatch):
    X, y = image_pairs
    import sklearn_imgpair._training.mining as module

    samplers, observed = [], []
    original_init = module.IdentitySampler.__init__
    original_observe = module.IdentitySampler.observe

    def spy_init(self, *args, **kwargs):
        samplers.append(self)
        original_init(self, *args, **kwargs)

    def spy_observe(self, labels, embeddings):
        observed.append(self)
        original_observe(self, labels, embeddings)

    monkeypatch.setattr(module.IdentitySampler, "__init__", spy_init)
    monkeypatch.setattr(module.IdentitySampler, "observe", spy_observe)
    clf = make_clf(pair_mining="graph", hard_identities=0.5, max_epochs=3).fit(X, y)
    # One sampler for all three epochs, fed after every training step.
    assert len(samplers) == 1 and samplers[0].hard_identities == 0.5
    assert len(observed) == len(_train_batches(clf)) and set(observed) == {samplers[0]}
    assert samplers[0].centroids_ is not None
    assert "_identity_sampler" not in vars(clf)  # dropped when training ends
    clf.fit(X, y)
    assert len(samplers) == 2  # a new fit, a new sampler
    # Without hard identities nothing is observed.
    observed.clear()
    make_clf(pair_mining="graph", max_epochs=1).fit(X, y)
    assert observed == []
