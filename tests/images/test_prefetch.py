"""prefetch: batches read one ahead in a background thread, in order, errors included."""

import threading

import pytest

from sklearn_imgpair._nn.device import prefetch


def _readers():
    return [thread for thread in threading.enumerate()
            if thread.name == "sklearn-imgpair-prefetch"]


def _joined():
    for thread in _readers():
        thread.join(timeout=5)
    return not _readers()


def test_batches_come_in_order_and_the_reader_stops():
    assert list(prefetch(iter(range(50)))) == list(range(50))
    assert _joined()


def test_an_error_of_the_reader_comes_after_the_batches_before_it():
    def batches():
        yield 1
        yield 2
        raise ValueError("X[7]: cannot read image")

    got = []
    with pytest.raises(ValueError, match=r"X\[7\]"):
        for batch in prefetch(batches()):
            got.append(batch)
    assert got == [1, 2]
    assert _joined()


def test_a_consumer_that_stops_or_fails_early_leaves_no_thread_behind():
    for _ in prefetch(iter(range(1000))):
        break
    assert _joined()
    batches = prefetch(iter(range(1000)))
    with pytest.raises(RuntimeError):
        for _ in batches:
            raise RuntimeError("the network failed")
    batches.close()
    assert _joined()
    prefetch(iter(range(3))).close()  # never started: nothing to stop
    assert _joined()


def test_embed_dataset_joins_its_reader_when_the_network_fails(monkeypatch):
    import numpy as np
    import torch

    from sklearn_imgpair._images.datasets import ImageDataset
    from sklearn_imgpair._nn import siamese

    class Failing(torch.nn.Module):
        def embed(self, images):
            raise RuntimeError("out of memory")

    pixels = np.zeros((8, 8, 3), dtype=np.uint8)
    dataset = ImageDataset([pixels] * 6, 8)
    with pytest.raises(RuntimeError, match="out of memory"):
        siamese.embed_dataset(Failing(), dataset, batch_size=2, device="cpu", num_workers=0)
    assert _joined()
