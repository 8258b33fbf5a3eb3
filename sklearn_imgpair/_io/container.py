"""The model file container: safetensors arrays, a JSON document and a checksum; no torch.

Every model file of the library is one ``.safetensors`` file. Its tensors are
numpy arrays (a network's weights, a gallery's embeddings, ...); its
safetensors metadata hold four strings:

``format``
    ``"sklearn-imgpair"``, which tells a model file from bare weights.
``format_version``
    The version of the schema that wrote the document, chosen by that schema
    (see :mod:`~sklearn_imgpair._persistence.classifier_file`,
    :mod:`~sklearn_imgpair._persistence.embedder_file` and
    :mod:`~sklearn_imgpair._persistence.neighbors_file`); the container only refuses a
    version above the one its reader knows.
``content``
    The JSON document: ``"estimator"``, the class name, and whatever the
    schema writes.
``sha256``
    :func:`tensors_digest` of the document and every array, so that a file
    modified after saving is refused.

Reading a file parses JSON and copies array bytes, nothing else: no pickle,
no import named by the file. Arrays named by the reader (a gallery's
embeddings) can instead be memory-mapped read-only (:func:`read_container`'s
``mapped``): safetensors stores each tensor contiguously at an offset its
header gives, so the array is a :class:`numpy.memmap` of that byte range,
whose pages the operating system reads when they are used and shares between
the processes that map the file. The checksum is still verified before the
arrays are returned, by reading the file in blocks into a small buffer: the
file passes through the page cache (shared) but does not stay resident in
the process, and opening a large file takes the time of reading and hashing
it once. This module imports neither torch nor timm, so
that the ONNX metadata (:mod:`~sklearn_imgpair._deploy.onnx_format`) share its
label codec without them.
"""

import hashlib
import json
import math
import os
import struct
import sys

import numpy as np

from sklearn_imgpair._io.atomic import write_atomically

__all__ = ["FORMAT_NAME", "decode_labels", "encode_labels", "read_container",
           "stored_estimator", "tensors_digest", "write_container"]

