"""int8 quantisation of an exported graph: dynamic, or static calibrated on the user's images.

Both quantise the MatMuls that have constant weights (the Swin's linear
layers) with onnxruntime's quantiser, their weights per output channel; the
attention's MatMuls of two activations, the convolution of the patch
embedding, the layer norms, softmax and GELU stay float32.

* Dynamic (``quantization="int8"`` in the metadata): activations are
  quantised at run time, from each batch's own range; every linear layer is
  quantised, to 7-bit weights (see below).
* Static (``"int8-static"``): activations are quantised with fixed ranges
  measured beforehand on calibration images (their minimum and maximum), in
  the QDQ format (``QuantizeLinear``/``DequantizeLinear`` pairs that
  onnxruntime fuses into int8 kernels). The images are read as the runtime
  reads them (:func:`~sklearn_imgpair._deploy.onnx_runtime.read_graph_pixels`).

The static settings are those that kept a trained model's probabilities
within 0.01 of float32's (``benchmarks/bench_onnx.py --model``; the user
guide has the figures): on x86 CPUs without VNNI instructions (AVX2),
onnxruntime's uint8 x int8 kernels add pairs of products in 16 bits, which
saturate with 8-bit weights, so the weights get 7 bits (``reduce_range``);
the MatMuls' outputs stay float32; and the layers most sensitive to the
activations' rounding, the patch merging's linear reduction and the
attention's ``qkv`` projection, stay float32 (:data:`FLOAT32_MODULES`).

Nothing here imports torch.
"""

import contextlib
import logging
import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from sklearn_imgpair._deploy.onnx_runtime import graph_feed, read_graph_pixels
from sklearn_imgpair._images.cells import distinct_images, distinct_paths, image_names
from sklearn_imgpair._images.unreadable import read_or_report
from sklearn_imgpair._images.validation import check_paths
from sklearn_imgpair._optional import import_optional

__all__ = ["CALIBRATION_METHODS", "DEFAULT_CALIBRATION_METHOD", "FLOAT32_MODULES",
           "module_name", "quantize_dynamic_int8", "quantize_static_int8",
           "read_calibration_images", "weight_matmuls"]

#: onnxruntime's calibration methods by the names the metadata record: each
#: activation's range is its minimum and maximum over the images, or those of
#: the histogram of its values with the outer 0.001 % left out, or the range
#: that keeps the int8 values' distribution closest to float32's (KL divergence).
CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
#: The method of ``export_onnx``: the most accurate of the three on a trained model.
DEFAULT_CALIBRATION_METHOD = "minmax"
#: The modules whose MatMuls static int8 keeps in float32 (a pattern of their names).
FLOAT32_MODULES = r"(downsample\.reduction|attn\.qkv)$"
# Images per calibration run of the graph: the histogram methods keep every
# activation of a run in memory.
_CALIBRATION_BATCH_SIZE = 16
_PARAMETER = "calibration_images"
# Where torch's exporter records the modules that a node is in (kept in the files).
_NAME_SCOPES = "pkg.torch.onnx.name_scopes"


@contextlib.contextmanager
def _quiet_quantizer():
    """Drop onnxruntime's advice, logged on the root logger, to pre-process the model.

    Its pre-processing (symbolic shape inference) fails on timm's Swin graphs.
    """
    def advice(record):
        return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)


def _quantized(model, quantize):
    """Run ``quantize(source, target)`` on ``model`` saved to a file; load its output."""
    onnx = import_optional("onnx", "int8 quantisation", extra="onnx")
    with tempfile.TemporaryDirectory() as folder:
        source, target = os.path.join(folder, "fp32.onnx"), os.path.join(folder, "int8.onnx")
        onnx.save_model(model, source)
        with _quiet_quantizer():
            quantize(source, target)
        return onnx.load_model(target)


def module_name(node):
    """The name of the torch module that an exported node computes, or ``""``.

    For example ``"net.backbone.layers.2.blocks.1.mlp.fc2"``: the innermost
    module scope that torch's exporter recorded in the node's metadata.
    """
    scopes = next((entry.value for entry in node.metadata_props if entry.key == _NAME_SCOPES),
                  "[]")
    names = [name for name in re.findall(r"'([^']*)'", scopes) if name.startswith("net.")]
    return names[-1] if names else ""


