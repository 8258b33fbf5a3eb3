"""The callbacks' module path before they were split by concern, for pickles made then.

A pickle refers to a class by its module path. Estimators pickled by sklearn-imgpair
0.1.0 before the split name ``sklearn_imgpair._training.callbacks`` for their
callbacks and time budget; this module keeps those names importable. New code
imports from the modules of each concern: ``budget``, ``schedule``, ``selection``
and ``calibration``.
"""

from sklearn_imgpair._training.budget import StopTraining, TimeBudget, TimeLimit
from sklearn_imgpair._training.calibration import HeadCalibration
from sklearn_imgpair._training.schedule import CosineSchedule
from sklearn_imgpair._training.selection import AucEarlyStopping, valid_roc_auc

__all__ = ["AucEarlyStopping", "CosineSchedule", "HeadCalibration", "StopTraining",
           "TimeBudget", "TimeLimit", "valid_roc_auc"]