FORMAT_NAME = "sklearn-imgpair"
_MAX_HEADER_BYTES = 100 * 2**20
# Bytes read at a time when a mapped array is hashed: the process holds this
# buffer, not the array.
_HASH_BLOCK_BYTES = 16 * 2**20
# The digest names dtypes as torch spells them: files were first signed from torch
# tensors, and their checksums must still match.
_DTYPE_NAMES = {
    np.dtype(np.bool_): "torch.bool", np.dtype(np.uint8): "torch.uint8",
    np.dtype(np.int8): "torch.int8", np.dtype(np.int16): "torch.int16",
    np.dtype(np.int32): "torch.int32", np.dtype(np.int64): "torch.int64",
    np.dtype(np.uint16): "torch.uint16", np.dtype(np.uint32): "torch.uint32",
    np.dtype(np.uint64): "torch.uint64", np.dtype(np.float16): "torch.float16",
    np.dtype(np.float32): "torch.float32", np.dtype(np.float64): "torch.float64",
}
# safetensors' names of the numpy dtypes.
_SAFETENSORS_DTYPES = {
    "BOOL": np.dtype(np.bool_), "U8": np.dtype(np.uint8), "I8": np.dtype(np.int8),
    "I16": np.dtype("<i2"), "I32": np.dtype("<i4"), "I64": np.dtype("<i8"),
    "U16": np.dtype("<u2"), "U32": np.dtype("<u4"), "U64": np.dtype("<u8"),
    "F16": np.dtype("<f2"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8"),
}
_SAFETENSORS_NAMES = {dtype: name for name, dtype in _SAFETENSORS_DTYPES.items()}


def _digest_parts(value):
    """The dtype name, shape and bytes of an array or of a torch tensor, for the digest."""
    if not isinstance(value, np.ndarray) and hasattr(value, "detach"):
        # A torch tensor (the embedding cache's keys): torch is imported already, and a
        # uint8 view gives the bytes of the dtypes that numpy lacks, such as bfloat16.
        tensor = value.detach().cpu().contiguous()
        torch = sys.modules[type(tensor).__module__.partition(".")[0]]
        return str(tensor.dtype), tuple(tensor.shape), tensor.reshape(-1).view(torch.uint8).numpy()
    array = np.asarray(value, order="C")
    return _DTYPE_NAMES[array.dtype], array.shape, array.reshape(-1).view(np.uint8)


def tensors_digest(prefix, arrays):
    """Return the SHA-256 hex digest of ``prefix`` and a dict of named arrays.

    Names, dtypes, shapes and bytes all count, in sorted name order, so two
    dicts have the same digest only when they hold the same arrays. A numpy
    array and a torch tensor of the same values have the same digest: the
    checksums of model files and the embedding cache's keys of model weights
    (:func:`~sklearn_imgpair._io.embedding_cache.model_fingerprint`) are both
    this digest.

    Parameters
    ----------
    prefix : str
        Text hashed first (a file's JSON document, a model's input size).
    arrays : dict of str to ndarray or Tensor

    Returns
    -------
    digest : str
    """
    digest = hashlib.sha256(prefix.encode())
    for name in sorted(arrays):
        dtype_name, shape, data = _digest_parts(arrays[name])
        digest.update(f"{name}|{dtype_name}|{tuple(shape)}".encode())
        digest.update(memoryview(data))  # the array's own bytes, not a copy
    return digest.hexdigest()


# ----------------------------------------------------------------------
# class labels
# ----------------------------------------------------------------------


def encode_labels(classes):
    """Encode a ``classes_`` array as ``{"dtype": ..., "values": [...]}``.

    The form of class labels in model files and in the ONNX metadata.

    Raises
    ------
    ValueError
        If a label is not a number, a boolean or a string.
    """
    values = [value.item() if isinstance(value, np.generic) else value for value in classes]
    if not all(isinstance(value, (bool, int, float, str)) for value in values):
        raise ValueError(f"classes_ {classes!r} cannot be saved without pickle: labels must "
                         "be numbers, booleans or strings.")
    dtype = "object" if classes.dtype.kind == "O" else classes.dtype.str
    return {"dtype": dtype, "values": values}


def decode_labels(encoded):
    """Rebuild a ``classes_`` array from :func:`encode_labels`'s output.

    Raises
    ------
    ValueError
        If ``encoded`` is not such a mapping, or names a dtype that labels
        cannot have.
    """
    try:
        dtype, values = encoded["dtype"], encoded["values"]
        if dtype == "object":
            labels = np.empty(len(values), dtype=object)
            labels[:] = values
            return labels
        if np.dtype(dtype).kind not in "biufU":
            raise TypeError(dtype)
        return np.asarray(values, dtype=np.dtype(dtype))
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"the file holds bad class labels: {encoded!r}.") from None


# ----------------------------------------------------------------------
# the file
# ----------------------------------------------------------------------


def write_container(path, estimator_name, content, arrays, *, format_version):
    """Write a JSON ``content`` and numpy ``arrays`` to ``path``, atomically.

    Parameters
    ----------
    path : str or path-like
        The file to write; an existing file is replaced only once the new one
        is complete.
    estimator_name : str
        Class name of the estimator, checked by :func:`read_container`.
    content : dict
        The schema's JSON-ready document.
    arrays : dict of str to ndarray
        The arrays of the file.
    format_version : int
        The schema's version of ``content``.

    Returns
    -------
    path : str
        The absolute path written.
    """
    arrays = {name: np.asarray(array, order="C") for name, array in arrays.items()}
    for name, array in arrays.items():
        if array.dtype not in _SAFETENSORS_NAMES:
            raise ValueError(f"array {name!r} of dtype {array.dtype} cannot be saved.")
    text = json.dumps({"estimator": estimator_name, **content}, sort_keys=True)
    metadata = {"format": FORMAT_NAME, "format_version": str(int(format_version)),
                "content": text, "sha256": tensors_digest(text, arrays)}
    # Arrays of the widest items first: every array starts at a multiple of its
    # item size, and the data at a multiple of 8, so that each can be mapped.
    names = sorted(arrays, key=lambda name: (-arrays[name].dtype.alignment, name))
    header, offset = {"__metadata__": metadata}, 0
    for name in names:
        array = arrays[name]
        header[name] = {"dtype": _SAFETENSORS_NAMES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)

    def write(partial):
        # Each array is written from its own memory (or its mapping), not
        # gathered into one buffer first.
        with open(partial, "wb") as file:
            file.write(struct.pack("<Q", len(head)) + head)
            for name in names:
                file.write(memoryview(arrays[name].reshape(-1).view(np.uint8)))

    return write_atomically(os.fspath(path), write)


