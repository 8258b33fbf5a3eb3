"""skorch callbacks for pair training: time budget, LR schedule, model selection, calibration."""

import copy
import math
import time
from numbers import Integral

import numpy as np
import torch
from skorch.callbacks import (
    Callback,
    EpochScoring,
    EpochTimer,
    PassthroughScoring,
    PrintLog,
    ProgressBar,
)
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

__all__ = ["AucEarlyStopping", "CosineSchedule", "HeadCalibration", "StopTraining",
           "TimeBudget", "TimeLimit", "bare_module", "default_callbacks", "valid_roc_auc"]


class StopTraining(KeyboardInterrupt):
    """Raised by a callback to end training on purpose (time budget, patience).

    skorch ends training cleanly on a ``KeyboardInterrupt`` and still runs
    every callback's ``on_train_end``; this subclass tells such a planned stop
    apart from the user's Ctrl-C.
    """


class TimeBudget:
    """Seconds allowed for one ``fit``, counted from the moment ``fit`` starts.

    ``fit`` creates one before it reads any image and keeps it as
    ``time_budget_``; :class:`TimeLimit` stops training when it is spent and
    :class:`CosineSchedule` decays the learning rate over it, so both count
    the same seconds, reading the training images included.

    Parameters
    ----------
    seconds : float or None
        The budget; None means no limit.
    clock : callable, default=None
        Returns the current time in seconds; None uses ``clock``, the
        class's default (:func:`time.monotonic`).

    Attributes
    ----------
    started : float
        The clock's time when the budget started.
    ended : bool
        Set once the training it was made for is over; a later training
        starts a new budget.
    """

    clock = staticmethod(time.monotonic)

    def __init__(self, seconds, *, clock=None):
        if clock is not None:
            self.clock = clock
        self.seconds = seconds
        self.started = self.clock()
        self.ended = False

    def __repr__(self):
        return f"{type(self).__name__}(seconds={self.seconds!r})"

    def spent(self, now=None):
        """Seconds spent since the budget started.

        Parameters
        ----------
        now : float, default=None
            A time of the clock; None reads the clock.

        Returns
        -------
        seconds : float
            ``now`` minus ``started``.
        """
        return (self.clock() if now is None else now) - self.started

    def fraction_spent(self):
        """Share of the budget spent, or None without a limit."""
        return None if self.seconds is None else self.spent() / self.seconds


def _time_budget(net):
    """The net's time budget, or one started now from its ``time_limit`` (None: no limit).

    Nets of this library start theirs when ``fit`` starts (``time_budget_``);
    for any other skorch net with a ``time_limit`` the budget starts with
    training.
    """
    budget = getattr(net, "time_budget_", None)
    if budget is None:
        budget = TimeBudget(getattr(net, "time_limit", None))
    return budget if budget.seconds is not None else None


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


class TimeLimit(Callback):
    """Stop training before the net's time budget (``time_budget_``) is spent.

    After every batch, training stops (with :class:`StopTraining`, which
    skorch turns into a clean end of training) if one more step of the
    length just measured would end past the budget. Other callbacks'
    ``on_train_end`` hooks still run, so :class:`AucEarlyStopping` restores
    the best weights seen so far. A net without a budget (``time_limit=None``)
    trains for ``max_epochs``.

    Parameters
    ----------
    sink : callable, default=print
        Receives the stop message when ``net.verbose`` is set.

    Attributes
    ----------
    stopped_ : bool
        Whether the last training run was stopped by the time budget.
    """

    def __init__(self, sink=print):
        self.sink = sink

    def initialize(self):
        self.stopped_ = False
        self.budget_, self.last_tick_ = None, None
        return self

    # pylint: disable=arguments-differ
    def on_train_begin(self, net, **kwargs):
        self.stopped_ = False
        self.budget_ = _time_budget(net)
        self.last_tick_ = None

    def on_epoch_begin(self, net, **kwargs):
        # Steps are timed from the start of the first epoch: what comes before
        # it (reading or embedding the training images) is spent, but no step.
        if self.budget_ is not None and self.last_tick_ is None:
            self.last_tick_ = self.budget_.clock()

    def on_batch_end(self, net, **kwargs):
        budget = self.budget_
        if budget is None:
            return
        now = budget.clock()
        step, self.last_tick_ = now - self.last_tick_, now
        if _on_any_process(net, budget.spent(now) + step >= budget.seconds):
            self.stopped_ = True
            if net.verbose:
                self.sink(f"Stopping: time_limit={budget.seconds}s is reached.")
            raise StopTraining


