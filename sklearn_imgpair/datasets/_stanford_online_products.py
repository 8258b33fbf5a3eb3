"""fetch_stanford_online_products: the AutoMM matching tutorial's data set, cached locally."""

import os
import shutil

from sklearn.datasets import get_data_home
from sklearn.utils import Bunch
from sklearn.utils._param_validation import validate_params

from sklearn_imgpair.datasets._download import (
    ArchiveError,
    DownloadError,
    download_file,
    extract_zip,
    remove_if_exists,
)
from sklearn_imgpair.datasets._pairs_csv import read_pairs_csv

__all__ = ["fetch_stanford_online_products"]

SOP_URL = "https://automl-mm-bench.s3.amazonaws.com/Stanford_Online_Products.zip"
_FOLDER = "stanford_online_products"
_DATASET_DIR = "Stanford_Online_Products"
_SPLITS = ("train.csv", "test.csv")

DESCR = """\
Stanford Online Products, the simplified version of the AutoMM image-to-image
matching tutorial.

Product photos of 12 categories (bicycle, cabinet, chair, coffee maker, fan,
kettle, lamp, mug, sofa, stapler, table and toaster), several views of each
product. ``train`` and ``test`` are pair tables with columns ``Image1`` and
``Image2`` (absolute image paths) and ``Label`` (1 for two views of one
product, 0 for two different products).

Source: Song, Xiang, Jegelka and Savarese, "Deep Metric Learning via Lifted
Structured Feature Embedding", CVPR 2016,
https://cvgl.stanford.edu/projects/lifted_struct/; pairs as distributed by
AutoGluon.
"""


def _find_dataset_dir(cache_dir):
    """The folder under ``cache_dir`` that holds both train.csv and test.csv, or None."""
    candidates = [os.path.join(cache_dir, _DATASET_DIR), cache_dir]
    if os.path.isdir(cache_dir):
        candidates += sorted(entry.path for entry in os.scandir(cache_dir)
                             if entry.is_dir() and not entry.name.startswith("."))
    for candidate in candidates:
        if all(os.path.isfile(os.path.join(candidate, split)) for split in _SPLITS):
            return candidate
    return None


def _advice(url, cache_dir):
    return (f"Download {url} by hand and unzip it in {cache_dir} (so that "
            f"{os.path.join(cache_dir, _DATASET_DIR, 'train.csv')} exists), or pass "
            "data_home= the folder that holds a copy.")


def _incomplete_dir(cache_dir):
    """The archive's folder under ``cache_dir`` if it lacks a CSV file, else None.

    A folder unzipped by hand and interrupted, for example; it would keep
    the complete copy of a new download from being moved into place.
    """
    folder = os.path.join(cache_dir, _DATASET_DIR)
    if os.path.isdir(folder) and _find_dataset_dir(cache_dir) is None:
        return folder
    return None


def _download(url, cache_dir, sha256, verbose):
    """Download and unpack the archive into ``cache_dir``, replacing an incomplete copy."""
    os.makedirs(cache_dir, exist_ok=True)
    try:
        archive = download_file(url, cache_dir, sha256=sha256, verbose=verbose)
    except DownloadError as exc:
        raise DownloadError(f"{exc} Stanford Online Products is not cached in {cache_dir}. "
                            "Check the network connection and try again. "
                            f"{_advice(url, cache_dir)}") from exc
    try:
        incomplete = _incomplete_dir(cache_dir)
        if incomplete is not None:
            if verbose:
                print(f"Removing the incomplete copy {incomplete}", flush=True)
            shutil.rmtree(incomplete)
        if verbose:
            print(f"Extracting {archive}", flush=True)
        extract_zip(archive, cache_dir)
    except ArchiveError as exc:
        raise ArchiveError(f"The archive downloaded from {url} is unusable and was deleted: "
                           f"{exc} {_advice(url, cache_dir)}") from exc
    finally:
        remove_if_exists(archive)