def _check_path(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Model file not found: {path!r}.")
    if not os.path.isfile(path):
        raise ValueError(f"Model path is not a file: {path!r}.")
    return path


def _read_header(file, path):
    """The safetensors header of an open model file, and where its data start.

    Returns
    -------
    header : dict
        The header's JSON: a ``{"dtype", "shape", "data_offsets"}`` entry per
        tensor and the ``"__metadata__"``.
    data_start : int
        The offset of the first tensor's bytes in the file.
    """
    file_size = os.fstat(file.fileno()).st_size
    head = file.read(8)
    if len(head) < 8:
        raise ValueError(f"{path!r} is not a sklearn-imgpair model file: it is "
                         f"{file_size} bytes long (truncated or empty).")
    (size,) = struct.unpack("<Q", head)
    if size > min(file_size - 8, _MAX_HEADER_BYTES):
        raise ValueError(f"{path!r} is not a sklearn-imgpair model file, or it is truncated: "
                         "its header does not fit in the file.")
    try:
        header = json.loads(file.read(size))
        metadata = header.get("__metadata__") or {}
    except (ValueError, AttributeError):
        raise ValueError(f"{path!r} is not a sklearn-imgpair model file: its header is "
                         "not valid safetensors JSON.") from None
    if metadata.get("format") != FORMAT_NAME:
        raise ValueError(f"{path!r} is not a sklearn-imgpair model file (a safetensors file "
                         "without the library's metadata, such as bare weights?). Bare "
                         "backbone weights go to the weights_path parameter.")
    return header, 8 + size


def _tensor_table(header, data_size, path):
    """``{name: (dtype, shape, start, stop)}`` of the tensors, offsets in the data.

    The tensors must tile the data exactly, as safetensors requires.
    """
    table = {}
    try:
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
            shape = tuple(entry["shape"])
            start, stop = entry["data_offsets"]
            values = (*shape, start, stop)
            if not all(isinstance(value, int) and value >= 0 for value in values):
                raise ValueError(values)
            if stop - start != math.prod(shape) * dtype.itemsize:
                raise ValueError(values)
            table[name] = (dtype, shape, start, stop)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{path!r} is truncated or corrupt: its tensors cannot be read "
                         f"(bad entry {name!r}: {exc!r}).") from None
    end = 0
    for name, (_, _, start, stop) in sorted(table.items(), key=lambda item: item[1][2:]):
        if start != end:
            raise ValueError(f"{path!r} is truncated or corrupt: its tensors cannot be read "
                             f"(tensor {name!r} does not follow the one before it).")
        end = stop
    if end != data_size:
        raise ValueError(f"{path!r} is truncated or corrupt: its tensors cannot be read "
                         f"(they take {end} bytes; the file holds {data_size}).")
    return table


def _read_array(file, offset, dtype, shape):
    """A writable array of ``shape`` read from ``offset`` of ``file``."""
    array = np.empty(shape, dtype=dtype)
    file.seek(offset)
    if array.nbytes and file.readinto(memoryview(array.reshape(-1)).cast("B")) != array.nbytes:
        raise ValueError("the file ended early")
    return array


def _map_array(file, offset, dtype, shape):
    """A read-only :class:`numpy.memmap` of ``shape`` at ``offset`` of ``file``.

    None where an array cannot be mapped (empty) or would be misaligned:
    it is read instead.
    """
    if not math.prod(shape) or offset % dtype.alignment:
        return None
    return np.memmap(file, dtype=dtype, mode="r", offset=offset, shape=shape)


