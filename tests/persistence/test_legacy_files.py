"""Files written by earlier versions of the library load and predict as they did."""

import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from sklearn_imgpair import ImageEmbedder, ImageNeighbors, ImagePairClassifier

# Written by tests/persistence/data/make_legacy_files.py with model file format 3 and ONNX format 2.
FILES_V3 = Path(__file__).resolve().parent / "data" / "files_v3"
IMAGES = [f"images/image{index}.png" for index in range(6)]
PAIRS = [(0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 5), (0, 5)]


@pytest.fixture
def legacy_folder(monkeypatch):
    """Run in the folder of the files: their gallery paths are relative to it."""
    monkeypatch.chdir(FILES_V3)
    return FILES_V3


@pytest.fixture(scope="module")
def expected():
    with np.load(FILES_V3 / "expected.npz") as arrays:
        return dict(arrays)


def _format_version(path):
    with open(path, "rb") as file:
        (size,) = struct.unpack("<Q", file.read(8))
        return int(json.loads(file.read(size))["__metadata__"]["format_version"])


def _pairs():
    return np.array(IMAGES, dtype=object)[np.asarray(PAIRS)]


@pytest.fixture
def bf16_cpu(monkeypatch):
    """A CPU with bfloat16 instructions, where precision="auto" would predict in bf16."""
    from sklearn_imgpair._nn import device

    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: True)


@pytest.mark.parametrize("name, format_version", [("classifier_v2", 2), ("classifier_v3", 3)])
def test_a_classifier_file_of_an_earlier_version_predicts_as_it_did(
        legacy_folder, expected, bf16_cpu, name, format_version):
    path = os.fspath(legacy_folder / f"{name}.safetensors")
    assert _format_version(path) == format_version
    clf = ImagePairClassifier.load(path)
    # Saved with the precision "fp32" of its time: it stays fp32 where "auto" is bf16.
    assert (clf.precision, clf.precision_) == ("fp32", "fp32")
    assert_allclose(clf.predict_proba(_pairs()), expected[f"proba_{name[-2:]}"], atol=1e-6)
    assert clf.module_.colour_share == (0.5 if format_version == 3 else 0.0)


def test_an_embedder_file_of_an_earlier_version_embeds_as_it_did(legacy_folder, expected,
                                                                 bf16_cpu):
    embedder = ImageEmbedder.load(legacy_folder / "embedder.safetensors")
    assert (embedder.precision, embedder.precision_) == ("fp32", "fp32")
    assert_allclose(embedder.transform(IMAGES), expected["transform"], atol=1e-6)


@pytest.mark.parametrize("algorithm", ["brute", "faiss"])
def test_a_search_file_of_an_earlier_version_finds_what_it_found(legacy_folder, expected,
                                                                 algorithm):
    path = legacy_folder / f"neighbors_{algorithm}.safetensors"
    if algorithm == "faiss":
        pytest.importorskip("faiss", reason="the faiss extra is not installed")
    neighbors = ImageNeighbors.load(path)
    assert neighbors.algorithm == algorithm
    distances, indices = neighbors.kneighbors(IMAGES)
    assert_array_equal(indices, expected[f"indices_{algorithm}"])
    assert_allclose(distances, expected[f"distances_{algorithm}"], atol=1e-6)
    assert list(neighbors.gallery_) == IMAGES


def test_a_search_file_of_an_earlier_version_grows_and_shrinks(legacy_folder, tmp_path):
    # Version 3 kept no content keys: images given again are embedded again.
    neighbors = ImageNeighbors.load(legacy_folder / "neighbors_brute.safetensors")
    neighbors.partial_fit(IMAGES[:2]).remove(indices=[0])
    assert list(neighbors.gallery_) == IMAGES[1:] + IMAGES[:2]
    assert_allclose(neighbors.embeddings_[-1], neighbors.embeddings_[0], atol=1e-6)  # IMAGES[1]
    loaded = ImageNeighbors.load(neighbors.save(tmp_path / "grown.safetensors"))
    assert _format_version(tmp_path / "grown.safetensors") == 4
    assert loaded._gallery_keys[:5] == [None] * 5 and None not in loaded._gallery_keys[5:]
    assert_array_equal(loaded.kneighbors()[1], neighbors.kneighbors()[1])


def test_an_onnx_file_of_an_earlier_version_predicts_as_it_did(legacy_folder, expected):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from sklearn_imgpair.onnx import OnnxImageMatcher

    matcher = OnnxImageMatcher(legacy_folder / "classifier.onnx")
    assert matcher.metadata_["format_version"] == 2
    # Written before static int8: float32, and no calibration recorded.
    assert matcher.metadata_["quantization"] == "none"
    assert matcher.metadata_["calibration"] is None
    assert_allclose(matcher.predict_proba(_pairs()), expected["proba_onnx"], atol=1e-6)


def test_estimators_pickled_before_the_redesign_unpickle_and_predict_as_they_did(
        legacy_folder):
    # Written by make_legacy_files.py --pickles-only with the code before the callbacks
    # were split by concern: the pickle names sklearn_imgpair._training.callbacks.
    data = (legacy_folder / "pickles.pkl").read_bytes()
    assert b"sklearn_imgpair._training.callbacks" in data
    estimators = pickle.loads(data)
    assert estimators["classifier"].precision == estimators["embedder"].precision == "fp32"
    with np.load(legacy_folder / "pickles.npz") as expected:
        assert_allclose(estimators["classifier"].predict_proba(_pairs()), expected["proba"],
                        atol=1e-6)
        assert_allclose(estimators["embedder"].transform(IMAGES), expected["transform"],
                        atol=1e-6)
    # ... and train on: the unpickled callbacks work with the new modules.
    clf = estimators["classifier"].set_params(max_epochs=1)
    pairs = [(a, b) for i, a in enumerate(IMAGES) for b in IMAGES[i:]]  # 21, 6 of them a match
    clf.partial_fit(pairs, [int(a == b) for a, b in pairs])
    assert len(clf.history) == 3 and np.isfinite(clf.history[-1, "valid_loss"])
