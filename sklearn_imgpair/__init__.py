"""Image-to-image matching the scikit-learn way: Siamese timm backbones on image-path pairs."""

import importlib

from sklearn_imgpair._version import __version__

# Each public name and the module that defines it, imported on first use (PEP 562):
# ``import sklearn_imgpair.onnx`` (the torch-free runtime) must not import torch.
_LAZY_NAMES = {
    "AcceleratedImagePairClassifier": "sklearn_imgpair._scale.accelerate",
    "AucEarlyStopping": "sklearn_imgpair._training.selection",
    "ColourHistogram": "sklearn_imgpair._nn.colour",
    "CosineSchedule": "sklearn_imgpair._training.schedule",
    "HeadCalibration": "sklearn_imgpair._training.calibration",
    "IdentityValidSplit": "sklearn_imgpair._training.split",
    "ImageEmbedder": "sklearn_imgpair._embedder",
    "ImageMatchClustering": "sklearn_imgpair._duplicates",
    "ImageNeighbors": "sklearn_imgpair._neighbors",
    "ImagePairClassifier": "sklearn_imgpair._classifier",
    "PairFeatures": "sklearn_imgpair._pair_features",
    "SiameseNet": "sklearn_imgpair._nn.siamese",
    "StopTraining": "sklearn_imgpair._training.budget",
    "TimeBudget": "sklearn_imgpair._training.budget",
    "TimeLimit": "sklearn_imgpair._training.budget",
    "UnreadableImageWarning": "sklearn_imgpair._images.unreadable",
    "ViewAugmentation": "sklearn_imgpair._nn.augment",
    "WeightAveraging": "sklearn_imgpair._training.averaging",
    "check_pairs": "sklearn_imgpair._images.validation",
    "check_paths": "sklearn_imgpair._images.validation",
    "create_backbone": "sklearn_imgpair._nn.backbone",
    "embed_dask": "sklearn_imgpair._scale.dask",
    "find_duplicates": "sklearn_imgpair._duplicates",
    "load_image": "sklearn_imgpair._images.decode",
    "pair_groups": "sklearn_imgpair._pair_features",
}
# Public subpackages and modules, imported on first use too.
_SUBMODULES = ("datasets", "metrics", "onnx")

__all__ = [
    "AcceleratedImagePairClassifier",
    "AucEarlyStopping",
    "ColourHistogram",
    "CosineSchedule",
    "HeadCalibration",
    "IdentityValidSplit",
    "ImageEmbedder",
    "ImageMatchClustering",
    "ImageNeighbors",
    "ImagePairClassifier",
    "PairFeatures",
    "SiameseNet",
    "StopTraining",
    "TimeBudget",
    "TimeLimit",
    "UnreadableImageWarning",
    "ViewAugmentation",
    "WeightAveraging",
    "check_pairs",
    "check_paths",
    "create_backbone",
    "embed_dask",
    "find_duplicates",
    "load_image",
    "pair_groups",
    "__version__",
]


def __getattr__(name):
    """Import a public name (or subpackage) on first use."""
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name not in _LAZY_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    globals()[name] = value  # later lookups find it without __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
