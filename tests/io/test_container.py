"""The model file container: round trip, checksum, header checks, labels; no torch."""

import json
import struct
import subprocess
import sys

import numpy as np
import pytest
import safetensors.numpy
from numpy.testing import assert_array_equal

from sklearn_imgpair._io.container import (
    decode_labels,
    encode_labels,
    read_container,
    stored_estimator,
    tensors_digest,
    write_container,
)

ARRAYS = {"head.bias": np.array(0.5, dtype=np.float32),
          "backbone.w": np.arange(6, dtype=np.float32).reshape(2, 3),
          "index": np.arange(5, dtype=np.uint8)}
CONTENT = {"params": {"threshold": 0.5}, "fitted": {"labels": [0, 1]}}


@pytest.fixture
def written(tmp_path):
    return write_container(tmp_path / "model.safetensors", "Estimator", CONTENT, ARRAYS,
                           format_version=2)


def _metadata(path):
    data = open(path, "rb").read()
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + size])["__metadata__"]


def _rewrite(path, arrays=None, **metadata):
    """Write ``path`` again with some metadata replaced, without re-signing."""
    with open(path, "rb") as file:
        data = file.read()
    arrays = safetensors.numpy.load(data) if arrays is None else arrays
    data = safetensors.numpy.save(arrays, metadata={**_metadata(path), **metadata})
    with open(path, "wb") as file:
        file.write(data)


def test_a_written_container_reads_back_exactly(written):
    content, arrays = read_container(written, "Estimator", max_version=2)
    assert content == {"estimator": "Estimator", **CONTENT}
    assert set(arrays) == set(ARRAYS)
    for name, array in ARRAYS.items():
        assert arrays[name].dtype == array.dtype and arrays[name].shape == array.shape
        assert_array_equal(arrays[name], array)
    assert stored_estimator(written) == "Estimator"


def test_the_caller_gives_the_format_version(written, tmp_path):
    assert _metadata(written)["format_version"] == "2"
    path = write_container(tmp_path / "v7.safetensors", "Estimator", CONTENT, ARRAYS,
                           format_version=7)
    assert _metadata(path)["format_version"] == "7"
    assert read_container(path, "Estimator", max_version=7)[0]["params"] == CONTENT["params"]


def test_a_newer_version_is_refused_with_upgrade_advice(written):
    with pytest.raises(ValueError, match=r"written in model file format 2 by a newer "
                                         r"sklearn-imgpair; this version reads formats up "
                                         r"to 1\. Upgrade sklearn-imgpair\."):
        read_container(written, "Estimator", max_version=1)


@pytest.mark.parametrize("edit", ["content", "array"])
def test_a_modified_file_fails_its_checksum(written, edit):
    if edit == "content":
        text = _metadata(written)["content"].replace('"threshold": 0.5', '"threshold": 0.1')
        _rewrite(written, content=text)
    else:
        _rewrite(written, arrays={**ARRAYS, "index": np.arange(1, 6, dtype=np.uint8)})
    with pytest.raises(ValueError, match="checksum does not match its content"):
        read_container(written, "Estimator", max_version=2)


@pytest.mark.parametrize("size, message", [
    (5, "5 bytes long \\(truncated or empty\\)"),
    (40, "its header does not fit in the file"),
    (-10, "is truncated or corrupt: its tensors cannot be read"),
])
def test_a_truncated_file_is_refused(written, size, message):
    data = open(written, "rb").read()
    with open(written, "wb") as file:
        file.write(data[:size])
    with pytest.raises(ValueError, match=message):
        read_container(written, "Estimator", max_version=2)


def test_other_files_are_refused_clearly(written, tmp_path):
    bare = tmp_path / "weights.safetensors"
    bare.write_bytes(safetensors.numpy.save(ARRAYS))
    with pytest.raises(ValueError, match="without the library's metadata"):
        read_container(bare, "Estimator", max_version=2)
    with pytest.raises(ValueError, match="without the library's metadata"):
        stored_estimator(bare)
    _rewrite(written, format="another-library")
    with pytest.raises(ValueError, match="is not a sklearn-imgpair model file"):
        read_container(written, "Estimator", max_version=2)
    with pytest.raises(FileNotFoundError, match="Model file not found"):
        read_container(tmp_path / "absent.safetensors", "Estimator", max_version=2)
    with pytest.raises(ValueError, match="Model path is not a file"):
        read_container(tmp_path, "Estimator", max_version=2)


