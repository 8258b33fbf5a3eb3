"""Retrieval metrics: recall@k, precision@1, R-precision, MAP@R, and a scorer for searches."""

from sklearn_imgpair.metrics._ranking import (
    mean_average_precision_at_r,
    precision_at_1,
    r_precision,
    recall_at_k,
)
from sklearn_imgpair.metrics._scorer import make_retrieval_scorer

__all__ = [
    "make_retrieval_scorer",
    "mean_average_precision_at_r",
    "precision_at_1",
    "r_precision",
    "recall_at_k",
]
