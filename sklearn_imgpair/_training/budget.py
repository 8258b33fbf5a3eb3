"""The time budget of a fit, and the callback that stops training before it is spent."""

import time

from skorch.callbacks import Callback

__all__ = ["StopTraining", "TimeBudget", "TimeLimit", "net_time_budget"]


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


def net_time_budget(net):
    """The net's time budget, or one started now from its ``time_limit`` (None: no limit).

    Nets of this library start theirs when ``fit`` starts (``time_budget_``);
    for any other skorch net with a ``time_limit`` the budget starts with
    training.
    """
    budget = getattr(net, "time_budget_", None)
    if budget is None:
        budget = TimeBudget(getattr(net, "time_limit", None))
    return budget if budget.seconds is not None else None


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
        self.budget_ = net_time_budget(net)
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