def test_another_estimator_is_refused(written):
    with pytest.raises(ValueError, match="holds a 'Estimator', not a Other; load it with "
                                         "Estimator.load"):
        read_container(written, "Other", max_version=2)


def test_the_digest_of_arrays_never_changes():
    # The checksum of every model file written so far; the same value as the
    # embedding cache's digest of these arrays as torch tensors (test_persistence).
    arrays = {"head.bias": np.array([0.5, -1.0], dtype=np.float32),
              "backbone.w": np.arange(6, dtype=np.float32).reshape(2, 3),
              "n": np.array([3], dtype=np.int64)}
    assert tensors_digest('{"a": 1}', arrays) == (
        "772e1d581820e137ebc7a2f5d53b2e5881ef9623bee3a2809b15b4d2fd2166db")


@pytest.mark.parametrize("classes", [
    np.array([0, 1]), np.array([0.0, 1.0]), np.array([False, True]),
    np.array(["no", "yes"]), np.array(["no", 1], dtype=object),
])
def test_labels_round_trip_with_their_dtype(classes):
    encoded = json.loads(json.dumps(encode_labels(classes)))
    decoded = decode_labels(encoded)
    assert decoded.dtype == classes.dtype
    assert_array_equal(decoded, classes)


def test_bad_labels_are_refused():
    with pytest.raises(ValueError, match="cannot be saved without pickle"):
        encode_labels(np.array([None, 1], dtype=object))
    with pytest.raises(ValueError, match="bad class labels"):
        decode_labels({"dtype": "<M8[ns]", "values": [0, 1]})
    with pytest.raises(ValueError, match="bad class labels"):
        decode_labels({"values": [0, 1]})


def test_the_container_imports_no_torch():
    code = """
import importlib.abc, sys

class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("torch", "timm", "skorch"):
            raise ImportError(f"{name} is blocked in this test")

sys.meta_path.insert(0, BlockTorch())
import sklearn_imgpair._io.container
import sklearn_imgpair._deploy.onnx_format
print(sorted(name for name in sys.modules if name.partition(".")[0] in ("torch", "timm")))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("block_bytes", [5, 2**20])
def test_mapped_arrays_are_read_only_maps_of_the_file_verified_block_by_block(
        written, monkeypatch, block_bytes):
    import sklearn_imgpair._io.container as container

    monkeypatch.setattr(container, "_HASH_BLOCK_BYTES", block_bytes)
    content, arrays = read_container(written, "Estimator", max_version=2,
                                     mapped=("backbone.w", "index"))
    assert content == {"estimator": "Estimator", **CONTENT}
    for name in ("backbone.w", "index"):
        assert isinstance(arrays[name], np.memmap) and not arrays[name].flags.writeable
        assert_array_equal(arrays[name], ARRAYS[name])
    assert not isinstance(arrays["head.bias"], np.memmap) and arrays["head.bias"].flags.writeable


def test_an_empty_array_is_read_rather_than_mapped(tmp_path):
    arrays = {"empty": np.zeros((0, 4), dtype=np.float32), "w": np.ones(3, dtype=np.float32)}
    path = write_container(tmp_path / "empty.safetensors", "Estimator", CONTENT, arrays,
                           format_version=1)
    _, read = read_container(path, "Estimator", max_version=1, mapped=("empty", "w"))
    assert read["empty"].shape == (0, 4) and not isinstance(read["empty"], np.memmap)
    assert isinstance(read["w"], np.memmap)


@pytest.mark.parametrize("mapped", [(), ("backbone.w",)])
def test_a_changed_byte_of_a_mapped_array_fails_the_checksum(written, mapped):
    data = bytearray(open(written, "rb").read())
    (size,) = struct.unpack("<Q", data[:8])
    start = json.loads(data[8:8 + size])["backbone.w"]["data_offsets"][0]
    data[8 + size + start + 5] ^= 0x01
    with open(written, "wb") as file:
        file.write(bytes(data))
    with pytest.raises(ValueError, match="checksum does not match"):
        read_container(written, "Estimator", max_version=2, mapped=mapped)


def test_tensors_that_do_not_tile_the_data_are_refused(written):
    data = bytearray(open(written, "rb").read())
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    header["backbone.w"]["shape"] = [3, 3]  # more bytes than its offsets hold
    text = json.dumps(header).encode()
    with open(written, "wb") as file:
        file.write(struct.pack("<Q", len(text)) + text + data[8 + size:])
    with pytest.raises(ValueError, match="is truncated or corrupt: its tensors cannot be read"):
        read_container(written, "Estimator", max_version=2, mapped=("backbone.w",))
