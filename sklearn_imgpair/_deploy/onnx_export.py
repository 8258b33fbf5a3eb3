"""ONNX export of a fitted network: the graph, its metadata and optional int8 quantisation.

The graph is captured with torch's ``torch.export``-based ONNX exporter
(``torch.onnx.export(..., dynamo=True)``, the default since torch 2.9). For
timm's Swin it gives a graph of about a sixth of the nodes of the legacy
TorchScript exporter's (the window partition and shifted-window ``roll``
become static ``Reshape``/``Slice``/``Concat``, attention masks constants),
with named dynamic batch sizes and no tracer warnings; both reproduce the
network to a cosine of 1 - 1e-6, but the TorchScript exporter is deprecated.
Every export is checked: onnxruntime runs the new graph on a few random
images and must give the network's own outputs.
"""

import copy
import os
import platform
import warnings
from numbers import Integral

import numpy as np
import sklearn
import timm
import torch
from sklearn.utils._param_validation import Interval, StrOptions, validate_parameter_constraints
from torch import nn

from sklearn_imgpair._deploy.onnx_format import (
    GRAPH_NAMES,
    MIN_OPSET,
    ONNX_FORMAT,
    ONNX_FORMAT_VERSION,
    encode_metadata,
)
from sklearn_imgpair._deploy.onnx_quantize import (
    DEFAULT_CALIBRATION_METHOD,
    quantize_dynamic_int8,
    quantize_static_int8,
    read_calibration_images,
)
from sklearn_imgpair._io.atomic import write_atomically
from sklearn_imgpair._io.container import encode_labels
from sklearn_imgpair._matching import match_column
from sklearn_imgpair._nn.siamese import SiameseNet, embedding_dim
from sklearn_imgpair._optional import import_optional
from sklearn_imgpair._version import __version__

__all__ = ["EXPORT_PARAMETER_CONSTRAINTS", "EmbeddingGraph", "PairGraph", "export_classifier",
           "export_embedder"]

EXPORT_PARAMETER_CONSTRAINTS = {
    "path": [str, os.PathLike],
    "opset": [Interval(Integral, MIN_OPSET, None, closed="left"), None],
    "quantize": [StrOptions({"int8"}), None],
    "calibration_images": ["array-like", None],
}
# Smallest cosine between the exported graph's embeddings and the network's on random
# images: float32 graphs agree to about 1 - 1e-6; anything below this is a wrong graph.
_MIN_AGREEMENT = 0.999


