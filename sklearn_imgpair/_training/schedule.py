"""The learning-rate schedule of pair training: warm-up, then cosine decay over the budget."""

import math

from skorch.callbacks import Callback

from sklearn_imgpair._training.budget import net_time_budget

__all__ = ["CosineSchedule"]


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
        self.budget_, self.spent_before_ = net_time_budget(net), None
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