def weight_matmuls(model):
    """The MatMul nodes of ``model`` whose second input is a weight (a constant), by module.

    Parameters
    ----------
    model : onnx.ModelProto

    Returns
    -------
    modules : dict of str to str
        In graph order, the name of each node (the linear layers, not the
        attention's products of two activations) and that of the torch module
        it computes (:func:`module_name`).
    """
    graph = model.graph
    constants = {tensor.name for tensor in graph.initializer} | {
        output for node in graph.node if node.op_type == "Constant" for output in node.output}
    return {node.name: module_name(node) for node in graph.node
            if node.op_type == "MatMul" and node.input[1] in constants}


def _float32_nodes(model, float32_modules):
    """The MatMuls of ``model`` to keep float32: of two activations, or in ``float32_modules``.

    Given to onnxruntime as the nodes to exclude (its list of nodes to
    quantise means all of them when it is empty).
    """
    quantized = {name for name, module in weight_matmuls(model).items()
                 if float32_modules is None or not re.search(float32_modules, module)}
    return [node.name for node in model.graph.node
            if node.op_type == "MatMul" and node.name not in quantized]


def quantize_dynamic_int8(model, *, reduce_range=True, float32_modules=None):
    """int8 dynamic quantisation of the MatMul weights, per output channel, in 7 bits.

    Activations are quantised at run time. The weights get 7 bits for the
    same reason as static int8's: with 8, a trained model's probabilities
    moved by up to 0.078 on an AVX2 CPU, with 7 by up to 0.020, at the same
    speed (the user guide's table). Per channel, random-weight Swins
    keep a cosine of about 0.9998 to float32 instead of about 0.997 per
    tensor, at the same speed. The one convolution (the patch embedding)
    stays float32: quantising it gains nothing measurable, and onnxruntime
    1.19 (the oldest the ``onnx`` extra allows) cannot run an int8-weight
    ``ConvInteger``.

    Parameters
    ----------
    model : onnx.ModelProto
        The float32 graph.
    reduce_range : bool, default=True
        7-bit weights; False gives 8 bits (what ``export_onnx`` wrote before).
    float32_modules : str, default=None
        A pattern of the names of modules whose MatMuls stay float32
        (:func:`weight_matmuls`); None quantises all (``export_onnx``).

    Returns
    -------
    model : onnx.ModelProto
    """
    quantization = import_optional("onnxruntime.quantization", "int8 quantisation", extra="onnx")
    return _quantized(model, lambda source, target: quantization.quantize_dynamic(
        source, target, per_channel=True, op_types_to_quantize=["MatMul"],
        reduce_range=reduce_range, weight_type=quantization.QuantType.QInt8,
        nodes_to_exclude=_float32_nodes(model, float32_modules)))


def _named_calibration_images(message):
    """A message of :func:`check_paths` about its ``X``, in terms of ``calibration_images``."""
    return re.sub(r"^X\b|\bX(?=\[)", _PARAMETER, message)


def read_calibration_images(calibration_images, image_size):
    """Read the calibration images as the graphs take them.

    Parameters
    ----------
    calibration_images : array-like of shape (n_images,)
        Paths or in-memory images, as
        :meth:`~sklearn_imgpair.ImageEmbedder.transform` takes them; every
        distinct image is read once (a cell of several images gives each).
    image_size : int
        The graph's image size.

    Returns
    -------
    images : ndarray of shape (n_distinct, 3, image_size, image_size), dtype=uint8

    Raises
    ------
    ValueError
        If ``calibration_images`` is empty or not one column, or an image
        cannot be decoded; the message names the image
        (``calibration_images[i]``) and, for a file, its path.
    FileNotFoundError
        If an image file does not exist.
    TypeError
        If ``calibration_images`` is a single image, or a cell of no
        accepted kind.
    """
    try:
        cells = check_paths(calibration_images)
    except (TypeError, ValueError) as exc:
        raise type(exc)(_named_calibration_images(str(exc))) from None
    unique, first, _ = distinct_paths(cells)
    images, _, offsets, image_first = distinct_images(unique)
    names = image_names(unique, offsets, image_first,
                        [f"{_PARAMETER}[{position}]" for position in first])

    def read(image, name):  # always "raise": a calibration set is chosen, and small
        return read_or_report(lambda one: read_graph_pixels(one, image_size), image, name,
                              "raise")[0]

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return np.stack(list(pool.map(read, images, names)))  # PIL releases the GIL


