"""Identities from the pair graph: images joined by match edges show one identity."""

import numpy as np

__all__ = ["image_identities", "match_components"]


def _find(parent, node):
    root = node
    while parent[root] != root:
        root = parent[root]
    while parent[node] != root:  # path compression
        parent[node], node = root, parent[node]
    return root


def _components(pairs, is_match):
    """Distinct images, each pair cell's index into them, and each image's component."""
    images, inverse = np.unique(np.asarray(pairs, dtype=object).ravel(), return_inverse=True)
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
        The distinct paths, sorted.
    identities : ndarray of shape (n_images,), dtype=int
        Identity label of each image.
    """
    images, _, labels = _components(pairs, is_match)
    return images, labels
