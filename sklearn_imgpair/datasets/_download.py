"""Download and unpack a zip archive into a cache folder, atomically and safely."""

import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import zipfile

from sklearn.datasets import fetch_file

__all__ = ["ArchiveError", "DownloadError", "download_file", "extract_zip", "remove_if_exists"]


class DownloadError(OSError):
    """The download itself failed: network, server, incomplete body or checksum.

    Errors of the local disk (a full disk, a read-only cache folder) are
    plain ``OSError``; only this subclass calls for checking the network.
    """


class ArchiveError(OSError):
    """The archive is unusable: not a zip file, a failed CRC, or an unsafe member."""


def remove_if_exists(path):
    """Delete the file ``path``; do nothing if it does not exist.

    Parameters
    ----------
    path : str
        File to delete.
    """
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _local_name(url):
    """The URL's last path component, unquoted: the name the file is saved under."""
    name = os.path.basename(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    return name if name not in ("", ".", "..") else "download"


def _with_host(url):
    """``url`` with ``localhost`` as the host of a ``file:///path`` URL.

    :func:`~sklearn.datasets.fetch_file` refuses URLs without a host name,
    which ``file:///path`` (what :meth:`pathlib.Path.as_uri` writes) lacks;
    ``file://localhost/path`` names the same file.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() == "file" and not parts.netloc:
        return parts._replace(netloc="localhost").geturl()
    return url


def download_file(url, folder, *, sha256=None, verbose=True):
    """Download ``url`` into ``folder``, verify it, and return the file's path.

    The download goes through :func:`sklearn.datasets.fetch_file`: the body
    is written to a temporary file in ``folder`` and renamed to its final
    name only once complete and verified, so an interrupted or failed
    download never leaves a partial file under the final name. A file that
    already has the final name (and the expected checksum, if one is given)
    is returned as it is.

    Parameters
    ----------
    url : str
        ``http(s)://`` or ``file://`` address.
    folder : str
        Existing folder the file is written to, under the URL's last name.
    sha256 : str, default=None
        Expected SHA-256 hex digest; None skips the check.
    verbose : bool, default=True
        Print a line on stderr when the download starts.

    Returns
    -------
    path : str
        The downloaded file.

    Raises
    ------
    DownloadError
        If the URL cannot be reached or read, the download is incomplete, or
        the checksum does not match. The message names the URL.
    OSError
        If the file cannot be written to ``folder`` (full disk, no
        permission). The message names the folder.
    """
    if verbose:
        print(f"Downloading {url} ...", file=sys.stderr, flush=True)
    try:
        # No retries, as before: fetch_file retries on any URLError, an HTTP 404
        # included, and starts the whole archive again; tests stay fast too.
        path = fetch_file(_with_host(url), folder=folder, local_filename=_local_name(url),
                          sha256=None if sha256 is None else sha256.lower(), n_retries=0)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        # URLError: unreachable host, HTTP errors, an incomplete body
        # (ContentTooShortError), a missing file:// source.
        reason = exc if isinstance(exc, urllib.error.HTTPError) else (
            getattr(exc, "reason", None) or exc)
        raise DownloadError(f"Cannot download {url}: {reason}.") from exc
    except OSError as exc:
        if type(exc) is OSError and exc.errno is None:  # fetch_file's: a checksum mismatch
            raise DownloadError(f"The file downloaded from {url} failed its SHA-256 check "
                                f"and was deleted: {exc}") from exc
        # Errors of the local disk carry an errno (ENOSPC, EACCES, EROFS...).
        raise OSError(f"Cannot write the download of {url} to {folder}: {exc}") from exc
    return str(path)


def _check_member(name, destination):
    """Refuse archive members that would land outside ``destination``."""
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or os.path.isabs(name) or ".." in normalised.split("/") or (
        len(normalised) > 1 and normalised[1] == ":"
    ):
        raise ArchiveError(f"Refusing to extract {name!r}: it points outside {destination!r}.")


def extract_zip(archive, destination):
    """Test a zip archive and extract it into ``destination``, atomically.

    Everything is extracted into a hidden temporary folder inside
    ``destination`` first; only once all members are out is each top-level
    entry renamed into ``destination``, so an interrupted extraction never
    leaves a partial folder under its final name. An entry that already
    exists is kept (another process finished first). Members with absolute
    paths or ``..`` parts are refused.

    Parameters
    ----------
    archive : str
        The zip file.
    destination : str
        Existing folder to extract into.

    Raises
    ------
    ArchiveError
        If the archive is not a valid zip file, a member fails its CRC check,
        or a member points outside ``destination``; nothing is extracted then.
    OSError
        If writing to ``destination`` fails (full disk, no permission).
    """
    try:
        with zipfile.ZipFile(archive) as zip_file:
            broken = zip_file.testzip()
            if broken is not None:
                raise ArchiveError(
                    f"{archive!r} is corrupt: member {broken!r} fails its CRC check.")
            for name in zip_file.namelist():
                _check_member(name, destination)
            staging = tempfile.mkdtemp(prefix=".extract-", dir=destination)
            try:
                zip_file.extractall(staging)
                for entry in os.listdir(staging):
                    target = os.path.join(destination, entry)
                    if os.path.isdir(target):  # already there (another process won)
                        continue
                    os.replace(os.path.join(staging, entry), target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise ArchiveError(f"{archive!r} is not a valid zip archive: {exc}.") from exc