def _hash_range(digest, file, offset, n_bytes):
    """Feed ``n_bytes`` of ``file`` from ``offset`` to ``digest`` through a small buffer."""
    buffer = memoryview(bytearray(min(n_bytes, _HASH_BLOCK_BYTES)))
    file.seek(offset)
    while n_bytes:
        read = file.readinto(buffer[:min(n_bytes, len(buffer))])
        if not read:
            raise ValueError("the file ended early")
        digest.update(buffer[:read])
        n_bytes -= read


def stored_estimator(path):
    """The class name of the estimator a model file holds; only its header is read.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If it is not a model file of this library.
    """
    path = _check_path(path)
    with open(path, "rb") as file:
        header, _ = _read_header(file, path)
    try:
        return json.loads(header["__metadata__"].get("content", ""))["estimator"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path!r} is corrupt: its content names no estimator.") from None


def read_container(path, estimator_name, *, max_version, mapped=()):
    """Read and verify a file written by :func:`write_container`.

    Parameters
    ----------
    path : str or path-like
        The model file.
    estimator_name : str
        The class name the file must hold.
    max_version : int
        The newest version of the schema that the caller reads.
    mapped : collection of str, default=()
        Names of arrays to memory-map read-only rather than read: each is a
        :class:`numpy.memmap` of its bytes in the file (an empty or
        misaligned one is read). Their bytes are hashed by reading the file
        in 16 MiB blocks, so they are not resident in the process when this
        returns; they are read from the file (or the page cache) as they are
        used. The mapping keeps the file it was opened on: a file replaced
        atomically (as :func:`write_container` replaces one) leaves it
        unchanged, but a file rewritten in place would change the arrays
        after they were verified.

    Returns
    -------
    content : dict
        The JSON document, ``"estimator"`` included.
    arrays : dict of str to ndarray
        The arrays of the file; those named in ``mapped`` read-only
        :class:`numpy.memmap`, the others writable arrays.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a model file of this library, is truncated or
        corrupt, was modified after saving (checksum), holds another
        estimator, or was written in a version above ``max_version``.
    """
    path = _check_path(path)
    with open(path, "rb") as file:
        header, data_start = _read_header(file, path)
        metadata = header["__metadata__"]
        try:
            version = int(metadata.get("format_version", ""))
        except ValueError:
            raise ValueError(f"{path!r} has no valid format version.") from None
        if version > max_version:
            raise ValueError(
                f"{path!r} was written in model file format {version} by a newer "
                f"sklearn-imgpair; this version reads formats up to {max_version}. "
                "Upgrade sklearn-imgpair.")
        table = _tensor_table(header, os.fstat(file.fileno()).st_size - data_start, path)
        text = metadata.get("content", "")
        digest = hashlib.sha256(text.encode())
        arrays = {}
        try:
            for name in sorted(table):
                dtype, shape, start, stop = table[name]
                digest.update(f"{name}|{_DTYPE_NAMES[dtype]}|{shape}".encode())
                array = (_map_array(file, data_start + start, dtype, shape)
                         if name in mapped else None)
                if array is None:
                    array = _read_array(file, data_start + start, dtype, shape)
                    digest.update(memoryview(array.reshape(-1).view(np.uint8)))
                else:
                    _hash_range(digest, file, data_start + start, stop - start)
                arrays[name] = array
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path!r} is truncated or corrupt: its tensors cannot be read "
                             f"({exc}).") from None
    if digest.hexdigest() != metadata.get("sha256"):
        raise ValueError(f"{path!r} is corrupt or was modified after it was saved: its "
                         "checksum does not match its content.")
    try:
        content = json.loads(text)
    except ValueError:
        content = None
    if not isinstance(content, dict):
        raise ValueError(f"{path!r} is corrupt: its content is not a JSON object.")
    if content.get("estimator") != estimator_name:
        raise ValueError(f"{path!r} holds a {content.get('estimator')!r}, not a "
                         f"{estimator_name}; load it with {content.get('estimator')}.load.")
    return content, arrays
