"""Tests of load_image_folder and make_pairs: image folders into pair tables."""

import itertools
import os
from math import comb

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sklearn_imgpair.datasets import load_image_folder, make_pairs

from conftest import TINY_IMAGE_SIZE, make_tiny_classifier


def write_png(path, colour=(0, 0, 0), size=8):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)


@pytest.fixture
def image_tree(tmp_path):
    """A folder of class sub-folders, with the things that must be left out."""
    root = tmp_path / "photos"
    for name in ["dog/b.png", "dog/a.JPG", "dog/2024/c.png", "cat/x.webp", "cat/deep/er/y.png",
                 "stray.png", ".hidden/h.png", "cat/.thumbs/t.png", "cat/.z.png"]:
        write_png(str(root / name))
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "empty").mkdir()
    return root


def test_load_image_folder_lists_images_by_class(image_tree):
    images = load_image_folder(image_tree)
    root = str(image_tree)
    assert list(images.columns) == ["path", "label"]
    assert images["label"].tolist() == ["cat", "cat", "dog", "dog", "dog"]
    assert images["path"].tolist() == [
        os.path.join(root, "cat", "deep", "er", "y.png"),
        os.path.join(root, "cat", "x.webp"),
        os.path.join(root, "dog", "2024", "c.png"),
        os.path.join(root, "dog", "a.JPG"),
        os.path.join(root, "dog", "b.png"),
    ]
    assert isinstance(images.index, pd.RangeIndex)


def test_load_image_folder_keeps_relative_roots_relative(image_tree, monkeypatch):
    monkeypatch.chdir(image_tree.parent)
    paths = load_image_folder("photos")["path"].tolist()
    assert paths[0] == os.path.join("photos", "cat", "deep", "er", "y.png")


@pytest.mark.parametrize("extensions, expected", [
    ("png", ["y.png", "c.png", "b.png"]),
    ([".JPG", "webp"], ["x.webp", "a.JPG"]),
    (("txt",), ["notes.txt"]),
])
def test_load_image_folder_extensions(image_tree, extensions, expected):
    images = load_image_folder(str(image_tree), extensions=extensions)
    assert [os.path.basename(path) for path in images["path"]] == expected


def test_load_image_folder_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="Image folder not found: .*nowhere"):
        load_image_folder(tmp_path / "nowhere")


def test_load_image_folder_root_is_a_file(tmp_path):
    write_png(str(tmp_path / "a.png"))
    with pytest.raises(ValueError, match="a.png' is a file"):
        load_image_folder(tmp_path / "a.png")


def test_load_image_folder_without_class_folders(tmp_path):
    write_png(str(tmp_path / "a.png"))
    with pytest.raises(ValueError, match=f"Image folder '{tmp_path}' has no class sub-folder"
                                         r".*\(extensions \.bmp, \.gif"):
        load_image_folder(tmp_path)


def test_load_image_folder_without_images(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "a.txt").write_text("")
    with pytest.raises(ValueError, match=rf"The class folders of '{tmp_path}' \(2: cat, dog\) "
                                         r"hold no image \(extensions \.png\)"):
        load_image_folder(tmp_path, extensions="png")


@pytest.mark.parametrize("extensions, error, match", [
    ([], ValueError, "extensions is empty"),
    ([""], ValueError, "file name endings such as '.png'; got ''"),
    (["."], ValueError, "file name endings such as '.png'; got '.'"),
    ([3], TypeError, "file name endings such as '.png'; got int 3"),
])
def test_load_image_folder_rejects_bad_extensions(image_tree, extensions, error, match):
    with pytest.raises(error, match=match):
        load_image_folder(image_tree, extensions=extensions)


