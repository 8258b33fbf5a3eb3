"""Identities from the pair graph: images joined by match edges show one identity."""

import numpy as np

__all__ = ["match_components"]


def _find(parent, node):
    root = node
    while parent[root] != root:
        root = parent[root]
    while parent[node] != root:  # path compression
        parent[node], node = root, parent[node]
    return root


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
    images, inverse = np.unique(np.asarray(pairs).ravel(), return_inverse=True)
    inverse = inverse.reshape(-1, 2)
    parent = list(range(len(images)))
    for (a, b), match in zip(inverse.tolist(), np.asarray(is_match).tolist()):
        if match:
            root_a, root_b = _find(parent, a), _find(parent, b)
            if root_a != root_b:
                parent[max(root_a, root_b)] = min(root_a, root_b)
    roots = np.array([_find(parent, node) for node in range(len(images))])
    order = {}
    labels = np.array([order.setdefault(root, len(order)) for root in roots[inverse.ravel()]])
    return labels.reshape(-1, 2)
