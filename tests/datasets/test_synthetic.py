import numpy as np
import pytest
from PIL import Image

from sklearn_imgpair.datasets import make_image_pairs


def _product(path):
    return path.rsplit("product", 1)[1].split("_")[0]


def test_make_image_pairs_tables_follow_the_tutorial_format(tmp_path):
    train, test = make_image_pairs(tmp_path, n_products=8, n_views=3, image_size=24, n_pairs=60)
    for table in (train, test):
        assert list(table.columns) == ["Image1", "Image2", "Label"]
        assert set(table["Label"]) == {0, 1}
        assert abs(table["Label"].mean() - 0.5) <= 0.1
        for a, b, label in table.itertuples(index=False):
            assert (_product(a) == _product(b)) == bool(label)
            assert a != b
    assert len(train) + len(test) == 60
    with Image.open(train["Image1"][0]) as image:
        assert image.size == (24, 24) and image.mode == "RGB"


def test_make_image_pairs_keeps_products_apart(tmp_path):
    train, test = make_image_pairs(tmp_path, n_products=10, n_views=3, n_pairs=80)
    train_products = {_product(p) for p in np.ravel(train[["Image1", "Image2"]])}
    test_products = {_product(p) for p in np.ravel(test[["Image1", "Image2"]])}
    assert train_products and test_products
    assert not train_products & test_products


def test_make_image_pairs_is_seeded(tmp_path):
    first = make_image_pairs(tmp_path / "a", n_products=6, n_views=2, n_pairs=20, random_state=3)
    second = make_image_pairs(tmp_path / "b", n_products=6, n_views=2, n_pairs=20, random_state=3)
    names = [frame.map(lambda v: v if isinstance(v, int) else v.rsplit("/", 1)[1])
             for frame in (first[0], second[0])]
    assert names[0].equals(names[1])
    a = np.asarray(Image.open(first[0]["Image1"][0]))
    b = np.asarray(Image.open(second[0]["Image1"][0]))
    np.testing.assert_array_equal(a, b)


def test_views_of_one_product_differ(tmp_path):
    train, _ = make_image_pairs(tmp_path, n_products=6, n_views=3, n_pairs=20)
    positive = train[train["Label"] == 1].iloc[0]
    a = np.asarray(Image.open(positive["Image1"]), dtype=float)
    b = np.asarray(Image.open(positive["Image2"]), dtype=float)
    assert np.abs(a - b).mean() > 5


def test_make_image_pairs_validates_parameters(tmp_path):
    with pytest.raises(ValueError, match="n_products"):
        make_image_pairs(tmp_path, n_products=1)


def test_categories_split_pairs_into_independent_groups(tmp_path):
    from sklearn_imgpair import pair_groups

    train, _ = make_image_pairs(tmp_path, n_products=16, n_views=3, n_pairs=120,
                                n_categories=4, test_size=0.25)
    groups = pair_groups(train[["Image1", "Image2"]])
    assert len(np.unique(groups)) >= 3
    category = {p: int(_product(p)) % 4 for p in np.ravel(train[["Image1", "Image2"]])}
    for a, b in train[["Image1", "Image2"]].itertuples(index=False):
        assert category[a] == category[b]


@pytest.mark.parametrize("n_products, n_categories", [(12, 4), (16, 4), (10, 3), (9, 2)])
def test_categories_leave_negatives_in_the_test_table(tmp_path, n_products, n_categories):
    # Negatives pair products of one category: a category needs two test products.
    _, test = make_image_pairs(tmp_path, n_products=n_products, n_views=2, image_size=16,
                               n_pairs=60, n_categories=n_categories)
    assert set(test["Label"]) == {0, 1}


@pytest.mark.parametrize("n_products, n_categories", [(7, 4), (5, 3), (4, 4)])
def test_categories_of_fewer_than_two_products_are_refused(tmp_path, n_products, n_categories):
    match = (f"n_categories={n_categories} needs at least two products per category "
             rf"\(n_products >= {2 * n_categories}\).*got n_products={n_products}")
    with pytest.raises(ValueError, match=match):
        make_image_pairs(tmp_path, n_products=n_products, n_views=2, n_pairs=20,
                         n_categories=n_categories)
    assert not list(tmp_path.iterdir())  # refused before drawing any image
