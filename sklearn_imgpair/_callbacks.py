"""skorch callbacks for pair training: time limit, LR schedule, validation AUC, model selection."""

import math
import time

import numpy as np
import torch
from skorch.callbacks import Callback, EarlyStopping
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

__all__ = ["AucEarlyStopping", "CosineSchedule", "TimeLimit", "valid_roc_auc"]


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


def _on_any_process(net, flag):
    """Whether ``flag`` is set on any of the net's training processes.

    A net trained by several processes (skorch's ``AccelerateMixin``, with an
    ``accelerator`` attribute) must stop on all of them at the same step, or
    the others wait forever for its gradients; one process's flag is shared
    with accelerate's trigger. Every process must call this at the same step.
    """
    accelerator = getattr(net, "accelerator", None)
    if accelerator is None or accelerator.num_processes == 1:
        return flag
    if flag:
        accelerator.set_trigger()
    return bool(accelerator.check_trigger())


def _strip_wrapper_prefixes(state_dict, module):
    """Drop the key prefixes of DDP (``module.``) or torch.compile (``_orig_mod.``) wrappers.

    A snapshot of a wrapped module's weights fits the bare module once
    training has unwrapped it (as skorch's ``AccelerateMixin`` does).
    """
    keys = list(module.state_dict())
    for prefix in ("module.", "_orig_mod."):
        if state_dict and not any(key.startswith(prefix) for key in keys):
            consume_prefix_in_state_dict_if_present(state_dict, prefix)


class AucEarlyStopping(EarlyStopping):
    """Early stopping on validation ROC AUC, best-epoch restore and calibration.

    ROC AUC often saturates (at 1.0 on easy data) while the probabilities
    keep getting better calibrated; comparing ``(valid_auc, valid_loss)``
    keeps the epoch with the best ranking and, among equals, the lowest
    loss. With ``load_best=True`` that epoch's weights are restored when
    training ends, however it ends (patience, time limit, interruption).

    With ``calibrate=True`` the match head's scale and bias are then refitted
    on that epoch's validation logits (Platt scaling: a one-dimensional
    logistic regression), so that ``predict_proba`` is calibrated on pairs
    the network did not train on, in the class balance of the user's pairs.
    The validation logits of the best epoch are kept from the validation
    pass, so this costs no extra forward pass.

    Parameters
    ----------
    patience : int, default=5
        Epochs without improvement before training stops.
    load_best : bool, default=True
        Restore the best epoch's module weights at the end of training.
    calibrate : bool, default=True
        Refit the head on the best epoch's validation logits; needs
        ``load_best=True``.
    sink : callable, default=print
        Receives messages when ``net.verbose`` is set.

    Attributes
    ----------
    calibration_ : tuple of float or None
        ``(a, b)`` of the last calibration: new logits are ``a * logits + b``.
    """

    def __init__(self, patience=5, load_best=True, calibrate=True, sink=print):
        super().__init__(monitor=("valid_auc", "valid_loss"), patience=patience,
                         threshold=0.0, threshold_mode="abs", lower_is_better=False,
                         sink=sink, load_best=load_best)
        self.calibrate = calibrate

    def _is_score_improved(self, score):
        auc, loss = score
        if np.isnan(auc):
            return False
        if not isinstance(self.dynamic_threshold_, tuple):
            return True
        best_auc, best_loss = self.dynamic_threshold_
        return auc > best_auc or (auc == best_auc and loss < best_loss)

    def _calc_new_threshold(self, score):
        return tuple(score)

    # pylint: disable=arguments-differ
    def on_train_begin(self, net, **kwargs):
        super().on_train_begin(net, **kwargs)
        self.calibration_ = None
        self._epoch_outputs = []
        self._best_outputs = None

    def on_epoch_begin(self, net, **kwargs):
        self._epoch_outputs = []

    def on_batch_end(self, net, batch=None, training=False, y_pred=None, **kwargs):
        if not training and y_pred is not None:
            targets = batch[1]
            self._epoch_outputs.append((y_pred.detach().float().cpu().reshape(-1),
                                        targets.detach().float().cpu().reshape(-1)))

    def on_epoch_end(self, net, **kwargs):
        best_epoch = self.best_epoch_
        try:
            super().on_epoch_end(net, **kwargs)
        finally:
            if self.best_epoch_ != best_epoch and self._epoch_outputs:
                self._best_outputs = self._epoch_outputs

    def on_train_end(self, net, **kwargs):
        if self.best_model_weights_ is not None:
            _strip_wrapper_prefixes(self.best_model_weights_, net.module_)
        super().on_train_end(net, **kwargs)
        if not (self.calibrate and self.load_best and self._best_outputs):
            return
        logits = torch.cat([logit for logit, _ in self._best_outputs]).numpy()
        targets = torch.cat([target for _, target in self._best_outputs]).numpy()
        if np.unique(targets).size < 2:
            return
        model = LogisticRegression(C=1e4).fit(logits.reshape(-1, 1), targets.astype(int))
        a, b = float(model.coef_[0, 0]), float(model.intercept_[0])
        if a <= 0:  # the logits rank validation pairs the wrong way: leave the head alone
            return
        head = net.module_.head
        with torch.no_grad():
            head.log_scale.add_(math.log(a))
            head.bias.mul_(a).add_(b)
        self.calibration_ = (a, b)
        self._sink(f"Calibrated the match head on validation pairs: logits * {a:.3f} "
                   f"{b:+.3f}.", verbose=net.verbose)


