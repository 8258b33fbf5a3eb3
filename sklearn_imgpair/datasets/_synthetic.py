"""make_image_pairs: a small, seeded, offline image-matching data set drawn on the fly."""

import itertools
import math
import os
from numbers import Integral, Real

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageEnhance
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, validate_params

__all__ = ["make_image_pairs"]

_SHAPES = ("ellipse", "rectangle", "triangle", "cross")


def _random_colour(rng):
    return tuple(int(v) for v in rng.integers(30, 256, size=3))


def _design_product(rng):
    """Draw the description of one product: a few coloured shapes on a body."""
    parts = []
    for _ in range(rng.integers(2, 5)):
        parts.append({
            "shape": _SHAPES[rng.integers(len(_SHAPES))],
            "colour": _random_colour(rng),
            "centre": rng.uniform(0.3, 0.7, size=2),
            "size": rng.uniform(0.12, 0.3, size=2),
        })
    return {"body": _random_colour(rng), "body_size": rng.uniform(0.55, 0.8), "parts": parts}


def _draw_part(draw, part, canvas):
    cx, cy = part["centre"] * canvas
    w, h = part["size"] * canvas / 2
    box = [cx - w, cy - h, cx + w, cy + h]
    if part["shape"] == "ellipse":
        draw.ellipse(box, fill=part["colour"])
    elif part["shape"] == "rectangle":
        draw.rectangle(box, fill=part["colour"])
    elif part["shape"] == "triangle":
        draw.polygon([(cx, cy - h), (cx - w, cy + h), (cx + w, cy + h)], fill=part["colour"])
    else:
        draw.rectangle([cx - w, cy - h / 3, cx + w, cy + h / 3], fill=part["colour"])
        draw.rectangle([cx - w / 3, cy - h, cx + w / 3, cy + h], fill=part["colour"])


