"""Image-to-image matching the scikit-learn way: Siamese timm backbones on image-path pairs."""

from sklearn_imgpair._accelerate import AcceleratedImagePairClassifier
from sklearn_imgpair._augment import ViewAugmentation
from sklearn_imgpair._backbone import create_backbone
from sklearn_imgpair._callbacks import AucEarlyStopping, CosineSchedule, TimeLimit
from sklearn_imgpair._classifier import ImagePairClassifier
from sklearn_imgpair._dask import embed_dask
from sklearn_imgpair._dataset import load_image
from sklearn_imgpair._embedder import ImageEmbedder
from sklearn_imgpair._module import SiameseNet
from sklearn_imgpair._pair_features import PairFeatures, pair_groups
from sklearn_imgpair._split import IdentityValidSplit
from sklearn_imgpair._unreadable import UnreadableImageWarning
from sklearn_imgpair._validation import check_pairs, check_paths

__version__ = "0.1.0"

__all__ = [
    "AcceleratedImagePairClassifier",
    "AucEarlyStopping",
    "CosineSchedule",
    "IdentityValidSplit",
    "ImageEmbedder",
    "ImagePairClassifier",
    "PairFeatures",
    "SiameseNet",
    "TimeLimit",
    "UnreadableImageWarning",
    "ViewAugmentation",
    "check_pairs",
    "check_paths",
    "create_backbone",
    "embed_dask",
    "load_image",
    "pair_groups",
    "__version__",
]
