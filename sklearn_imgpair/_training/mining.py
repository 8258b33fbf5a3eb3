"""Identities mined from the pair graph: the graph, identity-balanced batches and their loss.

Images joined by matching pairs are views of one identity (see
:func:`match_components`). Training batches of P identities times K views
then give every image K - 1 positives and all other identities' views as
negatives; two views of one identity are never used as a negative pair.
Everything ``pair_mining="graph"`` does lives here; the pair network's skorch
hooks (:class:`PairNet`) call :func:`identity_batches` and :func:`identity_loss`.
"""

import warnings

import numpy as np
import torch

from sklearn_imgpair._images.cells import cell_sort_key
from sklearn_imgpair._images.datasets import training_pairs, unwrap_subsets

__all__ = [
    "IdentityBatches",
    "IdentitySampler",
    "identity_batches",
    "identity_loss",
    "image_identities",
    "match_components",
    "supervised_contrastive_loss",
]


def _find(parent, node):
    root = node
    while parent[root] != root:
        root = parent[root]
    while parent[node] != root:  # path compression
        parent[node], node = root, parent[node]
    return root


def _components(pairs, is_match):
    """Distinct images, each pair cell's index into them, and each image's component.

    An image is a cell: a multi-image cell is one node. Images are sorted
    (paths by name, after in-memory and multi-image cells, see
    :func:`cell_sort_key`).
    """
    cells = np.asarray(pairs, dtype=object).ravel()
    keys = np.empty(len(cells), dtype=object)
    keys[:] = [cell_sort_key(cell) for cell in cells]
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    images = cells[first]
    inverse = inverse.reshape(-1, 2)
    parent = list(range(len(images)))
    for (a, b), match in zip(inverse.tolist(), np.asarray(is_match).tolist()):
        if match:
            root_a, root_b = _find(parent, a), _find(parent, b)
            if root_a != root_b:
                parent[max(root_a, root_b)] = min(root_a, root_b)
    roots = np.array([_find(parent, node) for node in range(len(images))], dtype=int)
    order = {}
    for root in roots[inverse.ravel()].tolist():  # label in order of first appearance
        order.setdefault(root, len(order))
    return images, inverse, np.array([order[root] for root in roots.tolist()], dtype=int)


def match_components(pairs, is_match):
    """Label every image with the connected component of the match edges.

    Two images are in one component when a chain of matching pairs joins
    them (a-b and b-c put a, b and c together). Non-matching pairs join
    nothing, so an image seen only in non-matching pairs is a component of
    its own.

    Parameters
    ----------
    pairs : ndarray of shape (n_pairs, 2)
        Image paths.
    is_match : array-like of shape (n_pairs,)
        Truthy where the pair is a match.

    Returns
    -------
    pair_components : ndarray of shape (n_pairs, 2), dtype=int
        Component label of each image of each pair; labels are
        ``0 .. n_components - 1`` in order of first appearance.
    """
    _, inverse, labels = _components(pairs, is_match)
    return labels[inverse]


def image_identities(pairs, is_match):
    """Return the distinct images of ``pairs`` and the identity of each.

    Identities are the components of :func:`match_components`, with the
    same labels; the parameters are the same too.

    Returns
    -------
    images : ndarray of shape (n_images,)
        The distinct cells, sorted (see :func:`cell_sort_key`).
    identities : ndarray of shape (n_images,), dtype=int
        Identity label of each image.
    """
    images, _, labels = _components(pairs, is_match)
    return images, labels


def supervised_contrastive_loss(embeddings, labels, temperature=0.1):
    """Supervised contrastive loss (Khosla et al., 2020) of L2-normalised embeddings.

    For every anchor ``i`` with at least one positive (another vector with
    its label), the loss is the mean over its positives ``p`` of
    ``-log(exp(s_ip / t) / sum_{a != i} exp(s_ia / t))``, where ``s`` is the
    cosine similarity and ``t`` the temperature; the result is the mean over
    those anchors. Vectors with one label are only ever positives of each
    other; the denominator runs over all other vectors, as in the paper.

    Parameters
    ----------
    embeddings : torch.Tensor of shape (n, d)
        Unit-length vectors.
    labels : torch.Tensor of shape (n,)
        Identity of each vector.
    temperature : float, default=0.1
        Divides the cosine similarities; lower values weigh hard negatives
        more.

    Returns
    -------
    loss : torch.Tensor
        Scalar; zero when no vector has a positive.
    """
    labels = labels.reshape(-1)
    n = len(labels)
    logits = embeddings.float() @ embeddings.float().T / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    n_positives = positives.sum(dim=1)
    anchors = n_positives > 0
    if not anchors.any():
        return 0.0 * embeddings.sum()  # zero, and still part of the graph
    positive_log_prob = log_prob.masked_fill(~positives, 0.0).sum(dim=1)
    return -(positive_log_prob[anchors] / n_positives[anchors]).mean()


