"""The callbacks a pair classifier trains with by default, by name and in order."""

from numbers import Integral

from skorch.callbacks import EpochScoring, EpochTimer, PassthroughScoring, PrintLog, ProgressBar

from sklearn_imgpair._training.budget import TimeLimit
from sklearn_imgpair._training.calibration import HeadCalibration
from sklearn_imgpair._training.schedule import CosineSchedule
from sklearn_imgpair._training.selection import AucEarlyStopping, valid_roc_auc

__all__ = ["default_callbacks"]


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
