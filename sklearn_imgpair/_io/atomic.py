"""Atomic file writes: a crash or an error mid-write never leaves a half-written file."""

import os
import tempfile

__all__ = ["write_atomically"]


def _umask():
    """The process's file mode creation mask (reading it means setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync(path, directory=False):
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        descriptor = os.open(path, flags)
    except OSError:  # e.g. folders cannot be opened on Windows
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_atomically(path, write, *, durable=True):
    """Call ``write(temporary_path)``, then move the file to ``path`` in one step.

    The temporary file lies in the folder of ``path`` and is flushed to disk
    before :func:`os.replace` puts it in place, so that ``path`` holds either
    its previous content or the complete new one, even after a crash; on any
    error, or a ``KeyboardInterrupt``, the temporary file is removed and
    ``path`` is left as it was. The file gets the mode ``open`` would give it
    (``0o666`` less the umask), not the private ``0o600`` of a temporary file.

    Parameters
    ----------
    path : str or path-like
        Destination; missing parent folders are created.
    write : callable
        ``write(temporary_path)`` writes the whole file.
    durable : bool, default=True
        Flush the file and its folder to disk (``fsync``), so that the new
        content survives a power cut. False still never exposes a partial
        file, and suits many small cache entries, where a lost entry is only
        computed again.

    Returns
    -------
    path : str
        The absolute destination path.
    """
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    descriptor, partial = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=folder)
    os.close(descriptor)
    try:
        write(partial)
        if durable:
            _fsync(partial)
        os.chmod(partial, 0o666 & ~_umask())
        os.replace(partial, path)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
    if durable:
        _fsync(folder, directory=True)
    return path
