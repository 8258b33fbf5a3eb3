"""Shared fixtures: seeding, a tiny Swin configuration and small image-pair data sets."""

import collections
import io
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from sklearn_imgpair import ImagePairClassifier
from sklearn_imgpair.datasets import make_image_pairs

# A 32 px Swin with about 19k parameters: fast enough for unit tests on CPU.
TINY_SWIN = dict(patch_size=2, window_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2))
TINY_IMAGE_SIZE = 32
COIL_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "coil-100"


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(autouse=True)
def _no_native_bf16(monkeypatch):
    """precision="auto" predicts in fp32 in every test, as on a CPU without bf16 instructions.

    The tests compare torch's probabilities with float32 references (ONNX, saved files) to
    1e-4; on a CPU with AVX512-BF16 or AMX, or a recent GPU, "auto" would predict in bf16.
    Tests of bf16 itself patch these back.
    """
    from sklearn_imgpair._nn import device

    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: False)
    monkeypatch.setattr(device, "_cuda_has_bf16", lambda: False)


@pytest.fixture
def tiny_backbone_kwargs():
    """Keyword arguments that give ImagePairClassifier a tiny random Swin."""
    return dict(pretrained=False, image_size=TINY_IMAGE_SIZE, model_kwargs=dict(TINY_SWIN))


def make_tiny_classifier(**params):
    """A fast, seeded classifier on the tiny Swin; params override the defaults."""
    defaults = dict(pretrained=False, image_size=TINY_IMAGE_SIZE, model_kwargs=dict(TINY_SWIN),
                    lr=3e-3, max_epochs=3, batch_size=16, random_state=0)
    return ImagePairClassifier(**{**defaults, **params})


class FakeClock:
    """Advances by ``step`` seconds every time it is read."""

    def __init__(self, step=1.0):
        self.now = 0.0
        self.step = step

    def __call__(self):
        self.now += self.step
        return self.now


@pytest.fixture
def batch_sizes(monkeypatch):
    """The batch_size of every DataLoader made while the test runs."""
    seen = []
    original = torch.utils.data.DataLoader.__init__

    def init(self, dataset, batch_size=1, *args, **kwargs):
        seen.append(batch_size)
        original(self, dataset, batch_size, *args, **kwargs)

    monkeypatch.setattr(torch.utils.data.DataLoader, "__init__", init)
    return seen


@pytest.fixture
def decode_counts(monkeypatch):
    """How often each image was decoded while the test runs (a Counter by path).

    Files are decoded through the decoded-image cache (``decode``) and by the image
    datasets (``datasets``); both are counted. In this process only: use num_workers=0.
    """
    from sklearn_imgpair._images import datasets as _datasets
    from sklearn_imgpair._images import decode as _decode

    counts = collections.Counter()
    original = _decode.load_image

    def counting_load_image(path, image_size):
        counts[path] += 1
        return original(path, image_size)

    monkeypatch.setattr(_decode, "load_image", counting_load_image)
    monkeypatch.setattr(_datasets, "load_image", counting_load_image)
    return counts


@pytest.fixture
def make_clf():
    """Factory for tiny, seeded classifiers: ``make_clf(max_epochs=5)``."""
    return make_tiny_classifier


def _as_arrays(frame):
    return frame[["Image1", "Image2"]].to_numpy(dtype=object), frame["Label"].to_numpy()


@pytest.fixture(scope="session")
def synthetic_pairs(tmp_path_factory):
    """Train and test tables of the synthetic products, 32 px PNGs."""
    directory = tmp_path_factory.mktemp("synthetic")
    return make_image_pairs(directory, n_products=12, n_views=4, image_size=TINY_IMAGE_SIZE,
                            n_pairs=120, random_state=0)


@pytest.fixture(scope="session")
def image_pairs(synthetic_pairs):
    """``(X, y)``: an (n, 2) object array of PNG paths and 0/1 labels."""
    return _as_arrays(synthetic_pairs[0])


