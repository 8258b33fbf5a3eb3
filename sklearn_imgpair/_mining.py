"""Identities mined from the pair graph: identity-balanced batches and a contrastive loss.

Images joined by matching pairs are views of one identity (see
:func:`~sklearn_imgpair._graph.match_components`). Training batches of P
identities times K views then give every image K - 1 positives and all other
identities' views as negatives; two views of one identity are never used as a
negative pair.
"""

import numpy as np
import torch


__all__ = [
    "IdentityBatches",
    "IdentitySampler",
    "supervised_contrastive_loss",
    "training_pairs",
    "unwrap_subsets",
]


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
    """

    def __init__(self, images, identities, *, n_views, random_state):
        self.images = np.asarray(images, dtype=object)
        members = {}
        for index, identity in enumerate(np.asarray(identities).tolist()):
            members.setdefault(identity, []).append(index)
        self.members_ = [np.array(m) for m in members.values() if len(m) >= 2]
        self.n_views = n_views
        self.random_state = random_state

    @property
    def n_eligible(self):
        """Number of identities with at least two images."""
        return len(self.members_)

    def sample(self, n_images):
        """Draw a batch of ``n_images`` images, K per identity (the last may have fewer).

        Returns
        -------
        paths : ndarray of shape (n_images,)
        labels : ndarray of shape (n_images,), dtype=int64
            Batch-local identity of each image: ``0 .. P - 1``.
        """
        rng = self.random_state
        n_identities = min(-(-n_images // self.n_views), self.n_eligible)
        n_views = -(-n_images // n_identities)
        chosen = rng.choice(self.n_eligible, size=n_identities, replace=False)
        indices, labels = [], []
        for label, identity in enumerate(chosen):
            members = self.members_[identity]
            replace = len(members) < n_views
            picked = rng.choice(members, size=n_views, replace=replace)
            if replace and len(np.unique(picked)) < 2:  # keep two distinct views
                picked[:2] = rng.choice(members, size=2, replace=False)
            indices.extend(picked.tolist())
            labels.extend([label] * n_views)
        indices, labels = indices[:n_images], labels[:n_images]
        return self.images[indices], np.array(labels, dtype=np.int64)


def unwrap_subsets(dataset):
    """Return the dataset under nested Subsets and the indices they select (None: all)."""
    indices = None
    while isinstance(dataset, torch.utils.data.Subset):
        indices = (np.asarray(dataset.indices) if indices is None
                   else np.asarray(dataset.indices)[indices])
        dataset = dataset.dataset
    return dataset, indices


def training_pairs(dataset):
    """Return the pairs and targets behind a :class:`PairDataset` or a Subset of one.

    Parameters
    ----------
    dataset : torch.utils.data.Dataset
        The training data as skorch passes it to ``get_iterator``: a
        ``PairDataset``, or (after a validation split) nested Subsets of one.

    Returns
    -------
    found : tuple of (ndarray of shape (n, 2), ndarray of shape (n,)) or None
        The pairs and their targets, or None for datasets of another kind or
        without targets.
    """
    dataset, indices = unwrap_subsets(dataset)
    pairs, targets = getattr(dataset, "pairs", None), getattr(dataset, "y", None)
    if pairs is None or targets is None:
        return None
    if indices is not None:
        pairs, targets = pairs[indices], np.asarray(targets)[indices]
    return pairs, np.asarray(targets)


class IdentityBatches:
    """Pair batches, each joined by an identity batch from an :class:`IdentitySampler`.

    Iterating yields the pair loader's ``(X, y)`` batches with two more keys
    in ``X``: ``"views"``, as many mined images as the batch has pairs (P
    identities x K views) as a uint8 tensor, and ``"view_identities"``, their
    batch-local identity labels. Every entry of ``X`` keeps the batch's
    length, as skorch expects; one identity batch comes with every pair
    batch, so an epoch is still one pass over the pairs.

    Parameters
    ----------
    pair_loader : iterable
        The usual training iterator over pairs.
    sampler : IdentitySampler
        Draws the identity batches.
    load : callable
        ``load(path)`` returns the decoded uint8 image tensor of ``path``.
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
