"""Model selection: validation ROC AUC, early stopping on it, and unwrapping DDP or compile."""

import copy

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from skorch.callbacks import Callback
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from sklearn_imgpair._training.budget import StopTraining

__all__ = ["AucEarlyStopping", "bare_module", "valid_roc_auc"]


def valid_roc_auc(net, X, y):
    """ROC AUC of the match logits on a validation set.

    Used with :class:`skorch.callbacks.EpochScoring` and ``use_caching=True``,
    it reuses the logits computed during the validation step instead of
    running the network again.

    Returns NaN when the validation targets hold a single class.
    """
    logits = net.forward(X).detach().cpu().numpy().reshape(-1)
    y = np.asarray(y).reshape(-1)
    if np.unique(y).size < 2:
        return float("nan")
    return float(roc_auc_score(y, logits))


def bare_module(module):
    """The module inside DDP (``module``) or torch.compile (``_orig_mod``) wrappers."""
    while True:
        inner = getattr(module, "module", None) or getattr(module, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            return module
        module = inner


def _strip_wrapper_prefixes(state_dict, module):
    """Drop the key prefixes of DDP (``module.``) or torch.compile (``_orig_mod.``) wrappers.

    A snapshot of a wrapped module's weights fits the bare module once
    training has unwrapped it (as skorch's ``AccelerateMixin`` does).
    """
    keys = list(module.state_dict())
    for prefix in ("module.", "_orig_mod."):
        if state_dict and not any(key.startswith(prefix) for key in keys):
            consume_prefix_in_state_dict_if_present(state_dict, prefix)


class AucEarlyStopping(Callback):
    """Select the epoch with the best validation ROC AUC; stop when it no longer improves.

    ROC AUC often saturates (at 1.0 on easy data) while the probabilities
    keep getting better calibrated; comparing ``(valid_auc, valid_loss)``
    keeps the epoch with the best ranking and, among equals, the lowest
    loss. Each epoch's history row gets ``event_best`` (whether it is the
    best so far). After ``patience`` epochs without a better one, training
    stops (:class:`StopTraining`). With ``load_best=True`` the best epoch's
    weights are restored when training ends, however it ends (patience, time
    limit, interruption), and the last history row records which epoch's
    (``restored_epoch``), for :class:`HeadCalibration`.

    Parameters
    ----------
    patience : int, default=5
        Epochs without improvement before training stops.
    load_best : bool, default=True
        Restore the best epoch's module weights at the end of training.
    calibrate : bool, default=True
        Let :class:`HeadCalibration` refit the head on the restored epoch;
        False keeps the head as trained (as ``callbacks__calibration=None``
        does).
    sink : callable, default=print
        Receives messages when ``net.verbose`` is set.

    Attributes
    ----------
    best_epoch_ : int
        The selected epoch (counted from 1), 0 before one has a valid score.
    best_score_ : tuple of float or None
        Its ``(valid_auc, valid_loss)``.
    misses_ : int
        Epochs since the best one.
    best_model_weights_ : dict or None
        A copy of the best epoch's state dict (``load_best=True``).
    """

    def __init__(self, patience=5, load_best=True, calibrate=True, sink=print):
        self.patience = patience
        self.load_best = load_best
        self.calibrate = calibrate
        self.sink = sink

    def initialize(self):
        self.best_epoch_, self.best_score_, self.misses_ = 0, None, 0
        self.best_model_weights_ = None
        return self

    # pylint: disable=arguments-differ
    def on_train_begin(self, net, **kwargs):
        self.initialize()

    def _is_better(self, auc, loss):
        if np.isnan(auc):
            return False
        if self.best_score_ is None:
            return True
        best_auc, best_loss = self.best_score_
        return auc > best_auc or (auc == best_auc and loss < best_loss)

    def on_epoch_end(self, net, **kwargs):
        auc, loss = net.history[-1, "valid_auc"], net.history[-1, "valid_loss"]
        improved = self._is_better(auc, loss)
        net.history.record("event_best", improved)
        if improved:
            self.best_epoch_, self.best_score_, self.misses_ = len(net.history), (auc, loss), 0
            if self.load_best:
                self.best_model_weights_ = copy.deepcopy(net.module_.state_dict())
            return
        self.misses_ += 1
        if self.misses_ >= self.patience:
            if net.verbose:
                self.sink(f"Stopping: valid_auc has not improved for {self.misses_} epochs; "
                          f"the best was epoch {self.best_epoch_}.")
            raise StopTraining

    def on_train_end(self, net, **kwargs):
        if not self.load_best or self.best_model_weights_ is None:
            return
        _strip_wrapper_prefixes(self.best_model_weights_, net.module_)
        net.module_.load_state_dict(self.best_model_weights_)
        net.history.record("restored_epoch", self.best_epoch_)
        if not self.calibrate:
            net.history.record("calibrate", False)
        if net.verbose:
            self.sink(f"Restored the weights of epoch {self.best_epoch_} "
                      f"(valid_auc={self.best_score_[0]:.4f}).")