class EmbeddingGraph(nn.Module):
    """The embedder's graph: ``images`` (uint8) in, unit-length ``embeddings`` out."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, images):
        return self.net.embed(images)


class PairGraph(nn.Module):
    """The classifier's graph: two aligned batches of images in, match scores out.

    Returns ``logits`` (``scale * link(cosine) + bias``), ``probabilities`` (their
    sigmoid) and the two batches' ``embeddings1`` and ``embeddings2``.
    """

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, images1, images2):
        n_pairs = images1.shape[0]
        # One backbone call, as SiameseNet.forward. Slices, not chunk(2): chunk makes
        # torch.export fix the batch size.
        embeddings = self.net.embed(torch.cat([images1, images2]))
        embeddings1, embeddings2 = embeddings[:n_pairs], embeddings[n_pairs:]
        logits = self.net.similarity(embeddings1, embeddings2)
        return logits, torch.sigmoid(logits), embeddings1, embeddings2


def _random_images(n_images, image_size, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n_images, 3, image_size, image_size), dtype=torch.uint8,
                         generator=generator)


def _to_onnx(graph, input_names, output_names, image_size, opset):
    """Export ``graph`` with a dynamic batch size ``N``.

    Returns
    -------
    model : onnx.ModelProto
    opset : int
        The opset written: ``opset``, or the exporter's default.
    """
    if torch.__version__ < "2.6":
        raise ImportError(f"ONNX export needs torch >= 2.6 (its torch.export-based exporter); "
                          f"torch {torch.__version__} is installed.")
    import_optional("onnxscript", "ONNX export", extra="onnx")
    # A batch of 2: torch.export takes sizes 0 and 1 for constants.
    example = tuple(_random_images(2, image_size, seed) for seed in range(len(input_names)))
    batch = torch.export.Dim("N")
    with warnings.catch_warnings():
        # Said once per input when several share the dynamic batch size.
        warnings.filterwarnings("ignore", message=r"# The axis name")
        program = torch.onnx.export(
            graph, example, None, input_names=list(input_names),
            output_names=list(output_names), dynamic_shapes={name: {0: batch}
                                                             for name in input_names},
            opset_version=opset, dynamo=True, external_data=False, verbose=False)
    model = _without_stack_traces(program.model_proto)
    fixed = [node.name for node in model.graph.input
             if not node.type.tensor_type.shape.dim[0].dim_param]
    written = max(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
    if fixed or (opset is not None and written != opset):
        raise RuntimeError(
            f"torch {torch.__version__}'s ONNX exporter wrote a graph with "
            + (f"a fixed batch size for {fixed}" if fixed else f"opset {written}, not {opset}")
            + "; please report this with the versions of torch, onnx and onnxscript.")
    return model, written


# The exporter keeps each node's Python stack trace in the node's metadata: the source
# paths of the exporting machine, in every file. The other node metadata (module names
# and scopes) stays.
_STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"


def _without_stack_traces(model):
    """``model`` with the stack traces left out of its nodes' metadata (in place)."""
    graphs = [model.graph]
    nodes = [node for function in model.functions for node in function.node]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            nodes.append(node)
            for attribute in node.attribute:
                graphs.extend([attribute.g] if attribute.HasField("g") else [])
                graphs.extend(attribute.graphs)
    for node in nodes:
        kept = [entry for entry in node.metadata_props if entry.key != _STACK_TRACE_KEY]
        if len(kept) != len(node.metadata_props):
            del node.metadata_props[:]
            node.metadata_props.extend(kept)
    return model


def _check_agreement(model, graph, input_names, image_size):
    """Run the graph with onnxruntime on random images; it must give the network's outputs."""
    onnxruntime = import_optional("onnxruntime", "ONNX export", extra="onnx")
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    # 3 images: another batch size than the example's.
    inputs = [_random_images(3, image_size, seed=10 + index) for index in range(len(input_names))]
    with torch.no_grad():
        expected = graph(*inputs)
    expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
    found = session.run(None, dict(zip(input_names, (images.numpy() for images in inputs))))
    for name, want, got in zip(session.get_outputs(), expected, found):
        want = want.numpy()
        if want.ndim == 2:  # embeddings: unit vectors
            ok = got.shape == want.shape and (want * got).sum(axis=1).min() >= _MIN_AGREEMENT
        else:
            ok = got.shape == want.shape and np.allclose(got, want, rtol=1e-3, atol=1e-3)
        if not ok:
            raise RuntimeError(
                f"The exported ONNX graph does not reproduce the network: its output "
                f"{name.name!r} differs from torch's on random images. Please report this "
                "with the model name and the versions of torch, onnx and onnxscript.")


def _versions():
    versions = {"sklearn_imgpair": __version__, "torch": torch.__version__,
                "timm": timm.__version__, "scikit-learn": sklearn.__version__,
                "numpy": np.__version__, "python": platform.python_version()}
    for name in ("onnx", "onnxscript", "onnxruntime"):
        versions[name] = import_optional(name, "ONNX export", extra="onnx").__version__
    return versions


def _calibration(calibration_images, quantize, image_size):
    """The calibration images read for the graph, or None for no static quantisation."""
    if calibration_images is None:
        return None
    if quantize != "int8":
        raise ValueError(
            "calibration_images are for static int8 quantisation; pass quantize='int8' with "
            f"them (got quantize={quantize!r}).")
    return read_calibration_images(calibration_images, image_size)