class CosineSchedule(Callback):
    """Linear warm-up, then cosine decay of every learning rate, once per batch.

    Progress runs from 0 to 1 over what is left of the net's time budget
    when the first epoch starts (``time_budget_``, the seconds
    :class:`TimeLimit` counts: the rate warms up when training starts and
    reaches its floor when the budget ends, however many epochs that is, and
    however long reading the images took) and over ``max_epochs`` otherwise.
    Each parameter group keeps its own base rate; the head's ``head_lr``
    decays alike.

    Parameters
    ----------
    warmup : float, default=0.05
        Fraction of training spent raising the rates linearly from near zero.
    floor : float, default=0.01
        Final rate as a fraction of each base rate.
    """

    def __init__(self, warmup=0.05, floor=0.01):
        self.warmup = warmup
        self.floor = floor

    def factor(self, progress):
        """Multiplier of the base rates at a point of the schedule.

        Parameters
        ----------
        progress : float
            Fraction of the schedule done, in [0, 1].

        Returns
        -------
        factor : float
            What the base learning rates are multiplied by.
        """
        progress = min(max(progress, 0.0), 1.0)
        if progress < self.warmup:
            return max(progress / self.warmup, 1e-3)
        decay = (progress - self.warmup) / max(1.0 - self.warmup, 1e-12)
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * decay))

    # pylint: disable=arguments-differ
    def on_train_begin(self, net, **kwargs):
        self.base_rates_ = [group["lr"] for group in net.optimizer_.param_groups]
        self.budget_, self.spent_before_ = _time_budget(net), None
        self.batches_per_epoch_ = None
        self.epochs_done_ = 0
        self.batch_ = 0
        self._set_rates(net, 0.0)

    def on_epoch_begin(self, net, dataset_train=None, **kwargs):
        self.batch_ = 0
        if self.budget_ is not None and self.spent_before_ is None:
            self.spent_before_ = self.budget_.spent()

    def on_epoch_end(self, net, **kwargs):
        self.epochs_done_ += 1
        self.batches_per_epoch_ = self.batch_

    def _progress(self, net):
        if self.budget_ is not None:
            left = self.budget_.seconds - self.spent_before_
            return 1.0 if left <= 0 else (self.budget_.spent() - self.spent_before_) / left
        per_epoch = self.batches_per_epoch_ or max(self.batch_, 1)
        return (self.epochs_done_ + min(self.batch_ / per_epoch, 1.0)) / net.max_epochs

    def on_batch_end(self, net, training=False, **kwargs):
        if training:
            self.batch_ += 1
            self._set_rates(net, self._progress(net))

    def on_train_end(self, net, **kwargs):
        for group, rate in zip(net.optimizer_.param_groups, self.base_rates_):
            group["lr"] = rate

    def _set_rates(self, net, progress):
        factor = self.factor(progress)
        for group, rate in zip(net.optimizer_.param_groups, self.base_rates_):
            group["lr"] = rate * factor


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


