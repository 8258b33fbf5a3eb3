"""Weight averaging for skorch nets: an exponential moving average of the weights, validated."""

import copy

import torch
from skorch.callbacks import Callback
from timm.utils import ModelEmaV3

from sklearn_imgpair._training.selection import bare_module

__all__ = ["WeightAveraging"]


class WeightAveraging(Callback):
    """Validate, select and keep an exponential moving average (EMA) of the weights.

    After every training step the average moves towards the trained weights
    (timm's :class:`~timm.utils.ModelEmaV3`, with its warm-up, so that the
    first steps' random weights are soon forgotten). The average, not the
    last step's weights, is what each epoch's validation pass scores: its
    weights are swapped in for the validation batches and swapped out again
    at the end of the epoch. :class:`AucEarlyStopping`, which snapshots the
    module at the end of the epoch, therefore selects and restores averaged
    weights, and :class:`HeadCalibration` calibrates on their logits; so this
    callback must come after both in the callback list, as a callback passed
    in ``callbacks`` does (skorch puts them after the default ones). Without
    validation the average replaces the trained weights when training ends.
    Under a DDP or ``torch.compile`` wrapper the bare module is averaged.

    An average of the weights along the end of a decaying learning-rate
    schedule generalises better than any single point of it, at the cost of
    one extra in-place update of the weights per step.

    Parameters
    ----------
    decay : float, default=0.99
        Largest weight of the old average in each update; the warm-up raises
        the decay towards it: at the n-th step it is
        ``min(decay, 1 - n ** (-warmup_power))`` (0 at the first, which copies
        the weights). The average spans about ``1 / (1 - decay)`` steps.
    warmup_power : float, default=0.75
        Exponent of the warm-up (timm's ``warmup_power``).

    Attributes
    ----------
    average_ : timm.utils.ModelEmaV3 or None
        The averaged copy of the module during training; None after it.
    steps_ : int
        Training steps averaged in the last training run.
    """

    def __init__(self, decay=0.99, warmup_power=0.75):
        self.decay = decay
        self.warmup_power = warmup_power

    def initialize(self):
        self.average_, self.steps_, self.trained_weights_ = None, 0, None
        return self

    # pylint: disable=arguments-differ
    def on_train_begin(self, net, **kwargs):
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"decay must be in [0, 1); got {self.decay!r}.")
        self.average_ = ModelEmaV3(bare_module(net.module_), decay=self.decay, use_warmup=True,
                                   warmup_power=self.warmup_power)
        self.steps_, self.trained_weights_ = 0, None

    def on_batch_end(self, net, training=False, **kwargs):
        if training and self.average_ is not None:
            self.steps_ += 1
            self.average_.update(bare_module(net.module_), step=self.steps_)

    def on_batch_begin(self, net, training=False, **kwargs):
        # The first validation batch of an epoch: score the average instead.
        if not training and self.average_ is not None and self.trained_weights_ is None:
            module = bare_module(net.module_)
            self.trained_weights_ = copy.deepcopy(module.state_dict())
            module.load_state_dict(self.average_.module.state_dict())

    def on_epoch_end(self, net, **kwargs):
        self._swap_back(net)

    def _swap_back(self, net):
        if self.trained_weights_ is not None:
            bare_module(net.module_).load_state_dict(self.trained_weights_)
            self.trained_weights_ = None

    def on_train_end(self, net, **kwargs):
        if self.average_ is None:
            return
        last = net.history[-1] if net.history else {}
        if last.get("restored_epoch") is not None:
            # The early-stopping callback restored a validated average: keep it.
            self.trained_weights_ = None
        else:
            self._swap_back(net)
            if self.steps_:
                with torch.no_grad():
                    bare_module(net.module_).load_state_dict(self.average_.module.state_dict())
        self.average_ = None