def _export(net, path, *, estimator_name, fields, opset, quantize, model_name,
            calibration_images=None):
    """Export ``net`` (a SiameseNet) as ``estimator_name``'s graph, with metadata, to ``path``."""
    validate_parameter_constraints(EXPORT_PARAMETER_CONSTRAINTS,
                                   {"path": path, "opset": opset, "quantize": quantize,
                                    "calibration_images": calibration_images},
                                   caller_name="export_onnx")
    if not isinstance(net, SiameseNet):
        raise ValueError(f"export_onnx supports the SiameseNet module, not "
                         f"{type(net).__name__}.")
    image_size = fields["image_size"]
    # Read before the export, which takes a while: a bad image fails at once.
    calibration = _calibration(calibration_images, quantize, image_size)
    import_optional("onnx", "ONNX export", extra="onnx")
    net = copy.deepcopy(net).to("cpu", torch.float32).eval()
    graph = (PairGraph if estimator_name == "ImagePairClassifier" else EmbeddingGraph)(net).eval()
    input_names, output_names = GRAPH_NAMES[estimator_name]
    model, written_opset = _to_onnx(graph, input_names, output_names, image_size, opset)
    _check_agreement(model, graph, input_names, image_size)
    quantization = {"quantization": quantize or "none"}
    if calibration is not None:
        model = quantize_static_int8(model, calibration, estimator_name)
        quantization = {"quantization": "int8-static",
                        "calibration": {"method": DEFAULT_CALIBRATION_METHOD,
                                        "n_images": len(calibration)}}
    elif quantize == "int8":
        model = quantize_dynamic_int8(model)
    metadata = {
        "format": ONNX_FORMAT, "format_version": ONNX_FORMAT_VERSION,
        "estimator": estimator_name, "model_name": model_name,
        "image_size": image_size, "mean": net.mean.reshape(-1).tolist(),
        "std": net.std.reshape(-1).tolist(),
        "embedding_dim": embedding_dim(net), **quantization, "opset": written_opset,
        "versions": _versions(), **fields,
    }
    del model.metadata_props[:]
    for key, value in encode_metadata(metadata).items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name, model.producer_version = "sklearn-imgpair", __version__
    model.doc_string = (
        f"sklearn-imgpair {estimator_name} ({model_name}): inputs {list(input_names)} are "
        f"uint8 RGB images of shape (N, 3, {image_size}, {image_size}), resized without "
        f"cropping; outputs {list(output_names)}. See the metadata.")
    data = model.SerializeToString()

    def write(partial):
        with open(partial, "wb") as file:
            file.write(data)

    return write_atomically(os.fspath(path), write)


def export_classifier(clf, path, *, opset=None, quantize=None, calibration_images=None):
    """Write a fitted :class:`ImagePairClassifier`'s pair graph to ``path`` (see its method)."""
    net, classes = clf.module_, encode_labels(clf.classes_)
    # match_label as the labels' JSON holds it (1 for the label 1.0 among floats, ...).
    fields = {"image_size": int(clf.image_size_), "classes": classes,
              "match_label": classes["values"][match_column(clf.classes_, clf.match_label)],
              "threshold": float(clf.threshold),
              "head_scale": float(net.head.scale.detach().float().cpu()),
              "head_bias": float(net.head.bias.detach().float().cpu()),
              "head_link": net.head.link}
    return _export(net, path, estimator_name="ImagePairClassifier", fields=fields, opset=opset,
                   quantize=quantize, model_name=clf.model_name,
                   calibration_images=calibration_images)


def export_embedder(embedder, path, *, model_name, opset=None, quantize=None,
                    calibration_images=None):
    """Write a fitted :class:`ImageEmbedder`'s embedding graph to ``path`` (see its method).

    ``model_name`` is the timm name of its backbone (the classifier's, for an
    embedder copied from one).
    """
    return _export(embedder.module_, path, estimator_name="ImageEmbedder",
                   fields={"image_size": int(embedder.image_size_)}, opset=opset,
                   quantize=quantize, model_name=model_name,
                   calibration_images=calibration_images)
