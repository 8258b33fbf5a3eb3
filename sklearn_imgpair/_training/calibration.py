"""Calibration of the match head on the validation pairs, after training."""

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from skorch.callbacks import Callback

from sklearn_imgpair._training.selection import bare_module

__all__ = ["HeadCalibration"]


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
        head.set_calibration(a, b, link=self.link)
        self.calibration_ = (a, b)
        if net.verbose:
            link = "cosine" if self.link == "linear" else "atanh(cosine)"
            self.sink(f"Calibrated the match head on validation pairs: {a:.3f} * {link} "
                      f"{b:+.3f}.")
