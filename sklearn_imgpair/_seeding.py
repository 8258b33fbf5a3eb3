"""seeded(): run a block with torch's and numpy's global generators seeded, then restore them."""

import contextlib

import numpy as np
import torch
from sklearn.utils import check_random_state

__all__ = ["seeded"]


@contextlib.contextmanager
def seeded(random_state):
    """Seed torch's (CPU and every CUDA device) and numpy's global generators in the block.

    The callers' generator states are restored afterwards, so an estimator's
    ``random_state`` leaves no trace on other code. None leaves the
    generators alone.
    """
    if random_state is None:
        yield
        return
    seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    numpy_state = np.random.get_state()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
