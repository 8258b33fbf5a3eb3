"""The ``on_error`` policy for unreadable images: its warning and the check before fit."""

import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from sklearn_imgpair._dataset import IMAGE_ERRORS
from sklearn_imgpair._validation import distinct_paths

__all__ = ["ON_ERROR_OPTIONS", "UnreadableImageWarning", "decode_pair_images",
           "warn_unreadable"]

ON_ERROR_OPTIONS = {"raise", "warn"}

# Failures listed in a warning's message; all of them are in its ``failures``.
_SHOWN = 10


class UnreadableImageWarning(UserWarning):
    """Images could not be read and ``on_error="warn"`` skipped them.

    Parameters
    ----------
    message : str
        What happened, listing the first failures.
    failures : list of str
        Every failure, each naming the cell (``"X[row, column]"``), the path
        and the reason.
    rows : ndarray of int
        The rows of ``X`` that got NaN (or, in ``fit``, were left out).
    """

    def __init__(self, message, failures=(), rows=()):
        super().__init__(message)
        self.failures = list(failures)
        self.rows = np.asarray(rows, dtype=np.intp)


def warn_unreadable(failures, rows, outcome, stacklevel=3):
    """Issue one :class:`UnreadableImageWarning` for all ``failures``.

    Parameters
    ----------
    failures : list of str
        One message per unreadable image.
    rows : array-like of int
        The affected rows of ``X``.
    outcome : str
        What happened to them, e.g. ``"get NaN probabilities"``.
    stacklevel : int, default=3
        Passed to :func:`warnings.warn`.
    """
    rows = np.unique(np.asarray(rows, dtype=np.intp))
    shown = "; ".join(failures[:_SHOWN])
    more = f"; and {len(failures) - _SHOWN} more" if len(failures) > _SHOWN else ""
    listed = rows[:_SHOWN].tolist()
    row_text = f"{listed}{' ...' if len(rows) > _SHOWN else ''}"
    message = (f"{len(failures)} image(s) could not be read, so {len(rows)} row(s) "
               f"{outcome} (rows {row_text}; the warning's .failures and .rows list them "
               f"all): {shown}{more}")
    warnings.warn(UnreadableImageWarning(message, failures, rows), stacklevel=stacklevel)


def decode_pair_images(pairs, load, on_error="raise", n_threads=None):
    """Decode every distinct image of ``pairs`` once, before any training.

    Each image is read through ``load`` (a :class:`DecodedImageCache`'s
    ``get``, so the work is kept for the first epoch), on several threads:
    PIL releases the GIL while it decodes.

    Parameters
    ----------
    pairs : ndarray of shape (n_pairs, 2), dtype=object
        Image paths.
    load : callable
        ``load(path)`` returns the decoded image or raises
        ``FileNotFoundError`` or ``ValueError``.
    on_error : {"raise", "warn"}, default="raise"
        ``"raise"`` raises the error of the first unreadable image in row
        order, naming its cell; ``"warn"`` collects every failure.
    n_threads : int, default=None
        Decoding threads; None uses one per CPU core, up to 8.

    Returns
    -------
    bad_rows : ndarray of bool of shape (n_pairs,)
        Rows with an unreadable image (all False with ``on_error="raise"``).
    failures : list of str
        One message per unreadable image, naming its first cell.
    """
    paths, first, inverse = distinct_paths(pairs)  # in row order: errors come in row order

    def read(path):
        try:
            load(path)
        except IMAGE_ERRORS as exc:
            return exc
        return None

    n_threads = n_threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        errors = list(pool.map(read, paths))
    failures, bad_images = [], np.zeros(len(paths), dtype=bool)
    for index, error in enumerate(errors):
        if error is None:
            continue
        row, column = divmod(int(first[index]), 2)
        if on_error == "raise":
            raise type(error)(f"X[{row}, {column}]: {error}") from error
        failures.append(f"X[{row}, {column}]: {error}")
        bad_images[index] = True
    bad_rows = bad_images[inverse.reshape(-1, 2)].any(axis=1)
    return bad_rows, failures
