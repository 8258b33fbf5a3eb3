"""IdentityValidSplit: a validation split that holds out whole identities, not pairs."""

import warnings

import numpy as np
from sklearn.utils import check_random_state
from skorch.dataset import ValidSplit
from torch.utils.data import Subset

from sklearn_imgpair._training.mining import match_components

__all__ = ["IdentityValidSplit"]


class IdentityValidSplit:
    """Split pairs for validation so that validation images are new identities.

    Images joined by matching pairs form one identity (see
    ``match_components``). Whole identities, drawn at random, are held
    out until their pairs make up ``test_size`` of all pairs; every pair that
    touches a held-out identity goes to validation. The validation score then
    measures matching of objects never seen in training, as on a real test
    set, and the probabilities calibrated on it (see
    :class:`HeadCalibration`) hold for new objects too. A plain split of
    pairs would put other views of the training objects into validation and
    overrate the model.

    Where identities cannot be held out (one identity spans over half of the
    pairs, or a side would lack a class), it warns and falls back to
    skorch's stratified split of pairs.

    Parameters
    ----------
    test_size : float, default=0.1
        Fraction of the pairs to hold out.
    random_state : int, RandomState instance or None, default=None
        Which identities are held out. None uses numpy's global generator,
        which :class:`ImagePairClassifier` seeds from its ``random_state``.
    """

    def __init__(self, test_size=0.1, random_state=None):
        self.test_size = test_size
        self.random_state = random_state

    def __repr__(self):
        return f"{type(self).__name__}(test_size={self.test_size!r})"

    def _fallback(self, dataset, y, reason):
        warnings.warn(
            f"Cannot hold out whole identities for validation ({reason}); validating "
            "on a stratified split of pairs instead, whose images may also be in "
            "training.", UserWarning, stacklevel=3)
        return ValidSplit(self.test_size, stratified=True,
                          random_state=self.random_state)(dataset, y)

    def __call__(self, dataset, y=None, groups=None, **kwargs):
        pairs = getattr(dataset, "pairs", None)
        if pairs is None or y is None:
            return ValidSplit(self.test_size, stratified=y is not None,
                              random_state=self.random_state)(dataset, y)
        y = np.asarray(y).reshape(-1)
        components = match_components(pairs, y > 0.5)
        n_components = int(components.max()) + 1
        rank = check_random_state(self.random_state).permutation(n_components)
        pair_rank = rank[components].min(axis=1)
        n_valid = max(1, int(np.ceil(self.test_size * len(y))))
        cutoff = np.sort(pair_rank)[n_valid - 1]
        is_valid = pair_rank <= cutoff
        if is_valid.mean() > 0.5:
            return self._fallback(dataset, y, "one identity spans most pairs")
        if np.unique(y[is_valid]).size < 2 or np.unique(y[~is_valid]).size < 2:
            return self._fallback(dataset, y, "a side would hold a single class")
        return (Subset(dataset, np.flatnonzero(~is_valid)),
                Subset(dataset, np.flatnonzero(is_valid)))