@validate_params(
    {
        "data_home": [str, os.PathLike, None],
        "download_if_missing": ["boolean"],
        "return_X_y": ["boolean"],
        "url": [str],
        "sha256": [str, None],
        "verbose": ["verbose"],
    },
    prefer_skip_nested_validation=True,
)
def fetch_stanford_online_products(*, data_home=None, download_if_missing=True,
                                   return_X_y=False, url=SOP_URL, sha256=None, verbose=True):
    """Load the Stanford Online Products pairs of the AutoMM matching tutorial.

    On first use the zip archive is downloaded with
    :func:`sklearn.datasets.fetch_file`, checked, and unpacked into
    ``<data_home>/stanford_online_products``; later calls read that copy and
    need no network. The pair tables are returned as the tutorial builds
    them: image paths are made absolute against the folder of the CSV
    files, ``;``-joined cells part by part.

    Parameters
    ----------
    data_home : str or path-like, default=None
        Cache root; None uses :func:`sklearn.datasets.get_data_home`
        (``~/scikit_learn_data``, or ``$SCIKIT_LEARN_DATA``).
    download_if_missing : bool, default=True
        Download the data when they are not in the cache. If False and the
        cache is empty, raise an ``OSError``. A ``Stanford_Online_Products``
        folder in the cache without both CSV files counts as incomplete: a
        download replaces it.
    return_X_y : bool, default=False
        Return ``(X_train, X_test, y_train, y_test)`` instead of a Bunch:
        two-column frames of image paths and the label Series, in the order
        of :func:`~sklearn.model_selection.train_test_split`.
    url : str, default=SOP_URL
        Where the zip archive is downloaded from (``http(s)://`` or
        ``file://``); a mirror, or a local copy.
    sha256 : str, default=None
        Expected SHA-256 of the archive; None checks the zip's own CRCs only.
    verbose : bool or int, default=True
        Say what is done: the download on stderr; the extraction, and the
        removal of an incomplete copy, on stdout.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with attributes:

        train : pandas.DataFrame
            Training pairs: ``Image1``, ``Image2`` (absolute paths), ``Label``.
        test : pandas.DataFrame
            Test pairs, same columns.
        data_dir : str
            Folder that holds ``train.csv``, ``test.csv`` and the images.
        DESCR : str
            Description of the data set.

    (X_train, X_test, y_train, y_test) : tuple
        Only when ``return_X_y=True``.

    Raises
    ------
    OSError
        If the data are not cached and ``download_if_missing=False``, or the
        download fails (no network, server error, checksum mismatch, corrupt
        archive), or the cache folder cannot be written (full disk, no
        permission). The message names the cache folder and says what to do.
        Nothing partial is left in the cache.

    See Also
    --------
    make_image_pairs : A small synthetic data set of the same format, offline.
    read_pairs_csv : Read any pairs CSV the same way.

    Notes
    -----
    The data set has a fixed train/test split, so unlike most scikit-learn
    fetchers this one returns both tables rather than ``data`` and
    ``target`` of one subset.

    Examples
    --------
    >>> from sklearn_imgpair.datasets import fetch_stanford_online_products
    >>> sop = fetch_stanford_online_products()  # doctest: +SKIP
    >>> sop.train.columns.tolist()  # doctest: +SKIP
    ['Image1', 'Image2', 'Label']
    """
    cache_dir = os.path.join(get_data_home(data_home), _FOLDER)
    dataset_dir = _find_dataset_dir(cache_dir)
    if dataset_dir is None:
        if not download_if_missing:
            incomplete = _incomplete_dir(cache_dir)
            found = (f" {incomplete} lacks one of them: it is incomplete; delete it, or let "
                     "a download replace it." if incomplete else "")
            raise OSError(
                f"Stanford Online Products is not in the cache folder {cache_dir} (looked "
                f"for {' and '.join(_SPLITS)} there and in its subfolders).{found} Pass "
                f"download_if_missing=True to download it from {url}. {_advice(url, cache_dir)}"
            )
        _download(url, cache_dir, sha256, verbose)
        dataset_dir = _find_dataset_dir(cache_dir)
        if dataset_dir is None:
            raise OSError(f"The archive downloaded from {url} holds no folder with "
                          f"{' and '.join(_SPLITS)}; look at the files in {cache_dir}.")
    train, test = (read_pairs_csv(os.path.join(dataset_dir, split)) for split in _SPLITS)
    if return_X_y:
        pairs = ["Image1", "Image2"]
        return train[pairs], test[pairs], train["Label"], test["Label"]
    return Bunch(train=train, test=test, data_dir=dataset_dir, DESCR=DESCR)