class HeadCalibration(Callback):
    """Refit the match head's scale and bias on validation pairs after training.

    Platt scaling in the head's link: a one-dimensional logistic regression
    of the validation targets on ``link(cosine)`` gives ``a`` and ``b``, and
    the head becomes ``a * link(cosine) + b``, so that ``predict_proba`` is
    calibrated on pairs the network did not train on, in the class balance
    of the user's pairs. With the default ``link="atanh"`` (Fisher's z of the
    cosine) two identical images get a probability near 1 however uncertain
    the validation pairs are, which a head linear in the cosine cannot give
    (its probability at cosine 1 is ``sigmoid(a + b)``). When training starts
    again (``warm_start``, ``partial_fit``), a head calibrated this way is
    replaced by its linear tangent at probability 0.5, since training goes
    through the linear link. The logits are kept from each epoch's validation
    pass, so this costs no extra forward pass. It calibrates on the epoch
    whose weights :class:`AucEarlyStopping` restored (``restored_epoch`` in
    the last history row), so it comes after that callback; without a
    restored epoch (no validation, ``load_best=False``) the head is left as
    trained.

    Parameters
    ----------
    link : {"atanh", "linear"}, default="atanh"
        The head's link after calibration (its ``link`` attribute);
        ``"linear"`` is plain Platt scaling of the logits.
    sink : callable, default=print
        Receives a message when ``net.verbose`` is set.

    Attributes
    ----------
    calibration_ : tuple of float or None
        ``(a, b)`` of the last calibration, the head's new scale and bias;
        None when there was none (no validation logits, a single class, or
        logits that rank the pairs the wrong way).
    """

    def __init__(self, link="atanh", sink=print):
        self.link = link
        self.sink = sink

    def initialize(self):
        self.calibration_ = None
        return self

    # pylint: disable=arguments-differ
    def on_train_begin(self, net, **kwargs):
        if self.link not in ("atanh", "linear"):
            raise ValueError(f"link must be 'atanh' or 'linear'; got {self.link!r}.")
        self.calibration_ = None
        self.outputs_ = {}
        # A head calibrated by an earlier training run trains on from its linear
        # tangent (warm_start, partial_fit): training goes through the linear link.
        head = getattr(bare_module(net.module_), "head", None)
        if head is not None and hasattr(head, "linearize"):
            head.linearize()

    def on_batch_end(self, net, batch=None, training=False, y_pred=None, **kwargs):
        if training or y_pred is None:
            return
        epoch = len(net.history)
        self.outputs_.setdefault(epoch, []).append(
            (y_pred.detach().float().cpu().reshape(-1),
             batch[1].detach().float().cpu().reshape(-1)))

    def on_epoch_end(self, net, **kwargs):
        # Keep only what the end of training can still ask for: the best epoch
        # so far (the last one marked ``event_best``).
        best = [row["epoch"] for row in net.history if row.get("event_best")]
        self.outputs_ = {key: value for key, value in self.outputs_.items()
                         if best and key == best[-1]}

    def on_train_end(self, net, **kwargs):
        last = net.history[-1] if net.history else {}
        outputs = self.outputs_.get(last.get("restored_epoch"))
        self.outputs_ = {}
        if not outputs or not last.get("calibrate", True):
            return
        logits = torch.cat([logit for logit, _ in outputs]).numpy()
        targets = torch.cat([target for _, target in outputs]).numpy()
        if np.unique(targets).size < 2:
            return
        head = net.module_.head
        # The cosines behind the logits, in the calibration's link.
        feature = head.transform(head.inverse(torch.from_numpy(logits).double()), self.link)
        model = LogisticRegression(C=1e4).fit(feature.numpy().reshape(-1, 1),
                                              targets.astype(int))
        a, b = float(model.coef_[0, 0]), float(model.intercept_[0])
        if a <= 0:  # the logits rank validation pairs the wrong way: leave the head alone
            return
        head.link = self.link
        with torch.no_grad():
            head.log_scale.fill_(math.log(a))
            head.bias.fill_(b)
        self.calibration_ = (a, b)
        if net.verbose:
            link = "cosine" if self.link == "linear" else "atanh(cosine)"
            self.sink(f"Calibrated the match head on validation pairs: {a:.3f} * {link} "
                      f"{b:+.3f}.")


def default_callbacks(net):
    """The callbacks a pair classifier trains with, by name, in the order they run.

    ``epoch_timer``, ``lr_schedule`` (:class:`CosineSchedule`) and
    ``train_loss``; with a validation split ``valid_loss``, ``valid_auc``,
    ``early_stopping`` (:class:`AucEarlyStopping`) and ``calibration``
    (:class:`HeadCalibration`, after the best weights are restored); then
    ``time_limit`` (:class:`TimeLimit`), a ``progress_bar`` with
    ``verbose >= 2``, and ``print_log``. Each can be tuned or switched off by
    name, e.g. ``callbacks__early_stopping__patience=10`` or
    ``callbacks__lr_schedule=None``.
    """
    callbacks = [
        ("epoch_timer", EpochTimer()),
        ("lr_schedule", CosineSchedule()),
        ("train_loss", PassthroughScoring(name="train_loss", on_train=True)),
    ]
    if net.train_split is not None and net.train_split is not False:
        callbacks += [
            ("valid_loss", PassthroughScoring(name="valid_loss")),
            ("valid_auc", EpochScoring(valid_roc_auc, name="valid_auc",
                                       lower_is_better=False, use_caching=True)),
            ("early_stopping", AucEarlyStopping(patience=5, load_best=True)),
            ("calibration", HeadCalibration()),
        ]
    callbacks.append(("time_limit", TimeLimit()))
    if isinstance(net.verbose, Integral) and net.verbose >= 2:
        callbacks.append(("progress_bar", ProgressBar()))
    callbacks.append(("print_log", PrintLog()))
    return callbacks
