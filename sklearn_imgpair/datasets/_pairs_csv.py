"""read_pairs_csv: pair tables on disk, image paths made absolute against the CSV's folder."""

import os

import pandas as pd

from sklearn_imgpair._images.validation import IMAGE_SEPARATOR

__all__ = ["check_columns", "csv_location", "expand_paths", "read_pairs_csv"]

# read_csv arguments after which data row i is no longer line i + 2 of the file.
_LINE_SHIFTING_KWARGS = ("header", "names", "skiprows", "comment")


def csv_location(path, row, column):
    """Where a cell of a pairs CSV file is, in the terms an editor shows.

    The header is line 1, so data row ``row`` (counted from 0, as pandas
    counts) is line ``row + 2``, as long as no line before it is blank or
    belongs to a quoted cell that spans several lines.

    Parameters
    ----------
    path : str
        The CSV file.
    row : int
        Position of the data row, from 0.
    column : str
        Column name.

    Returns
    -------
    location : str
        For example ``"pairs.csv, line 4, column 'Image1'"``.

    Examples
    --------
    >>> from sklearn_imgpair.datasets._pairs_csv import csv_location
    >>> csv_location("pairs.csv", 2, "Image1")
    "pairs.csv, line 4, column 'Image1'"
    """
    return f"{path}, line {row + 2}, column {column!r}"


def expand_paths(cell, base_folder):
    """Make every ``;``-separated image path of a cell absolute.

    This is the AutoMM tutorial's ``path_expander``: a relative path is
    taken relative to ``base_folder``, an absolute path is kept, and the
    parts of a multi-image cell stay joined by ``;``.

    Parameters
    ----------
    cell : str
        One path, or several joined by ``;``.
    base_folder : str or path-like
        Folder that relative paths start from.

    Returns
    -------
    cell : str
        The absolute path(s), joined by ``;``.

    Examples
    --------
    >>> from sklearn_imgpair.datasets import expand_paths
    >>> expand_paths("a.png;sub/b.png", "/data")
    '/data/a.png;/data/sub/b.png'
    """
    base_folder = os.fspath(base_folder)
    return IMAGE_SEPARATOR.join(
        os.path.abspath(os.path.join(base_folder, part))
        for part in cell.split(IMAGE_SEPARATOR)
    )


def check_columns(frame, columns, path):
    """Raise a ValueError naming the first of ``columns`` that ``frame`` lacks.

    Parameters
    ----------
    frame : pandas.DataFrame
        A table read from ``path``.
    columns : iterable of str
        Columns that must be present.
    path : str
        The file the table came from, for the message.
    """
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(
            f"Pairs file {path!r} has no column {missing[0]!r}; its columns are "
            f"{[str(column) for column in frame.columns]}."
        )


def _read_table(path, read_csv_kwargs):
    try:
        frame = pd.read_csv(path, **read_csv_kwargs)
    except FileNotFoundError:
        raise FileNotFoundError(f"Pairs file not found: {path!r}.") from None
    except IsADirectoryError:
        raise ValueError(f"Pairs file {path!r} is a folder, not a CSV file.") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())
        raise ValueError(f"Cannot read pairs file {path!r} as CSV: {reason}") from None
    # A first column without a header is the index DataFrame.to_csv writes;
    # the tutorial reads it with index_col=0.
    if "index_col" not in read_csv_kwargs and len(frame.columns) and (
        str(frame.columns[0]).startswith("Unnamed: 0")
    ):
        frame = frame.set_index(frame.columns[0])
        frame.index.name = None
    return frame


def read_pairs_csv(path, *, image_columns=("Image1", "Image2"), base_folder=None,
                   **read_csv_kwargs):
    """Read a CSV file of image pairs and make its image paths absolute.

    Relative paths in ``image_columns`` are resolved against ``base_folder``,
    by default the folder that holds the CSV file, so a data set folder can
    be moved or shared as a whole. Cells that join several images with
    ``;`` stay joined, each part made absolute (see :func:`expand_paths`).
    Other columns, such as ``Label``, are returned as pandas reads them.

    Parameters
    ----------
    path : str or path-like
        The CSV file.
    image_columns : sequence of str, default=("Image1", "Image2")
        Columns that hold image paths.
    base_folder : str or path-like, default=None
        Folder that relative image paths start from. None uses the folder
        of ``path``.
    **read_csv_kwargs : dict
        Passed to :func:`pandas.read_csv` (for example ``sep`` or
        ``index_col``). Without ``index_col``, a first column with no header
        (the index that :meth:`pandas.DataFrame.to_csv` writes) becomes the
        index.

    Returns
    -------
    frame : pandas.DataFrame
        The table, with absolute paths in ``image_columns``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file cannot be parsed as CSV, a column of ``image_columns``
        is missing (the message lists the columns present), or an image cell
        is empty (the message names its line, see ``csv_location``).

    See Also
    --------
    make_image_pairs : Writes a synthetic data set in this format.
    fetch_stanford_online_products : The tutorial's data set, read with this.

    Examples
    --------
    >>> import os
    >>> from sklearn_imgpair.datasets import read_pairs_csv
    >>> csv_path = os.path.join(tmp_dir, "pairs.csv")
    >>> with open(csv_path, "w") as file:
    ...     _ = file.write("Image1,Image2,Label\\na.png,images/b.png,1\\n")
    >>> frame = read_pairs_csv(csv_path)
    >>> frame.loc[0, "Image2"] == os.path.join(tmp_dir, "images", "b.png")
    True
    """
    path = os.fspath(path)
    if isinstance(image_columns, str):
        image_columns = (image_columns,)
    frame = _read_table(path, read_csv_kwargs)
    check_columns(frame, image_columns, path)
    base_folder = os.path.dirname(os.path.abspath(path)) if base_folder is None else base_folder
    for column in image_columns:
        values = frame[column]
        empty = values.isna() | (values.astype(str).str.strip() == "")
        if empty.any():
            row = int(empty.to_numpy().nonzero()[0][0])
            where = (f"{path!r}, data row {row}, column {column!r}"
                     if any(key in read_csv_kwargs for key in _LINE_SHIFTING_KWARGS)
                     else csv_location(repr(path), row, column))
            raise ValueError(f"Pairs file {where}: the image path is empty.")
        frame[column] = [expand_paths(str(cell), base_folder) for cell in values]
    return frame
