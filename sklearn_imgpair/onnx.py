"""Run exported models without PyTorch: :class:`OnnxImageMatcher` (the ``onnx`` extra).

Importing this module imports neither torch nor timm, so that a service can
match images with onnxruntime, numpy, PIL and scikit-learn alone. Models are
exported with :meth:`ImagePairClassifier.export_onnx`,
:meth:`ImageEmbedder.export_onnx` or ``sklearn-imgpair export``.
"""

from sklearn_imgpair._deploy.onnx_runtime import OnnxImageMatcher

__all__ = ["OnnxImageMatcher"]
