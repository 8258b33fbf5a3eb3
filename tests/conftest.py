"""Shared fixtures: seeding, a tiny Swin configuration and small image-pair data sets."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

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


@pytest.fixture
def tiny_backbone_kwargs():
    """Keyword arguments that give ImagePairClassifier a tiny random Swin."""
    return dict(pretrained=False, image_size=TINY_IMAGE_SIZE, model_kwargs=dict(TINY_SWIN))


def make_tiny_classifier(**params):
    """A fast, seeded classifier on the tiny Swin; params override the defaults."""
    defaults = dict(pretrained=False, image_size=TINY_IMAGE_SIZE, model_kwargs=dict(TINY_SWIN),
                    lr=3e-3, max_epochs=3, batch_size=16, random_state=0)
    return ImagePairClassifier(**{**defaults, **params})


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
def fitted_clf(image_pairs):
    """A classifier fitted once per module; tests must not mutate it."""
    X, y = image_pairs
    return make_tiny_classifier().fit(X, y)


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace, image_pairs, tmp_path):
    doctest_namespace["TINY_SWIN"] = dict(TINY_SWIN)
    doctest_namespace["X"], doctest_namespace["y"] = image_pairs
    doctest_namespace["tmp_dir"] = str(tmp_path)
