"""The ONNX file's contract: its graph's inputs and outputs and the metadata that describe them.

:mod:`~sklearn_imgpair._deploy.onnx_export` writes files to this contract
(with torch) and :mod:`~sklearn_imgpair._deploy.onnx_runtime` reads them
(without): this module imports neither torch nor the ``onnx`` package.

The metadata are the ONNX model's ``metadata_props``, string keys and string
values: the text fields as they are, the others (numbers, labels, lists,
mappings) as JSON; the class labels in the model files' form
(:func:`~sklearn_imgpair._io.container.encode_labels`).

Versions of the metadata (``ONNX_FORMAT_VERSION``, apart from the model
files' versions):

1. The first.
2. ``head_link``, the link of the classifier's head; files of version 1 are
   read as a linear head.

Fields that a reader may ignore without harm come without a new version, so
that earlier readers keep reading the files. ``quantization`` is ``"none"``,
``"int8"`` (dynamic) or ``"int8-static"`` (static; added to version 2), and
only the files of static int8 have ``calibration`` (its ``method`` and
``n_images``): onnxruntime runs the graph whatever they say, so readers take
any ``quantization`` as it is, and a file without ``calibration`` as None.
"""

import json
from numbers import Real

from sklearn_imgpair._io.container import decode_labels
from sklearn_imgpair._matching import match_column

__all__ = ["GRAPH_NAMES", "MIN_OPSET", "ONNX_FORMAT", "ONNX_FORMAT_VERSION", "check_graph",
           "encode_metadata", "read_metadata"]

ONNX_FORMAT = "sklearn-imgpair-onnx"
ONNX_FORMAT_VERSION = 2
#: The lowest opset the exporter writes (torch's exporter implements opset 18 and later).
MIN_OPSET = 18

#: The inputs and outputs of the graph of each estimator's file.
GRAPH_NAMES = {
    "ImageEmbedder": (("images",), ("embeddings",)),
    "ImagePairClassifier": (("images1", "images2"),
                            ("logits", "probabilities", "embeddings1", "embeddings2")),
}

# Every file's fields and their types; text fields are stored as they are, the others as JSON.
_COMMON_FIELDS = {
    "format": str, "format_version": int, "estimator": str, "model_name": str,
    "image_size": int, "mean": list, "std": list, "embedding_dim": int,
    "quantization": str, "opset": int, "versions": dict,
}
_CLASSIFIER_FIELDS = {
    "classes": dict, "match_label": (bool, int, float, str), "threshold": Real,
    "head_scale": Real, "head_bias": Real,
}
# Fields that some files lack, with the value they meant: of every file, then of classifiers'.
_OPTIONAL_COMMON_FIELDS = {"calibration": (dict, None)}
_OPTIONAL_CLASSIFIER_FIELDS = {"head_link": (str, "linear")}
_TEXT_FIELDS = {key for key, kind in {**_COMMON_FIELDS, **_CLASSIFIER_FIELDS}.items()
                if kind is str} | {"head_link"}


def encode_metadata(fields):
    """Turn metadata values into the strings that ``metadata_props`` holds.

    Parameters
    ----------
    fields : dict of str
        The text fields (``format``, ``estimator``, ``model_name``,
        ``quantization``, ``head_link``) stay as they are; every other
        value, a string ``match_label`` included, becomes JSON.

    Returns
    -------
    props : dict of str to str
    """
    return {key: value if key in _TEXT_FIELDS else json.dumps(value)
            for key, value in fields.items()}


def _decode_labels(encoded, path):
    """The ``classes_`` array of the metadata, in the model file's form (two labels)."""
    try:
        labels = decode_labels(encoded)
    except ValueError:
        raise ValueError(f"{path!r} has corrupt sklearn-imgpair metadata: bad class labels "
                         f"{encoded!r}.") from None
    if labels.shape != (2,):
        raise ValueError(f"{path!r} has corrupt sklearn-imgpair metadata: {len(labels)} class "
                         "labels instead of 2.")
    return labels


def _field(props, key, kind, path):
    if key not in props:
        raise ValueError(f"{path!r} has incomplete sklearn-imgpair metadata: no {key!r}.")
    text = props[key]
    try:
        value = text if kind is str else json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{path!r} has corrupt sklearn-imgpair metadata: {key}={text!r}.")
    return value


def _optional_fields(props, fields, path):
    return {key: _field(props, key, kind, path) if key in props else absent
            for key, (kind, absent) in fields.items()}


