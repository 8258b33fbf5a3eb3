"""The operating point and the curves that ``sklearn-imgpair evaluate`` reports."""

import os

import numpy as np

from sklearn_imgpair._io.atomic import write_atomically

__all__ = ["PLOT_SUFFIXES", "best_accuracy_threshold", "plot_curves", "require_matplotlib"]

# Figure formats that matplotlib writes without further packages.
PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def _shortest_threshold(values, n_matches, lower, upper):
    """The shortest decimal ``t`` in [0, 1] with exactly ``n_matches`` of ``values`` above it.

    ``lower`` and ``upper`` bound the cut; the decimals tried are their
    midpoint rounded to 0, 1, 2, ... places. The check compares ``values > t``
    as prediction does, in the values' own precision.
    """
    middle = (float(lower) + float(upper)) / 2
    for places in range(18):
        candidate = round(middle, places)
        if 0 <= candidate <= 1 and np.count_nonzero(values > candidate) == n_matches:
            return candidate
    return float(lower)  # values > lower holds exactly the values above the cut


def best_accuracy_threshold(is_match, match):
    """The threshold on the match probability with the best accuracy on these pairs.

    Pairs whose match probability is above the threshold are called
    matches, as :class:`ImagePairClassifier` and ``--threshold`` do. Every
    distinct way of cutting the sorted probabilities is scored, from "all
    pairs match" (threshold 0) to "no pair matches" (threshold 1).

    Parameters
    ----------
    is_match : array-like of bool, shape (n_pairs,)
        Whether each pair truly matches.
    match : ndarray of shape (n_pairs,)
        Match probabilities, none NaN.

    Returns
    -------
    threshold : float
        Ties between equally accurate cuts go to the highest threshold (the
        fewest pairs called matches). Within its cut, the threshold is the
        shortest decimal (fewest places) near the middle of the two
        probabilities that the cut separates, so that it reads well and
        gives the same predictions when typed back as ``--threshold``.
    accuracy : float
        The fraction of pairs that the threshold classifies correctly.

    Raises
    ------
    ValueError
        If there are no pairs.
    """
    match = np.asarray(match)
    is_match = np.asarray(is_match, dtype=bool)
    if match.size == 0:
        raise ValueError("The best threshold needs at least one pair; got none.")
    values, inverse = np.unique(match, return_inverse=True)  # ascending
    matches = np.bincount(inverse.reshape(-1), weights=is_match, minlength=len(values))
    others = np.bincount(inverse.reshape(-1), minlength=len(values)) - matches
    # Cut k calls the values from values[k] up matches: k = 0 all, k = len(values) none.
    correct = np.r_[0, np.cumsum(others)] + np.r_[np.cumsum(matches[::-1])[::-1], 0]
    lower = np.r_[0.0, values]
    upper = np.r_[values, 1.0]
    if values[0] <= 0:  # no threshold from 0 to 1 calls a probability of 0 a match
        correct[0] = -1
    cut = len(correct) - 1 - int(np.argmax(correct[::-1]))  # ties: the highest cut
    threshold = _shortest_threshold(values, len(values) - cut, lower[cut], upper[cut])
    return threshold, float(correct[cut] / len(match))


def require_matplotlib():
    """Import matplotlib, or say how to install it.

    Raises
    ------
    ImportError
        If matplotlib cannot be imported; the message says ``pip install matplotlib``.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"--plot needs matplotlib, which is not installed ({exc}): "
                          "pip install matplotlib (or pip install "
                          "\"sklearn-imgpair[plot]\").") from exc


def plot_curves(path, y_true, match, *, pos_label, name, title):
    """Write the ROC curve and the precision-recall curve side by side to one file.

    The figure is drawn by matplotlib's non-interactive Agg canvas, without
    pyplot's global state, and written atomically.

    Parameters
    ----------
    path : str or path-like
        File to write; its suffix, one of :data:`PLOT_SUFFIXES`, sets the format.
    y_true : array-like of shape (n_pairs,)
        True labels, holding both.
    match : ndarray of shape (n_pairs,)
        Match probabilities.
    pos_label : int, str or bool
        The label of matching pairs.
    name : str
        The curves' name in their legends.
    title : str
        The figure's title.

    Returns
    -------
    path : str
        The absolute path written.
    """
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    figure = Figure(figsize=(11, 5), layout="constrained")
    FigureCanvasAgg(figure)
    roc_axes, pr_axes = figure.subplots(1, 2)
    RocCurveDisplay.from_predictions(y_true, match, pos_label=pos_label, name=name,
                                     ax=roc_axes, plot_chance_level=True)
    PrecisionRecallDisplay.from_predictions(y_true, match, pos_label=pos_label, name=name,
                                            ax=pr_axes, plot_chance_level=True)
    roc_axes.set_title("ROC curve")
    pr_axes.set_title("Precision-recall curve")
    figure.suptitle(title)
    file_format = os.path.splitext(path)[1][1:].lower()
    return write_atomically(path, lambda partial: figure.savefig(partial, format=file_format))
