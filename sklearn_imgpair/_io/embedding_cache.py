"""Memory with a byte budget, and the embedding cache keyed by model weights and image identity."""

import hashlib
import os
import threading
from collections import OrderedDict

import numpy as np

from sklearn_imgpair._io.atomic import write_atomically
from sklearn_imgpair._io.container import tensors_digest

__all__ = ["EmbeddingCache", "MemoryStore", "model_fingerprint", "settings_key",
           "tensors_digest"]


def model_fingerprint(module, image_size):
    """Return a hex digest of a module's weights, buffers and input size.

    Two modules with the same fingerprint give the same embeddings, so it
    keys cached embeddings: a changed weight, a new checkpoint or another
    ``image_size`` never reuses stale vectors.
    """
    return tensors_digest(f"{type(module).__qualname__}:{image_size}", module.state_dict())


def settings_key(fingerprint, module, precision):
    """``fingerprint`` joined with the settings of the vectors that the weights do not hold.

    Reduced precision, test-time flips and colour change the vectors but not the
    state dict; read when the vectors are looked up, so that a setting changed after
    ``fit`` (``set_params(precision="bf16")``) counts. ``precision`` is the one that
    runs (``"auto"`` resolved), so that ``"auto"`` computed in float32 shares the
    vectors of ``"fp32"``. Only settings away from their defaults enter the key: the
    caches of networks without them stay valid.
    """
    settings = [] if precision == "fp32" else [f"precision={precision}"]
    if getattr(module, "test_time_flip", False):
        settings.append("test_time_flip")
    if getattr(module, "colour_share", 0.0):
        settings.append(f"colour_share={module.colour_share!r}")
    if not settings:
        return fingerprint
    return hashlib.sha256("|".join([fingerprint, *settings]).encode()).hexdigest()


class MemoryStore:
    """A thread-safe mapping of arrays or tensors with a byte budget.

    Parameters
    ----------
    max_bytes : int
        Memory budget in bytes (``value.nbytes`` summed); 0 keeps nothing.
    evict : bool, default=True
        What a full store does with a new value: True drops the least
        recently used values to make room; False keeps what it has and
        refuses the new value. The latter suits data read in the same order
        again and again (training epochs), where least-recently-used
        eviction would drop every value just before it is needed.
    """

    def __init__(self, max_bytes, *, evict=True):
        self.max_bytes = max_bytes
        self.evict = evict
        self.n_bytes = 0
        self._items = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self):
        return len(self._items)

    def __getstate__(self):  # DataLoader workers get a copy; locks do not pickle
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def get(self, key):
        """Return the value stored under ``key``, or None."""
        with self._lock:
            value = self._items.get(key)
            if value is not None and self.evict:
                self._items.move_to_end(key)
            return value

    def put(self, key, value):
        """Store ``value`` under ``key`` if the budget allows (see ``evict``)."""
        size = value.nbytes
        with self._lock:
            if key in self._items:
                return
            if not self.evict:
                if self.n_bytes + size <= self.max_bytes:
                    self._items[key] = value
                    self.n_bytes += size
                return
            self._items[key] = value
            self.n_bytes += size
            while self.n_bytes > self.max_bytes and self._items:
                _, evicted = self._items.popitem(last=False)
                self.n_bytes -= evicted.nbytes

    def clear(self):
        """Drop every value."""
        with self._lock:
            self._items.clear()
            self.n_bytes = 0


# Shared by every embedder in the process, so that the clones GridSearchCV fits
# for each candidate reuse the embeddings the first one computed.
_PROCESS_STORE = MemoryStore(max_bytes=512 * 2**20)


class EmbeddingCache:
    """The embeddings of one network, in process memory and, optionally, in a folder on disk.

    Entries are keyed by the network's fingerprint (:func:`model_fingerprint`)
    and an image's identity (:func:`~sklearn_imgpair._images.cells.image_key`):
    an edited image file or different weights miss the cache. Disk entries
    are one ``.npy`` file each, written atomically, so several processes can
    share a folder.

    Parameters
    ----------
    fingerprint : str
        The network's fingerprint.
    directory : str or path-like, default=None
        Folder for the disk cache; None uses no disk.
    in_memory : bool, default=True
        Keep entries in the process-wide memory store (512 MB, least recently
        used out).
    """

    def __init__(self, fingerprint, directory=None, in_memory=True):
        self.fingerprint = fingerprint
        self.directory = None if directory is None else os.fspath(directory)
        self.memory = _PROCESS_STORE if in_memory else None

    def _disk_path(self, key):
        name = hashlib.sha256(key.encode()).hexdigest()
        return os.path.join(self.directory, self.fingerprint[:32], name[:2], name + ".npy")

    def get(self, key):
        """Return the cached vector of the image ``key``, or None."""
        vector = None if self.memory is None else self.memory.get((self.fingerprint, key))
        if vector is None and self.directory is not None:
            path = self._disk_path(key)
            try:
                vector = np.load(path, allow_pickle=False)
            except (OSError, ValueError):
                return None
            if self.memory is not None:
                self.memory.put((self.fingerprint, key), vector)
        return vector

    def put(self, key, vector):
        """Store ``vector`` as the vector of the image ``key``."""
        vector = np.array(vector, dtype=np.float32)  # a copy: never a view of a batch
        if self.memory is not None:
            self.memory.put((self.fingerprint, key), vector)
        if self.directory is None:
            return

        def write(partial):
            with open(partial, "wb") as file:
                np.save(file, vector, allow_pickle=False)

        write_atomically(self._disk_path(key), write, durable=False)