def _render_view(product, rng, image_size):
    """Render one view: pose, scale, position, lighting and background vary."""
    canvas = image_size * 2
    sprite = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    draw = ImageDraw.Draw(sprite)
    margin = canvas * (1 - product["body_size"]) / 2
    draw.rounded_rectangle([margin, margin, canvas - margin, canvas - margin],
                           radius=canvas // 10, fill=product["body"])
    for part in product["parts"]:
        _draw_part(draw, part, canvas)

    sprite = sprite.rotate(float(rng.uniform(-40, 40)), resample=Image.Resampling.BICUBIC)
    side = max(8, int(image_size * rng.uniform(0.65, 0.95)))
    sprite = sprite.resize((side, side), Image.Resampling.LANCZOS)
    grey = int(rng.integers(0, 90)) if rng.random() < 0.5 else int(rng.integers(170, 256))
    tint = np.clip(grey + rng.integers(-20, 21, size=3), 0, 255)
    background = Image.new("RGBA", (image_size, image_size), tuple(int(v) for v in tint) + (255,))
    offset = rng.integers(0, image_size - side + 1, size=2)
    background.alpha_composite(sprite, dest=(int(offset[0]), int(offset[1])))
    image = background.convert("RGB")
    image = ImageEnhance.Brightness(image).enhance(float(rng.uniform(0.75, 1.25)))
    return ImageEnhance.Contrast(image).enhance(float(rng.uniform(0.8, 1.2)))


def _sample_pairs(paths, product_ids, categories, n_pairs, rng):
    """Balanced positives (two views of one product) and negatives, no repeats.

    Negatives only pair products of one category.
    """
    by_product = {}
    for path, product in zip(paths, product_ids):
        by_product.setdefault(product, []).append(path)
    positives = [pair for views in by_product.values()
                 for pair in itertools.combinations(views, 2)]
    negatives = [(a, b) for (pa, a), (pb, b) in itertools.combinations(
        zip(product_ids, paths), 2) if pa != pb and categories[pa] == categories[pb]]
    n_positive = min(n_pairs // 2, len(positives))
    n_negative = min(n_pairs - n_positive, len(negatives))
    chosen_pos = rng.choice(len(positives), n_positive, replace=False)
    chosen_neg = rng.choice(len(negatives), n_negative, replace=False)
    rows = [(*positives[i], 1) for i in chosen_pos] + [(*negatives[i], 0) for i in chosen_neg]
    rows = [rows[i] for i in rng.permutation(len(rows))]
    rows = [(b, a, label) if rng.random() < 0.5 else (a, b, label) for a, b, label in rows]
    return pd.DataFrame(rows, columns=["Image1", "Image2", "Label"])


def _choose_test_products(categories, n_test_products, n_categories, rng):
    """Products held out for testing; with categories, two of a category at a time.

    Negatives pair products of one category only, so a category with a single
    test product would give the test table no negatives.
    """
    order = rng.permutation(len(categories))
    if n_categories is None:
        return set(order[:n_test_products].tolist())
    rank = rng.permutation(n_categories)[categories[order]]  # categories in random order
    order = order[np.argsort(rank, kind="stable")]
    rank = rank[np.argsort(rank, kind="stable")]
    position = np.arange(len(order)) - np.searchsorted(rank, rank)  # index within category
    order = order[np.lexsort((rank, position // 2))]
    return set(order[:n_test_products].tolist())


@validate_params(
    {
        "directory": [str, os.PathLike],
        "n_products": [Interval(Integral, 4, None, closed="left")],
        "n_views": [Interval(Integral, 2, None, closed="left")],
        "image_size": [Interval(Integral, 16, None, closed="left")],
        "n_pairs": [Interval(Integral, 2, None, closed="left")],
        "test_size": [Interval(Real, 0, 1, closed="neither")],
        "n_categories": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_image_pairs(directory, *, n_products=24, n_views=6, image_size=64, n_pairs=400,
                     test_size=0.25, n_categories=None, random_state=0):
    """Write a synthetic image-matching data set to disk and return its pairs.

    Each "product" is a body with a few coloured shapes. Each of its views is
    rendered with another rotation, scale, position, lighting and
    background, so that matching needs more than comparing pixels. Products
    are split between train and test: no product (and so no image) is in
    both. The pair tables follow the AutoMM image-to-image matching tutorial:
    columns ``Image1``, ``Image2`` (absolute PNG paths) and ``Label`` (1 for
    two views of one product, else 0), about half of each.

    Parameters
    ----------
    directory : str or path-like
        Folder the PNG files are written to (created if needed).
    n_products : int, default=24
        Number of distinct products.
    n_views : int, default=6
        Views rendered per product.
    image_size : int, default=64
        Side length of the square images.
    n_pairs : int, default=400
        Pairs in the train and test tables together, when that many exist.
    test_size : float, default=0.25
        Fraction of the products (and of the pairs) that go to the test table.
    n_categories : int, default=None
        Deal the products into this many categories (in turn) and pair only
        products of one category as negatives, as catalogues often do (hard
        negatives from the same shelf). The pairs then fall into independent
        groups of images, one per category, which
        :func:`~sklearn_imgpair.pair_groups` recovers. Test products are then
        held out two of a category at a time, so that the test table has
        negatives too. Every category needs two products at least
        (``n_products >= 2 * n_categories``). None pairs any two products.
    random_state : int, RandomState instance or None, default=0
        Seed; the same seed writes the same images and pairs.

    Returns
    -------
    train : pandas.DataFrame
        Training pairs.
    test : pandas.DataFrame
        Test pairs of products not seen in training.

    Raises
    ------
    ValueError
        If a parameter is out of range, or ``n_categories`` leaves a category
        with fewer than two products.

    Examples
    --------
    >>> from sklearn_imgpair.datasets import make_image_pairs
    >>> train, test = make_image_pairs(tmp_dir, n_products=8, n_views=3, n_pairs=40)
    >>> list(train.columns)
    ['Image1', 'Image2', 'Label']
    """
    if n_categories is not None and n_products < 2 * n_categories:
        raise ValueError(
            f"n_categories={n_categories} needs at least two products per category "
            f"(n_products >= {2 * n_categories}) for negatives within a category; got "
            f"n_products={n_products}."
        )
    seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
    rng = np.random.default_rng(seed)
    directory = os.path.abspath(os.fspath(directory))
    os.makedirs(directory, exist_ok=True)

    paths, product_ids = [], []
    for product in range(n_products):
        design = _design_product(rng)
        for view in range(n_views):
            path = os.path.join(directory, f"product{product:03d}_view{view:02d}.png")
            _render_view(design, rng, image_size).save(path)
            paths.append(path)
            product_ids.append(product)

    n_test_products = min(n_products - 2, max(2, math.ceil(test_size * n_products)))
    categories = (np.zeros(n_products, dtype=int) if n_categories is None
                  else np.arange(n_products) % n_categories)
    test_products = _choose_test_products(categories, n_test_products, n_categories, rng)
    is_test = np.array([product in test_products for product in product_ids])
    paths, product_ids = np.array(paths, dtype=object), np.array(product_ids)
    n_test_pairs = max(2, int(round(test_size * n_pairs)))
    train = _sample_pairs(paths[~is_test], product_ids[~is_test], categories,
                          n_pairs - n_test_pairs, rng)
    test = _sample_pairs(paths[is_test], product_ids[is_test], categories, n_test_pairs, rng)
    return train, test
