"""Data sets for image-pair matching."""

from sklearn_imgpair.datasets._synthetic import make_image_pairs

__all__ = ["make_image_pairs"]