@pytest.fixture(scope="session")
def separable_pairs(tmp_path_factory):
    """``(X, y)`` for an easy task: each identity is one flat colour plus noise."""
    from PIL import Image

    directory = tmp_path_factory.mktemp("separable")
    rng = np.random.default_rng(0)
    paths, identities = [], []
    for identity in range(6):
        colour = rng.integers(0, 256, size=3)
        for view in range(4):
            pixels = colour + rng.normal(0, 12, size=(TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3))
            path = os.path.join(directory, f"id{identity}_view{view}.png")
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
            paths.append(path)
            identities.append(identity)
    rows, labels = [], []
    for i in range(len(paths)):
        for j in range(i + 1, len(paths)):
            rows.append((paths[i], paths[j]))
            labels.append(int(identities[i] == identities[j]))
    return np.array(rows, dtype=object), np.array(labels)


@pytest.fixture(scope="module")
def model_path(image_pairs, tmp_path_factory):
    """A tiny classifier fitted for one epoch and saved; tests must not overwrite it.

    Modules that need another model define their own ``model_path``.
    """
    X, y = image_pairs
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    make_tiny_classifier(max_epochs=1).fit(X, y).save(path)
    return path


@pytest.fixture(scope="module")
def model(model_path):
    from sklearn_imgpair import ImagePairClassifier

    return ImagePairClassifier.load(model_path)


@pytest.fixture(scope="module")
def fitted_clf(image_pairs):
    """A classifier fitted once per module; tests must not mutate it."""
    X, y = image_pairs
    return make_tiny_classifier().fit(X, y)


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace, image_pairs, tmp_path):
    doctest_namespace["TINY_SWIN"] = dict(TINY_SWIN)
    doctest_namespace["X"], doctest_namespace["y"] = image_pairs
    doctest_namespace["tmp_dir"] = str(tmp_path)


# ----------------------------------------------------------------------
# a fake Stanford Online Products archive
# ----------------------------------------------------------------------


def _product_png(name, image_size):
    """PNG bytes of a view: its product's colour (the file name before '_') plus noise."""
    product = os.path.basename(name).split("_")[0]
    colour = np.random.default_rng(zlib.crc32(product.encode())).integers(0, 256, size=3)
    noise = np.random.default_rng(zlib.crc32(name.encode())).normal(
        0, 12, size=(image_size, image_size, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(colour + noise, 0, 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def write_sop_zip(archive, splits, image_size=8):
    """Write a zip laid out like the tutorial's ``Stanford_Online_Products.zip``.

    Parameters
    ----------
    archive : pathlib.Path
        The zip file to write.
    splits : dict
        ``{"train": rows, "test": rows}``, rows ``(image1, image2, label)``
        with image paths relative to the data folder, such as
        ``"bicycle_final/1_0.png"`` (product ``1``, view ``0``).
    image_size : int, default=8
        Side length of the PNG images.

    Returns
    -------
    archive : pathlib.Path
    """
    names = sorted({path for rows in splits.values() for row in rows for path in row[:2]})
    with zipfile.ZipFile(archive, "w") as zip_file:
        for name in names:
            zip_file.writestr(f"Stanford_Online_Products/{name}", _product_png(name, image_size))
        for split, rows in splits.items():
            frame = pd.DataFrame(rows, columns=["Image1", "Image2", "Label"])
            # With the unnamed index column that the tutorial reads with index_col=0.
            zip_file.writestr(f"Stanford_Online_Products/{split}.csv", frame.to_csv())
    return archive


@pytest.fixture(scope="session")
def sop_zip(tmp_path_factory):
    """A small zip laid out like the tutorial's: Stanford_Online_Products/{train,test}.csv."""
    rows = [("bicycle_final/1_0.png", "bicycle_final/1_1.png", 1),
            ("bicycle_final/1_0.png", "kettle_final/2_0.png", 0),
            ("kettle_final/2_0.png", "kettle_final/2_1.png", 1)]
    archive = tmp_path_factory.mktemp("sop") / "Stanford_Online_Products.zip"
    return write_sop_zip(archive, {"train": rows[:2], "test": rows[2:]})


def go_offline(monkeypatch):
    """Make huggingface_hub offline: its variable for subprocesses, its setting in this one.

    ``huggingface_hub.constants`` reads ``HF_HUB_OFFLINE`` once, when it is
    imported; the library asks it, not the environment.
    """
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
