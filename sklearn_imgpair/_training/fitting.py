"""What ``fit`` and ``partial_fit`` of a pair classifier do around skorch's training loop.

One path for both: check the parameters once, start the time budget, read
every image of the labelled pairs once (before the network is built, where
its image size is known then, so that a bad image leaves a fitted estimator
as it was), build the network if needed, train through the net's one entry
into skorch's training (``_train_on``), and end the budget however training
ends.
"""

import contextlib

import numpy as np

from sklearn_imgpair._images.datasets import PairDataset, pair_dataset
from sklearn_imgpair._images.validation import (
    check_classes,
    check_labelled_pairs,
    check_pair_features,
)
from sklearn_imgpair._nn.backbone import expected_image_size
from sklearn_imgpair._nn.device import seeded
from sklearn_imgpair._training.budget import TimeBudget

__all__ = ["at_network_size", "fit_in_progress", "fit_pairs", "read_pairs", "time_budget"]


def fit_pairs(net, X, y, fit_params, *, classes=None, partial=False):
    """Fit ``net`` on labelled pairs: its ``fit``, or its ``partial_fit`` with ``partial=True``.

    ``fit`` builds a new network unless ``warm_start`` keeps the one it has;
    ``partial_fit`` builds one only the first time, and takes the labels it
    knows (``classes_``, else ``classes``).

    Parameters
    ----------
    net : PairNet
        The pair classifier.
    X : DataFrame, ndarray of shape (n_pairs, 2) or list of pairs
        Images, two per pair.
    y : array-like of shape (n_pairs,)
        Labels.
    fit_params : dict
        Passed to skorch's training; ``sample_weight`` is refused.
    classes : array-like, default=None
        The two labels, for a first ``partial_fit`` whose ``y`` holds one.
    partial : bool, default=False
        ``partial_fit`` rather than ``fit``.

    Returns
    -------
    net : PairNet
    """
    method = "partial_fit" if partial else "fit"
    if "sample_weight" in fit_params:  # skorch would pass it on to the module's forward
        raise TypeError(f"{type(net).__name__}.{method} got sample_weight, but sample weights "
                        "are not supported: every training pair counts once.")
    net._validate_hyperparameters()
    rebuild = not partial and (not net.warm_start or not net.initialized_)
    with _checked_parameters(net), time_budget(net), _classes_kept_on_failure(net):
        known = net.__dict__.get("classes_") if partial else None
        if known is None and classes is not None:
            known = check_classes(classes, net.match_label)
        if net.initialized_ and not rebuild:
            size = net.image_size_
        else:
            size = expected_image_size(net.model_name, net.image_size, net.model_kwargs)
        dataset, net.classes_ = read_pairs(net, X, y, known, image_size=size)
        with seeded(net.random_state):
            if rebuild or not net.initialized_:
                net.initialize()
            net._train_on(dataset, _routing_method=method, **fit_params)
    check_pair_features(net, X, reset=not partial or not hasattr(net, "n_features_in_"))
    return net


@contextlib.contextmanager
def _checked_parameters(net):
    """Mark the fit under way, whose parameters were just checked, until it ends.

    The net's ``initialize`` then leaves the parameters to that check. The mark
    is the net's private ``_fitting`` flag, which its pickles leave out.
    """
    net.__dict__["_fitting"] = True
    try:
        yield
    finally:
        net.__dict__.pop("_fitting", None)


@contextlib.contextmanager
def time_budget(net):
    """Start the net's time budget (``time_budget_``) and end it however the fit ends."""
    net.time_budget_ = TimeBudget(net.time_limit)
    try:
        yield net.time_budget_
    finally:
        net.time_budget_.ended = True


def fit_in_progress(net):
    """Whether ``net`` is inside :func:`fit_pairs`, which has checked its parameters."""
    return net.__dict__.get("_fitting", False)


@contextlib.contextmanager
def _classes_kept_on_failure(net):
    """Where a fit fails before it builds a new network, ``classes_`` stays as it was."""
    previous_classes = net.__dict__.get("classes_")
    previous_module = getattr(net, "module_", None)
    try:
        yield
    except Exception:
        if getattr(net, "module_", None) is previous_module:
            net.__dict__.pop("classes_", None)
            if previous_classes is not None:
                net.classes_ = previous_classes
        raise


def read_pairs(net, X, y, classes=None, *, image_size):
    """Validate ``X`` and ``y`` and read every image once, before any training.

    ``y`` is checked before the shape and cells of ``X``, as scikit-learn's
    checks of bad labels (on numeric ``X``) expect. Images are read at
    ``image_size``; with None they are read once the network is built, by
    :func:`at_network_size`.

    Returns
    -------
    dataset : PairDataset
    classes : ndarray of shape (2,)
    """
    pairs, classes, targets = check_labelled_pairs(X, y, net.match_label, classes)
    dataset = pair_dataset(pairs, targets, image_size=image_size,
                           cache_size=net.cache_size, on_error=net.on_error,
                           require_both_classes=np.unique(targets).size == 2,
                           read=image_size is not None)
    return dataset, classes


def at_network_size(net, dataset):
    """The training pairs, read again where the network takes another image size."""
    if not isinstance(dataset, PairDataset) or dataset.image_size == net.image_size_:
        return dataset
    return pair_dataset(dataset.pairs, dataset.y, image_size=net.image_size_,
                        cache_size=net.cache_size, on_error=net.on_error,
                        require_both_classes=np.unique(dataset.y).size == 2)
