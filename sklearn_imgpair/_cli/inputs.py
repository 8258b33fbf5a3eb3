"""Reading the commands' inputs: pairs CSV files, images from a CSV file or a folder.

Every error about an input names its place as the user sees it: the CSV line
and column (the header is line 1), or the folder. The library names its
inputs' cells ``X[row, column]`` or ``X[row]``; the functions here rewrite
them in the input's terms.
"""

import contextlib
import os
import re
import sys
import warnings

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from sklearn_imgpair._cli.main import CommandError
from sklearn_imgpair._images.unreadable import UnreadableImageWarning
from sklearn_imgpair._images.validation import check_files_exist
from sklearn_imgpair.datasets import read_pairs_csv

# load_image_folder's walk of a class folder: both list the same files as images.
from sklearn_imgpair.datasets._folder import IMAGE_EXTENSIONS, _walk_images
from sklearn_imgpair.datasets._pairs_csv import check_columns, csv_location

__all__ = ["CommandError", "collect_unreadable", "in_csv_terms", "list_image_files",
           "pair_cells", "read_images", "read_pairs", "reading", "report_unreadable",
           "unreadable_images"]

# How the library names a cell of its input in error messages: X[row, column] or X[row].
_LIBRARY_CELL = re.compile(r"X\[(\d+)(?:, (\d+))?\]")
# The image columns of a pairs CSV, read as images when no column is named.
_PAIR_COLUMNS = ("Image1", "Image2")


# ----------------------------------------------------------------------
# pairs: the --train and --data CSV files
# ----------------------------------------------------------------------


def in_csv_terms(error, path, locate):
    """Rewrite the library's ``X[...]`` cells in an error message as CSV line and column.

    ``locate(index, column_index)`` maps the numbers of one ``X[...]`` (the
    second is None for ``X[i]``) to the data row and column name in the CSV.
    """
    def replace(match):
        row, column = locate(int(match[1]), None if match[2] is None else int(match[2]))
        return csv_location(path, row, column)

    return CommandError(_LIBRARY_CELL.sub(replace, str(error)))


def pair_cells(columns, offset=0):
    """``locate`` for pairs whose first row is data row ``offset`` of the CSV."""
    return lambda row, column: (offset + row, columns[column])


def read_pairs(path, image_columns, other_columns=(), on_error="raise"):
    """Read a pairs CSV and check its columns and, unless ``on_error="warn"``, its images.

    ``image_columns`` are the two columns of the pair (the same one twice
    for one column of images). With ``on_error="warn"`` missing images are
    left to the estimator, which lists them instead of failing.
    """
    frame = read_pairs_csv(path, image_columns=list(dict.fromkeys(image_columns)))
    check_columns(frame, other_columns, path)
    if on_error == "warn":
        return frame
    try:
        check_files_exist(frame[list(image_columns)].to_numpy(dtype=object))
    except (FileNotFoundError, ValueError) as exc:
        raise in_csv_terms(exc, path, pair_cells(image_columns)) from None
    return frame