class _CalibrationBatches:
    """The calibration images, a batch of inputs at a time, as onnxruntime's calibrators read.

    onnxruntime's ``CalibrationDataReader`` protocol: ``get_next()`` gives the
    inputs of the next run of the graph, None after the last; ``set_range``
    restarts on some of the batches (``len`` of them), which bounds the
    activations the histogram methods hold at once.
    """

    def __init__(self, images, estimator, batch_size=_CALIBRATION_BATCH_SIZE):
        self._feeds = [graph_feed(images[start:start + batch_size], estimator)
                       for start in range(0, len(images), batch_size)]
        self.set_range(0, len(self._feeds))

    def __len__(self):
        return len(self._feeds)

    def set_range(self, start_index, end_index):
        self._pending = iter(self._feeds[start_index:end_index])

    def get_next(self):
        return next(self._pending, None)


def quantize_static_int8(model, images, estimator, *, method=DEFAULT_CALIBRATION_METHOD,
                         float32_modules=FLOAT32_MODULES, reduce_range=True,
                         quantize_outputs=False):
    """int8 static quantisation (QDQ) of the MatMuls with constant weights, calibrated on images.

    Weights are quantised per output channel (symmetric), activations per
    tensor (asymmetric uint8) with the ranges that ``method`` finds on the
    graph's float32 run on ``images``. The defaults are ``export_onnx``'s;
    the others are there to measure them (``benchmarks/bench_onnx.py``).

    Parameters
    ----------
    model : onnx.ModelProto
        The float32 graph of ``estimator``.
    images : ndarray of shape (n_images, 3, S, S), dtype=uint8
        The calibration images (:func:`read_calibration_images`).
    estimator : {"ImageEmbedder", "ImagePairClassifier"}
        Whose graph ``model`` is: how the images are fed to it.
    method : {"minmax", "percentile", "entropy"}, default="minmax"
        The calibration method (:data:`CALIBRATION_METHODS`).
    float32_modules : str or None, default=FLOAT32_MODULES
        A pattern of the names of modules whose MatMuls stay float32
        (:func:`weight_matmuls`); None quantises all.
    reduce_range : bool, default=True
        7-bit weights, which onnxruntime's kernels for CPUs without VNNI
        add without saturating; False: 8-bit.
    quantize_outputs : bool, default=False
        Whether the MatMuls' outputs are quantised too (onnxruntime then runs
        ``QLinearMatMul``), or stay float32.

    Returns
    -------
    model : onnx.ModelProto
    """
    quantization = import_optional("onnxruntime.quantization", "int8 quantisation", extra="onnx")
    calibrate_method = getattr(quantization.CalibrationMethod, CALIBRATION_METHODS[method])
    # One batch per collection: the histogram methods then merge each batch's
    # histograms instead of holding every activation of every image.
    extra_options = {"CalibStridedMinMax": 1}
    if not quantize_outputs:
        extra_options["OpTypesToExcludeOutputQuantization"] = ["MatMul"]
    # The MatMuls are named: the QDQ quantiser ignores the MatMulConstBOnly option.
    return _quantized(model, lambda source, target: quantization.quantize_static(
        source, target, _CalibrationBatches(images, estimator),
        quant_format=quantization.QuantFormat.QDQ, op_types_to_quantize=["MatMul"],
        nodes_to_exclude=_float32_nodes(model, float32_modules), per_channel=True,
        reduce_range=reduce_range, activation_type=quantization.QuantType.QUInt8,
        weight_type=quantization.QuantType.QInt8, calibrate_method=calibrate_method,
        extra_options=extra_options))
