"""Data sets for image-pair matching: synthetic, downloaded, or your own CSV files and folders."""

from sklearn_imgpair.datasets._folder import load_image_folder, make_pairs
from sklearn_imgpair.datasets._pairs_csv import expand_paths, read_pairs_csv
from sklearn_imgpair.datasets._stanford_online_products import fetch_stanford_online_products
from sklearn_imgpair.datasets._synthetic import make_image_pairs

__all__ = [
    "expand_paths",
    "fetch_stanford_online_products",
    "load_image_folder",
    "make_image_pairs",
    "make_pairs",
    "read_pairs_csv",
]