class TimeLimit(Callback):
    """Stop training before the net's ``time_limit`` (in seconds) runs out.

    After every batch, training stops (as a ``KeyboardInterrupt``, which
    skorch turns into a clean end of training) if one more step of the
    length just measured would end past the deadline. Other callbacks'
    ``on_train_end`` hooks still run, so :class:`skorch.callbacks.EarlyStopping`
    with ``load_best=True`` restores the best weights seen so far.

    The limit is read from ``net.time_limit``; None disables the callback.

    Parameters
    ----------
    clock : callable, default=time.monotonic
        Returns the current time in seconds.
    sink : callable, default=print
        Receives the stop message when ``net.verbose`` is set.

    Attributes
    ----------
    stopped_ : bool
        Whether the last training run was stopped by the time limit.
    """

    def __init__(self, clock=time.monotonic, sink=print):
        self.clock = clock
        self.sink = sink

    def initialize(self):
        self.stopped_ = False
        self._elapsed_before_train = None
        return self

    def start(self, elapsed=0.0):
        """Count ``elapsed`` seconds of work done before training as spent."""
        self._elapsed_before_train = float(elapsed)

    # pylint: disable=arguments-differ
    def on_train_begin(self, net, **kwargs):
        now = self.clock()
        self.stopped_ = False
        self._last_tick = now
        limit = getattr(net, "time_limit", None)
        spent = self._elapsed_before_train or 0.0
        self._deadline = None if limit is None else now - spent + limit

    def on_batch_end(self, net, **kwargs):
        if self._deadline is None:
            return
        now = self.clock()
        step, self._last_tick = now - self._last_tick, now
        if _on_any_process(net, now + step >= self._deadline):
            self.stopped_ = True
            if net.verbose:
                self.sink(f"Stopping: time_limit={net.time_limit}s is reached.")
            raise KeyboardInterrupt

    def on_train_end(self, net, **kwargs):
        self._elapsed_before_train = None


class CosineSchedule(Callback):
    """Linear warm-up, then cosine decay of every learning rate, once per batch.

    Progress runs from 0 to 1 over the net's ``time_limit`` when one is set
    (so the rate reaches its floor when the time budget ends, however many
    epochs that is) and over ``max_epochs`` otherwise. Each parameter group
    keeps its own base rate; the head's ``head_lr`` decays alike.

    Parameters
    ----------
    warmup : float, default=0.05
        Fraction of training spent raising the rates linearly from near zero.
    floor : float, default=0.01
        Final rate as a fraction of each base rate.
    clock : callable, default=time.monotonic
        Returns the current time in seconds.
    """

    def __init__(self, warmup=0.05, floor=0.01, clock=time.monotonic):
        self.warmup = warmup
        self.floor = floor
        self.clock = clock

    def factor(self, progress):
        """Multiplier of the base rates at ``progress`` in [0, 1]."""
        progress = min(max(progress, 0.0), 1.0)
        if progress < self.warmup:
            return max(progress / self.warmup, 1e-3)
        decay = (progress - self.warmup) / max(1.0 - self.warmup, 1e-12)
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * decay))

    # pylint: disable=arguments-differ
    def on_train_begin(self, net, **kwargs):
        self._base_rates = [group["lr"] for group in net.optimizer_.param_groups]
        self._started = self.clock()
        self._batches_per_epoch = None
        self._epochs_done = 0
        self._batch = 0
        self._set_rates(net, 0.0)

    def on_epoch_begin(self, net, dataset_train=None, **kwargs):
        self._batch = 0

    def on_epoch_end(self, net, **kwargs):
        self._epochs_done += 1
        self._batches_per_epoch = self._batch

    def _progress(self, net):
        if net.time_limit is not None:
            return (self.clock() - self._started) / net.time_limit
        per_epoch = self._batches_per_epoch or max(self._batch, 1)
        return (self._epochs_done + min(self._batch / per_epoch, 1.0)) / net.max_epochs

    def on_batch_end(self, net, training=False, **kwargs):
        if training:
            self._batch += 1
            self._set_rates(net, self._progress(net))

    def on_train_end(self, net, **kwargs):
        for group, rate in zip(net.optimizer_.param_groups, self._base_rates):
            group["lr"] = rate

    def _set_rates(self, net, progress):
        factor = self.factor(progress)
        for group, rate in zip(net.optimizer_.param_groups, self._base_rates):
            group["lr"] = rate * factor