@contextlib.contextmanager
def unreadable_images(found, path, locate):
    """Collect the failures of the block's :class:`UnreadableImageWarning` into ``found``.

    Failures are stored in CSV terms, keyed by image and reason (so an image
    met again in a later chunk counts once); other warnings pass through.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnreadableImageWarning)
        yield
    collect_unreadable(caught, found, lambda failure: str(in_csv_terms(failure, path, locate)))


def collect_unreadable(caught, found, describe):
    """Store the failures of the caught :class:`UnreadableImageWarning` in ``found``.

    Keyed by image and reason, so an image met again in a later chunk counts
    once; ``describe(failure)`` words each in the input's terms. Other caught
    warnings are shown again.
    """
    for warning in caught:
        if not issubclass(warning.category, UnreadableImageWarning):
            warnings.showwarning(warning.message, warning.category, warning.filename,
                                 warning.lineno)
            continue
        for failure in warning.message.failures:
            found.setdefault(_LIBRARY_CELL.sub("", failure, count=1), describe(failure))


def report_unreadable(found, outcome):
    """Print one warning line on stderr for the unreadable images in ``found``."""
    if not found:
        return
    failures = list(found.values())
    more = f"; and {len(failures) - 10} more" if len(failures) > 10 else ""
    print(f"sklearn-imgpair: warning: {len(failures)} image(s) could not be read, so "
          f"{outcome}: {'; '.join(failures[:10])}{more}", file=sys.stderr)


# ----------------------------------------------------------------------
# images: a folder, or image columns of a CSV file
# ----------------------------------------------------------------------


def list_image_files(folder):
    """Every image file under ``folder``, at any depth, sorted.

    Files count as images as in :func:`~sklearn_imgpair.datasets.load_image_folder`
    (which walks its class folders the same way): by their name's ending,
    :data:`IMAGE_EXTENSIONS` in any case; hidden files and folders (their
    names start with ``.``) are skipped. Unlike ``load_image_folder``, images
    directly in ``folder`` count too: a catalogue needs no class folders.

    Parameters
    ----------
    folder : str or path-like

    Returns
    -------
    paths : list of str
        Absolute paths, sorted.
    """
    return sorted(_walk_images(os.path.abspath(folder), IMAGE_EXTENSIONS, follow_links=False))


def _folder_images(folder, option):
    paths = list_image_files(folder)
    if not paths:
        raise CommandError(f"{option} folder {folder!r} holds no image file (looked for "
                           f"{', '.join(IMAGE_EXTENSIONS)} in it and its sub-folders).")
    return Bunch(paths=np.array(paths, dtype=object), source=folder, option=option,
                 where=lambda index: f"{option} folder {folder!r}")


def _default_columns(path, option):
    """The image columns of a CSV file named by no option: its only one, or a pair's two.

    The index that ``DataFrame.to_csv`` writes does not count as a column.
    """
    try:
        columns = [str(name) for name in pd.read_csv(path, nrows=0).columns]
    except (ValueError, OSError) as exc:  # pandas' parser errors are ValueErrors
        reason = " ".join(str(exc).split())
        raise CommandError(f"Cannot read {option} {path!r} as CSV: {reason}") from None
    if columns and columns[0].startswith("Unnamed: 0"):
        columns = columns[1:]  # the index that DataFrame.to_csv writes, as read_pairs_csv
    if len(columns) == 1:
        return columns[0], columns[0]
    if set(_PAIR_COLUMNS) <= set(columns):
        return _PAIR_COLUMNS
    raise CommandError(f"{option} {path!r} has {len(columns)} columns {columns}; name the "
                       "column of image paths with --image-column (a pairs CSV with the "
                       f"columns {' and '.join(_PAIR_COLUMNS)} needs none).")


def _distinct_cells(frame, columns):
    """Distinct cells of ``columns``, column by column in first-seen order.

    Returns the cells and, for each, the (data row, column) of its first cell.
    """
    cells = frame[columns].to_numpy(dtype=object).ravel(order="F")
    images, first = np.unique(cells, return_index=True)
    order = np.argsort(first)
    column_indices, rows = np.divmod(first[order], len(frame))
    return images[order], [(int(row), columns[int(column)])
                           for row, column in zip(rows, column_indices)]


def _csv_images(path, columns, option, check_files):
    """The distinct images of the image columns of a CSV file, relative paths resolved."""
    if columns is None:
        columns = _default_columns(path, option)
    frame = read_pairs(path, columns, on_error="raise" if check_files else "warn")
    cells, places = _distinct_cells(frame, list(dict.fromkeys(columns)))
    return Bunch(paths=cells, source=path, option=option,
                 where=lambda index: csv_location(path, *places[index]))


def read_images(source, columns, option, *, check_files=True):
    """The images that ``--images`` (``embed``, ``dedup``), ``--gallery`` or ``--query`` name.

    Parameters
    ----------
    source : str
        A folder (every image file under it, see :func:`list_image_files`)
        or a CSV file (image paths, relative to the file's folder; each
        distinct cell once, column by column in the order of the file).
    columns : tuple of (str, str) or None
        The CSV's two image columns, the same one twice for one column
        (``--image-column``). None takes the file's only column, or the
        columns ``Image1`` and ``Image2`` of a pairs CSV.
    option : str
        The option, for error messages.
    check_files : bool, default=True
        Fail on the first CSV cell, in row order, whose image is not a file.

    Returns
    -------
    images : Bunch
        ``paths`` (absolute, object array), ``source``, ``option`` and
        ``where(index)``, the place of an image in terms of the input (CSV
        line and column, or the folder) for error messages.
    """
    if os.path.isdir(source):
        return _folder_images(source, option)
    if not os.path.exists(source):
        raise CommandError(f"{option} {source!r} does not exist; give a CSV file or a folder "
                           "of images.")
    return _csv_images(source, columns, option, check_files)


def _located(message, images, offset=0):
    """``message`` with the library's ``X[i]`` replaced by the place of image ``offset + i``."""
    return _LIBRARY_CELL.sub(lambda match: images.where(offset + int(match[1])), str(message))


@contextlib.contextmanager
def reading(images, found, offset=0):
    """Turn unreadable-image errors and warnings of the block into the input's terms.

    ``images`` comes from :func:`read_images`; the block reads images
    ``offset`` onwards. Errors become a :class:`CommandError`; the failures
    of :class:`UnreadableImageWarning` are stored in ``found``, once per
    image and reason; other warnings pass through.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnreadableImageWarning)
        try:
            yield
        except (ValueError, FileNotFoundError) as exc:
            raise CommandError(_located(exc, images, offset)) from None
    collect_unreadable(caught, found, lambda failure: _located(failure, images, offset))
