"""Download and unpack a zip archive into a cache folder, atomically and safely."""

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile

from sklearn_imgpair._progress import progress_bar

__all__ = ["ArchiveError", "DownloadError", "download_file", "extract_zip", "remove_if_exists"]

_CHUNK_SIZE = 2**20


class DownloadError(OSError):
    """The download itself failed: network, server, incomplete body or checksum.

    Errors of the local disk (a full disk, a read-only cache folder) are
    plain ``OSError``; only this subclass calls for checking the network.
    """


class ArchiveError(OSError):
    """The archive is unusable: not a zip file, a failed CRC, or an unsafe member."""


class _WriteError(Exception):
    """Carries an ``OSError`` of writing the local file out of the download loop."""


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


def _stream(response, file, desc, verbose):
    """Copy the response body into ``file``; return (bytes read, SHA-256 hex digest)."""
    length = response.headers.get("Content-Length") if response.headers else None
    total = int(length) if length and length.isdigit() else None
    digest, n_bytes = hashlib.sha256(), 0
    with progress_bar(total, desc, unit="B", enabled=bool(verbose)) as bar:
        while chunk := response.read(_CHUNK_SIZE):
            try:
                file.write(chunk)
            except OSError as exc:
                raise _WriteError(exc) from exc
            digest.update(chunk)
            n_bytes += len(chunk)
            bar.update(len(chunk))
    if total is not None and n_bytes != total:
        raise DownloadError(f"the download stopped after {n_bytes} of {total} bytes")
    return n_bytes, digest.hexdigest()


def _stream_url(url, file, name, timeout, verbose):
    """Write the body of ``url`` into ``file``; return its SHA-256 hex digest."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return _stream(response, file, f"Downloading {name}", verbose)[1]
    except OSError as exc:  # URLError, HTTPError, timeouts, refused connections
        reason = exc if isinstance(exc, urllib.error.HTTPError) else (
            getattr(exc, "reason", None) or exc)
        raise DownloadError(f"Cannot download {url}: {reason}.") from exc


def download_file(url, folder, *, sha256=None, timeout=30, verbose=True):
    """Download ``url`` into ``folder``, verify it, and return the file's path.

    The body is written to a temporary file in ``folder`` and renamed to its
    final name only once complete and verified, so an interrupted or failed
    download never leaves a partial file under the final name.

    Parameters
    ----------
    url : str
        ``http(s)://`` or ``file://`` address.
    folder : str
        Existing folder the file is written to, under the URL's last name.
    sha256 : str, default=None
        Expected SHA-256 hex digest; None skips the check.
    timeout : float, default=30
        Seconds to wait for the server to answer (and between data).
    verbose : bool, default=True
        Show a progress bar on stderr.

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
    name = os.path.basename(urllib.request.url2pathname(url.rsplit("/", 1)[-1])) or "download"
    path = os.path.join(folder, name)
    descriptor, partial = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
    try:
        try:
            with os.fdopen(descriptor, "wb") as file:
                digest = _stream_url(url, file, name, timeout, verbose)
        except (_WriteError, OSError) as exc:  # the local disk, not the network
            if isinstance(exc, DownloadError):
                raise
            cause = exc.__cause__ if isinstance(exc, _WriteError) else exc
            raise OSError(f"Cannot write the download of {url} to {folder}: {cause}"
                          ) from cause
        if sha256 is not None and digest != sha256.lower():
            raise DownloadError(
                f"The file downloaded from {url} is corrupt: its SHA-256 is {digest}, "
                f"expected {sha256.lower()}. It was deleted; try again."
            )
        os.replace(partial, path)
    except BaseException:
        remove_if_exists(partial)
        raise
    return path


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