class IdentitySampler:
    """Draw batches of images: P identities with K views each.

    Only identities with at least two distinct images are drawn: an image
    seen in non-matching pairs only has no known second view. Identities are
    drawn without replacement within a batch, and so are the views of an
    identity with at least K images; smaller identities repeat images
    (augmentation then makes the copies differ).

    With ``hard_identities`` above 0, part of each batch's identities are not
    drawn at random but are the nearest neighbours of the others in the
    embedding being learned: the sampler keeps a running centroid of each
    identity's view embeddings (:meth:`observe`, after every training step,
    at no extra forward pass), and each randomly drawn identity in turn
    brings the closest identity not yet in the batch. The contrastive loss
    then spends its batch on look-alikes rather than on identities that are
    already far apart.

    Parameters
    ----------
    images : ndarray of shape (n_images,)
        Image paths.
    identities : ndarray of shape (n_images,), dtype=int
        Identity label of each image.
    n_views : int
        Images per identity (K); more when there are too few identities to
        fill a batch.
    random_state : numpy.random.RandomState
        Source of randomness.
    hard_identities : float, default=0.0
        Share of each batch's identities (rounded down) chosen as nearest
        neighbours of the randomly drawn ones, among the identities
        :meth:`observe` has seen; at least one identity per batch is always
        drawn at random.
    momentum : float, default=0.9
        Weight of an identity's old centroid when :meth:`observe` moves it
        towards the mean of the views just seen.

    Attributes
    ----------
    centroids_ : ndarray of shape (n_eligible, d) or None
        Unit-length running centroid of each eligible identity (zero until
        seen); None before :meth:`observe` is first called.
    """

    def __init__(self, images, identities, *, n_views, random_state, hard_identities=0.0,
                 momentum=0.9):
        self.images = np.asarray(images, dtype=object)
        members = {}
        for index, identity in enumerate(np.asarray(identities).tolist()):
            members.setdefault(identity, []).append(index)
        self.members_ = [np.array(m) for m in members.values() if len(m) >= 2]
        self.n_views = n_views
        self.random_state = random_state
        self.hard_identities = hard_identities
        self.momentum = momentum
        self.centroids_ = None

    @property
    def n_eligible(self):
        """Number of identities with at least two images."""
        return len(self.members_)

    def _choose(self, n_identities):
        """The identities of one batch: some at random, the rest their nearest neighbours."""
        rng = self.random_state
        n_hard = 0
        if self.centroids_ is not None:
            n_hard = min(int(self.hard_identities * n_identities), n_identities - 1)
        n_random = n_identities - n_hard
        chosen = rng.choice(self.n_eligible, size=n_random, replace=False).tolist()
        if not n_hard:
            return np.array(chosen)
        # Candidates: identities seen by observe (an unseen one has no centroid yet).
        available = np.abs(self.centroids_).sum(axis=1) > 0
        available[chosen] = False
        for i in range(n_hard):  # each drawn identity brings its closest in turn
            if available.any():
                similarity = self.centroids_ @ self.centroids_[chosen[i % n_random]]
                nearest = int(np.argmax(np.where(available, similarity, -np.inf)))
            else:  # nothing seen is left: draw among the identities not in the batch
                nearest = int(rng.choice(np.setdiff1d(np.arange(self.n_eligible), chosen)))
            chosen.append(nearest)
            available[nearest] = False
        return np.array(chosen)

    def sample(self, n_images):
        """Draw a batch of ``n_images`` images, K per identity (the last may have fewer).

        Returns
        -------
        paths : ndarray of shape (n_images,)
        labels : ndarray of shape (n_images,), dtype=int64
            The identity of each image, as an index ``0 .. n_eligible - 1``
            into the eligible identities (the labels :meth:`observe` takes);
            the K views of one identity are consecutive.
        """
        rng = self.random_state
        n_identities = min(-(-n_images // self.n_views), self.n_eligible)
        n_views = -(-n_images // n_identities)
        indices, labels = [], []
        for identity in self._choose(n_identities).tolist():
            members = self.members_[identity]
            replace = len(members) < n_views
            picked = rng.choice(members, size=n_views, replace=replace)
            if replace and len(np.unique(picked)) < 2:  # keep two distinct views
                picked[:2] = rng.choice(members, size=2, replace=False)
            indices.extend(picked.tolist())
            labels.extend([identity] * n_views)
        indices, labels = indices[:n_images], labels[:n_images]
        return self.images[indices], np.array(labels, dtype=np.int64)

    def observe(self, labels, embeddings):
        """Move the centroids of the identities in a batch towards their views' embeddings.

        Parameters
        ----------
        labels : array-like of shape (n_images,)
            Identities of the views, as :meth:`sample` returned them.
        embeddings : array-like of shape (n_images, d)
            Their unit-length embeddings (a tensor is detached and copied to
            the CPU).
        """
        if isinstance(embeddings, torch.Tensor):
            embeddings = embeddings.detach().float().cpu().numpy()
        labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
        if self.centroids_ is None:
            self.centroids_ = np.zeros((self.n_eligible, embeddings.shape[1]), dtype=np.float32)
        seen, inverse = np.unique(labels, return_inverse=True)
        means = np.zeros((len(seen), embeddings.shape[1]), dtype=np.float32)
        np.add.at(means, inverse, embeddings)
        old = self.centroids_[seen]
        new = np.where(np.abs(old).sum(1, keepdims=True) > 0,
                       self.momentum * old + (1.0 - self.momentum) * _unit(means), _unit(means))
        self.centroids_[seen] = _unit(new)


def _unit(rows):
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


class IdentityBatches:
    """Pair batches, each joined by an identity batch from an :class:`IdentitySampler`.

    Iterating yields the pair loader's ``(X, y)`` batches with two more keys
    in ``X``: ``"views"``, as many mined images as the batch has pairs (P
    identities x K views) as a uint8 tensor, and ``"view_identities"``, their
    identity labels (the sampler's). Every entry of ``X`` keeps the batch's
    length, as skorch expects; one identity batch comes with every pair
    batch, so an epoch is still one pass over the pairs.

    Parameters
    ----------
    pair_loader : iterable
        The usual training iterator over pairs.
    sampler : IdentitySampler
        Draws the identity batches.
    load : callable
        ``load(cell)`` returns the decoded uint8 image tensor of a cell (one
        image of a multi-image cell).
    device : str or torch.device, default=None
        Where the identity batches are sent; None leaves them on the CPU.
    """

    def __init__(self, pair_loader, sampler, load, *, device=None):
        self.pair_loader = pair_loader
        self.sampler = sampler
        self.load = load
        self.device = device

    def __len__(self):
        return len(self.pair_loader)

    def __iter__(self):
        for X, y in self.pair_loader:
            paths, labels = self.sampler.sample(len(y))
            views = torch.stack([self.load(path) for path in paths])
            labels = torch.from_numpy(labels)
            if self.device is not None:
                views, labels = views.to(self.device), labels.to(self.device)
            yield {**X, "views": views, "view_identities": labels}, y


def identity_batches(dataset, iterator, *, n_views, device=None, seed_offset=0,
                     hard_identities=0.0):
    """Join identity batches, mined from ``dataset``'s pairs, to ``iterator``.

    Parameters
    ----------
    dataset : PairDataset or Subset of one
        The training pairs, as skorch passes them to ``get_iterator``.
    iterator : iterable
        The training iterator over those pairs.
    n_views : int
        Images per identity (K).
    device : str or torch.device, default=None
        Where the identity batches go; None leaves them on the CPU, as the
        pair batches are.
    seed_offset : int, default=0
        Added to the sampler's seed (drawn from torch's generator), so that
        several training processes draw different identities.
    hard_identities : float, default=0.0
        The sampler's ``hard_identities`` (see :class:`IdentitySampler`).

    Returns
    -------
    iterator : IdentityBatches or the given iterator
        The given iterator, with a warning, when the data hold no pairs of
        paths or fewer than two identities with two images.
    """
    found = training_pairs(dataset)
    if found is None:
        warnings.warn(
            f"pair_mining='graph' needs the training pairs, but the training data is a "
            f"{type(dataset).__name__}, not pairs of paths; training on the pairs alone.",
            UserWarning, stacklevel=3)
        return iterator
    pairs, targets = found
    images, identities = image_identities(pairs, targets > 0.5)
    seed = int(torch.randint(np.iinfo(np.int32).max, ()).item()) + seed_offset
    sampler = IdentitySampler(images, identities, n_views=n_views,
                              random_state=np.random.RandomState(seed),
                              hard_identities=hard_identities)
    if sampler.n_eligible < 2:
        warnings.warn(
            f"pair_mining='graph' found {sampler.n_eligible} identities with two or more "
            "images in the training pairs (it needs two); training on the pairs alone.",
            UserWarning, stacklevel=3)
        return iterator
    dataset, _ = unwrap_subsets(dataset)
    # One image of a multi-image cell, drawn at random, as the pairs read them.
    return IdentityBatches(iterator, sampler, dataset.read_cell, device=device)


def identity_loss(view_embeddings, view_identities, *, temperature, sampler=None):
    """The identity loss of a mined batch: :func:`supervised_contrastive_loss` of its views.

    Parameters
    ----------
    view_embeddings : torch.Tensor of shape (n_views, d)
        Unit-length embeddings of the batch's views.
    view_identities : array-like of shape (n_views,)
        Their identities (the batch's ``"view_identities"``).
    temperature : float
        The loss's temperature.
    sampler : IdentitySampler, default=None
        In training, the sampler that drew the views: with ``hard_identities``
        above 0 it is fed the views' embeddings (:meth:`IdentitySampler.observe`).

    Returns
    -------
    loss : torch.Tensor
        Scalar.
    """
    identities = torch.as_tensor(view_identities, device=view_embeddings.device)
    loss = supervised_contrastive_loss(view_embeddings, identities, temperature)
    if sampler is not None and sampler.hard_identities > 0:
        sampler.observe(identities, view_embeddings)
    return loss