def test_load_image_folder_follow_links(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    write_png(str(elsewhere / "e.png"))
    root = tmp_path / "root"
    write_png(str(root / "cat" / "a.png"))
    os.symlink(elsewhere, root / "emu")                    # a linked class folder
    os.symlink(elsewhere, root / "cat" / "more")           # a linked folder in a class
    os.symlink(root / "cat", root / "cat" / "loop")        # a link back up the tree
    os.symlink(elsewhere / "e.png", root / "cat" / "linked.png")  # a linked file
    plain = load_image_folder(root)
    assert [os.path.relpath(path, root) for path in plain["path"]] == [
        os.path.join("cat", "a.png"), os.path.join("cat", "linked.png")]
    followed = load_image_folder(root, follow_links=True)
    assert [os.path.relpath(path, root) for path in followed["path"]] == [
        os.path.join("cat", "a.png"), os.path.join("cat", "linked.png"),
        os.path.join("cat", "more", "e.png"), os.path.join("emu", "e.png")]


def test_load_image_folder_validates_parameters(image_tree):
    with pytest.raises(ValueError, match="'follow_links' parameter of load_image_folder"):
        load_image_folder(image_tree, follow_links="yes")


# ----------------------------------------------------------------------
# make_pairs
# ----------------------------------------------------------------------

LABELS = ["a"] * 4 + ["b"] * 3 + ["c"] * 2 + ["d"]
PATHS = [f"img{i}.png" for i in range(len(LABELS))]
N_POSITIVE = comb(4, 2) + comb(3, 2) + comb(2, 2)   # 10
N_NEGATIVE = comb(len(LABELS), 2) - N_POSITIVE       # 35


def check_pair_table(pairs, paths, labels):
    """Columns, labels that say whether the labels agree, no self-pair, no repeat."""
    assert list(pairs.columns) == ["Image1", "Image2", "Label"]
    label_of = dict(zip(paths, labels))
    for first, second, match in pairs.itertuples(index=False):
        assert first != second
        assert match == int(label_of[first] == label_of[second])
    unordered = {frozenset(pair) for pair in zip(pairs["Image1"], pairs["Image2"])}
    assert len(unordered) == len(pairs)


@pytest.mark.parametrize("n_pairs, positive_fraction", [(10, 0.5), (20, 0.3), (7, 0.5),
                                                        (10, 1.0), (35, 0.0), (1, 0.5)])
def test_make_pairs_draws_the_asked_mix(n_pairs, positive_fraction):
    pairs = make_pairs(PATHS, LABELS, n_pairs=n_pairs, positive_fraction=positive_fraction,
                       random_state=0)
    assert len(pairs) == n_pairs
    assert pairs["Label"].sum() == round(n_pairs * positive_fraction)
    check_pair_table(pairs, PATHS, LABELS)


def test_make_pairs_can_draw_every_pair():
    n_pairs = N_POSITIVE + N_NEGATIVE
    pairs = make_pairs(PATHS, LABELS, n_pairs=n_pairs, positive_fraction=N_POSITIVE / n_pairs,
                       random_state=0)
    check_pair_table(pairs, PATHS, LABELS)
    assert {frozenset(pair) for pair in zip(pairs["Image1"], pairs["Image2"])} == {
        frozenset(pair) for pair in itertools.combinations(PATHS, 2)}


def test_make_pairs_is_uniform_enough():
    # Over many draws of 2 positives, each of the 10 positive pairs comes up.
    seen = set()
    for seed in range(40):
        pairs = make_pairs(PATHS, LABELS, n_pairs=2, positive_fraction=1.0, random_state=seed)
        seen |= {frozenset(pair) for pair in zip(pairs["Image1"], pairs["Image2"])}
    assert len(seen) == N_POSITIVE


def test_make_pairs_is_deterministic_for_an_int_seed():
    first = make_pairs(PATHS, LABELS, n_pairs=12, random_state=3)
    pd.testing.assert_frame_equal(first, make_pairs(PATHS, LABELS, n_pairs=12, random_state=3))
    assert not first.equals(make_pairs(PATHS, LABELS, n_pairs=12, random_state=4))


def test_make_pairs_accepts_series_arrays_path_likes_and_any_labels(tmp_path):
    paths = [tmp_path / name for name in PATHS]
    labels = pd.Series([hash(label) % 7 if label != "d" else ("d", 1) for label in LABELS])
    pairs = make_pairs(np.array(paths, dtype=object), labels, n_pairs=8, random_state=0)
    check_pair_table(pairs, [str(path) for path in paths], list(labels))
    assert all(isinstance(path, str) for path in pairs["Image1"])


def test_make_pairs_mixes_sides_and_rows():
    pairs = make_pairs(PATHS, LABELS, n_pairs=40, positive_fraction=0.25, random_state=0)
    assert 0 < pairs["Label"].iloc[:20].sum() < 10  # positives are not all first
    # Every image can sit on either side.
    position = {path: i for i, path in enumerate(PATHS)}
    first_is_earlier = [position[a] < position[b]
                        for a, b in zip(pairs["Image1"], pairs["Image2"])]
    assert 0 < sum(first_is_earlier) < len(pairs)


def test_make_pairs_too_many_positives():
    with pytest.raises(ValueError, match=r"cannot draw 11 matching pairs \(n_pairs=22, "
                                         r"positive_fraction=0.5\): the 10 images give 10 "
                                         "pairs of the same label"):
        make_pairs(PATHS, LABELS, n_pairs=22)


def test_make_pairs_too_many_negatives():
    with pytest.raises(ValueError, match="cannot draw 36 non-matching pairs .* the 10 images "
                                         "give 35 pairs of different labels"):
        make_pairs(PATHS, LABELS, n_pairs=36, positive_fraction=0.0)


def test_make_pairs_single_label():
    with pytest.raises(ValueError, match="all 3 images have the label 'a', so no pair is a "
                                         "non-match"):
        make_pairs(PATHS[:3], LABELS[:3], n_pairs=2)
    pairs = make_pairs(PATHS[:3], LABELS[:3], n_pairs=3, positive_fraction=1.0)
    assert pairs["Label"].tolist() == [1, 1, 1]


@pytest.mark.parametrize("paths, labels, error, match", [
    (PATHS, LABELS[:-1], ValueError, "paths has 10 entries but labels has 9"),
    (PATHS[:-1] + ["img0.png"], LABELS, ValueError,
     r"paths\[9\] repeats paths\[0\] \('img0.png'\)"),
    (PATHS[:-1] + [None], LABELS, TypeError, r"paths\[9\] must be a str or path-like; got "
                                             "NoneType"),
    (PATHS, LABELS[:-1] + [None], ValueError, r"labels\[9\] is missing"),
    (PATHS, np.array(LABELS).reshape(5, 2), ValueError, "labels must be one label per image"),
])
def test_make_pairs_bad_input(paths, labels, error, match):
    with pytest.raises(error, match=match):
        make_pairs(paths, labels, n_pairs=4)


@pytest.mark.parametrize("kwargs, match", [
    ({"n_pairs": 0}, "'n_pairs' parameter of make_pairs must be an int in the range"),
    ({"n_pairs": 4, "positive_fraction": 1.5}, "'positive_fraction' parameter"),
    ({"n_pairs": 4, "random_state": "seed"}, "'random_state' parameter"),
])
def test_make_pairs_validates_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_pairs(PATHS, LABELS, **kwargs)


def test_make_pairs_scales_past_listing_every_pair():
    # 200,000 images: 2e10 pairs, far more than could be listed.
    labels = np.arange(200_000) // 4
    paths = [f"{i}.jpg" for i in range(len(labels))]
    pairs = make_pairs(paths, labels, n_pairs=1000, random_state=0)
    assert len(pairs) == 1000 and pairs["Label"].sum() == 500
    first = pairs["Image1"].str.removesuffix(".jpg").astype(int).to_numpy() // 4
    second = pairs["Image2"].str.removesuffix(".jpg").astype(int).to_numpy() // 4
    assert np.array_equal(first == second, pairs["Label"].to_numpy() == 1)


def test_folder_to_pairs_to_fitted_classifier(tmp_path):
    """The README's path: a folder of classes, pairs, a fitted classifier."""
    rng = np.random.default_rng(0)
    for label in ["cat", "dog", "emu", "fox"]:
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        for view in range(4):
            write_png(str(tmp_path / label / f"{view}.png"), colour, size=TINY_IMAGE_SIZE)
    images = load_image_folder(tmp_path)
    pairs = make_pairs(images["path"], images["label"], n_pairs=40, random_state=0)
    clf = make_tiny_classifier(max_epochs=1).fit(pairs[["Image1", "Image2"]], pairs["Label"])
    proba = clf.predict_proba(pairs[["Image1", "Image2"]])
    assert proba.shape == (40, 2)
    assert set(clf.classes_) == {0, 1}
