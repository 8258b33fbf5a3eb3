"""Image-to-image matching the scikit-learn way: Siamese timm backbones on image-path pairs."""

from sklearn_imgpair._classifier import ImagePairClassifier
from sklearn_imgpair._duplicates import ImageMatchClustering, find_duplicates
from sklearn_imgpair._embedder import ImageEmbedder
from sklearn_imgpair._neighbors import ImageNeighbors
from sklearn_imgpair._images.decode import UnreadableImageWarning, load_image
from sklearn_imgpair._images.validation import check_pairs, check_paths
from sklearn_imgpair._nn.augment import ViewAugmentation
from sklearn_imgpair._nn.backbone import create_backbone
from sklearn_imgpair._nn.siamese import SiameseNet
from sklearn_imgpair._pair_features import PairFeatures, pair_groups
from sklearn_imgpair._scale.accelerate import AcceleratedImagePairClassifier
from sklearn_imgpair._scale.dask import embed_dask
from sklearn_imgpair._training.callbacks import (
    AucEarlyStopping,
    CosineSchedule,
    HeadCalibration,
    StopTraining,
    TimeBudget,
    TimeLimit,
)
from sklearn_imgpair._training.split import IdentityValidSplit
from sklearn_imgpair._version import __version__

__all__ = [
    "AcceleratedImagePairClassifier",
    "AucEarlyStopping",
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
    "check_pairs",
    "check_paths",
    "create_backbone",
    "embed_dask",
    "find_duplicates",
    "load_image",
    "pair_groups",
    "__version__",
]
