"""Unreadable images: the ``on_error`` policy, reading one image under it, and the one warning.

No torch here: the ONNX runtime reads its images under the same policy, with
the same messages, as the estimators.
"""

import warnings

import numpy as np

__all__ = ["IMAGE_ERRORS", "ON_ERROR_OPTIONS", "UnreadableImageWarning", "leave_out_unreadable",
           "read_or_report", "warn_unreadable"]

#: The error types raised for an image that cannot be read (missing, not an image, ...).
IMAGE_ERRORS = (FileNotFoundError, ValueError)

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


def read_or_report(read, image, name, on_error):
    """Read one image under the ``on_error`` policy.

    Parameters
    ----------
    read : callable
        ``read(image)`` returns the decoded image or raises one of
        :data:`IMAGE_ERRORS`.
    image : str or InMemoryImage
        One image.
    name : str
        How errors refer to the image, e.g. ``"X[3, 1]"``.
    on_error : {"raise", "warn"}
        ``"raise"`` raises the error, its message prefixed by ``name``;
        ``"warn"`` returns it as text instead, for the caller to report.

    Returns
    -------
    decoded : object or None
        What ``read`` returned; None for an image that could not be read.
    error : str
        ``""`` for an image that was read, else ``"<name>: <reason>"``.
    """
    try:
        return read(image), ""
    except IMAGE_ERRORS as exc:
        if on_error == "raise":
            raise type(exc)(f"{name}: {exc}") from exc
        return None, f"{name}: {exc}"


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


def leave_out_unreadable(embed, images, what, *, stacklevel=3, allow_none=False):
    """Embed ``images`` and tell, in one warning, which are left out as unreadable.

    Parameters
    ----------
    embed : callable
        ``embed(images)`` returns one row per image, NaN for an image that
        could not be read, which it reports in an :class:`UnreadableImageWarning`
        (``on_error="warn"``); its other warnings are issued again as they are.
    images : ndarray of shape (n_images,), dtype=object
        The images.
    what : str
        What the images make up, for messages, e.g. ``"gallery"``.
    stacklevel : int, default=3
        Of the warning: 3 names the line that called the caller.
    allow_none : bool, default=False
        Whether all of the images may be unreadable (images added to a
        gallery that has others).

    Returns
    -------
    embeddings : ndarray of shape (n_images, d)
        All rows, the unreadable ones included.
    unreadable : ndarray of shape (n_images,), dtype=bool
        The rows to leave out.

    Raises
    ------
    ValueError
        If none of the images could be read, unless ``allow_none``.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnreadableImageWarning)
        embeddings = embed(images)
    unreadable = np.isnan(embeddings).any(axis=1)
    if unreadable.all() and not allow_none:
        raise ValueError(f"None of the {len(images)} {what} images could be read; "
                         f"the {what} would be empty.")
    for warning in caught:
        if isinstance(warning.message, UnreadableImageWarning):
            failures = warning.message.failures
            rows = np.flatnonzero(unreadable)
            warnings.warn(UnreadableImageWarning(
                f"{len(failures)} {what} image(s) could not be read and are left out of "
                f"the {what} ({len(rows)} row(s) of X; the warning's .failures and .rows "
                f"list them): {'; '.join(failures[:_SHOWN])}", failures, rows),
                stacklevel=stacklevel)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                   warning.lineno)
    return embeddings, unreadable