def read_metadata(props, path):
    """Read and check the metadata of an ONNX file written by the exporter.

    Parameters
    ----------
    props : dict of str to str
        The model's ``metadata_props`` (onnxruntime's ``custom_metadata_map``).
    path : str
        The file, for messages.

    Returns
    -------
    metadata : dict
        Every field decoded (``calibration`` None in a file without it);
        for a classifier's file, ``classes`` is the ``classes_`` array and
        ``match_column`` the position of ``match_label`` in it.

    Raises
    ------
    ValueError
        If the file has no metadata of this library (an ONNX file exported
        by other means), was written in a newer format version, or its
        metadata are incomplete or inconsistent.
    """
    if props.get("format") != ONNX_FORMAT:
        raise ValueError(
            f"{path!r} is an ONNX model without sklearn-imgpair metadata (exported by other "
            "means?). Export a fitted estimator with its export_onnx method or with "
            "'sklearn-imgpair export'.")
    version = _field(props, "format_version", int, path)
    if version > ONNX_FORMAT_VERSION:
        raise ValueError(
            f"{path!r} was written in sklearn-imgpair ONNX format {version} by a newer "
            f"sklearn-imgpair; this version reads formats up to {ONNX_FORMAT_VERSION}. "
            "Upgrade sklearn-imgpair.")
    metadata = {key: _field(props, key, kind, path) for key, kind in _COMMON_FIELDS.items()}
    metadata.update(_optional_fields(props, _OPTIONAL_COMMON_FIELDS, path))
    estimator = metadata["estimator"]
    if estimator not in GRAPH_NAMES:
        raise ValueError(f"{path!r} has corrupt sklearn-imgpair metadata: unknown estimator "
                         f"{estimator!r}; expected one of {sorted(GRAPH_NAMES)}.")
    if estimator == "ImagePairClassifier":
        metadata.update({key: _field(props, key, kind, path)
                         for key, kind in _CLASSIFIER_FIELDS.items()})
        metadata.update(_optional_fields(props, _OPTIONAL_CLASSIFIER_FIELDS, path))
        if metadata["head_link"] not in ("atanh", "linear"):
            raise ValueError(f"{path!r} has corrupt sklearn-imgpair metadata: unknown "
                             f"head_link {metadata['head_link']!r}.")
        metadata["classes"] = _decode_labels(metadata["classes"], path)
        column = match_column(metadata["classes"], metadata["match_label"])
        if column is None:
            raise ValueError(f"{path!r} has corrupt sklearn-imgpair metadata: match_label "
                             f"{metadata['match_label']!r} is not one of the classes "
                             f"{metadata['classes'].tolist()}.")
        metadata["match_column"] = column
    return metadata


def check_graph(inputs, outputs, metadata, path):
    """Check that a graph's inputs and outputs are those its metadata promise.

    Parameters
    ----------
    inputs, outputs : list of onnxruntime.NodeArg
        The session's ``get_inputs()`` and ``get_outputs()``: each has a
        ``name``, a ``type`` such as ``"tensor(uint8)"`` and a ``shape``
        whose entries are ints (fixed) or names (dynamic).
    metadata : dict
        As returned by :func:`read_metadata`.
    path : str
        The file, for messages.

    Raises
    ------
    ValueError
        If the inputs or outputs have other names, or an input is not a
        ``uint8`` batch of ``3 x image_size x image_size`` images.
    """
    input_names, output_names = GRAPH_NAMES[metadata["estimator"]]
    found = [node.name for node in inputs]
    missing = set(output_names) - {node.name for node in outputs}
    if found != list(input_names) or missing:
        raise ValueError(
            f"{path!r} does not match its sklearn-imgpair metadata: an "
            f"{metadata['estimator']} graph has inputs {list(input_names)} and outputs "
            f"{list(output_names)}; this one has inputs {found} and outputs "
            f"{[node.name for node in outputs]}.")
    size = metadata["image_size"]
    for node in inputs:
        shape = list(node.shape)
        # Dimensions given as names (or None) are dynamic and take any size.
        if node.type != "tensor(uint8)" or len(shape) != 4 or any(
                isinstance(dim, int) and dim != want
                for dim, want in zip(shape[1:], (3, size, size))):
            raise ValueError(
                f"{path!r} does not match its sklearn-imgpair metadata: input {node.name!r} "
                f"takes {node.type} of shape {shape}, but the metadata say uint8 images of "
                f"shape [N, 3, {size}, {size}] (image_size={size}).")
