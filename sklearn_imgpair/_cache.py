"""EmbeddingCache: image embeddings keyed by model weights and file identity."""

import hashlib
import os
import tempfile
import threading
from collections import OrderedDict

import numpy as np
import torch

__all__ = ["EmbeddingCache", "file_key", "model_fingerprint"]


def model_fingerprint(module, image_size):
    """Return a hex digest of a module's weights, buffers and input size.

    Two modules with the same fingerprint give the same embeddings, so it
    keys cached embeddings: a changed weight, a new checkpoint or another
    ``image_size`` never reuses stale vectors.
    """
    digest = hashlib.sha256(f"{type(module).__qualname__}:{image_size}".encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def file_key(path):
    """Identify an image file by absolute path, size and modification time.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    """
    stat = os.stat(path)
    return f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}"


class _MemoryStore:
    """A thread-safe least-recently-used mapping with a byte budget."""

    def __init__(self, max_bytes):
        self.max_bytes = max_bytes
        self.n_bytes = 0
        self._items = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key, value):
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self.n_bytes += value.nbytes
            while self.n_bytes > self.max_bytes and self._items:
                _, evicted = self._items.popitem(last=False)
                self.n_bytes -= evicted.nbytes

    def clear(self):
        with self._lock:
            self._items.clear()
            self.n_bytes = 0


# Shared by every embedder in the process, so that the clones GridSearchCV fits
# for each candidate reuse the embeddings the first one computed.
_PROCESS_STORE = _MemoryStore(max_bytes=512 * 2**20)


class EmbeddingCache:
    """Embeddings stored in process memory and, optionally, in a folder on disk.

    Entries are keyed by :func:`model_fingerprint` and :func:`file_key`: an
    edited image file or different weights miss the cache. Disk entries are
    one ``.npy`` file each, written atomically, so several processes can
    share a folder.

    Parameters
    ----------
    directory : str or path-like, default=None
        Folder for the disk cache; None uses no disk.
    in_memory : bool, default=True
        Keep entries in the process-wide memory store (512 MB, least recently
        used out).
    """

    def __init__(self, directory=None, in_memory=True):
        self.directory = None if directory is None else os.fspath(directory)
        self.memory = _PROCESS_STORE if in_memory else None

    def _disk_path(self, fingerprint, key):
        name = hashlib.sha256(key.encode()).hexdigest()
        return os.path.join(self.directory, fingerprint[:32], name[:2], name + ".npy")

    def get(self, fingerprint, key):
        """Return the cached vector for ``key`` under ``fingerprint``, or None."""
        vector = None if self.memory is None else self.memory.get((fingerprint, key))
        if vector is None and self.directory is not None:
            path = self._disk_path(fingerprint, key)
            try:
                vector = np.load(path, allow_pickle=False)
            except (OSError, ValueError):
                return None
            if self.memory is not None:
                self.memory.put((fingerprint, key), vector)
        return vector

    def put(self, fingerprint, key, vector):
        """Store ``vector`` for ``key`` under ``fingerprint``."""
        vector = np.array(vector, dtype=np.float32)  # a copy: never a view of a batch
        if self.memory is not None:
            self.memory.put((fingerprint, key), vector)
        if self.directory is None:
            return
        path = self._disk_path(fingerprint, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                np.save(file, vector, allow_pickle=False)
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
