"""Images in memory (bytes, PIL images, arrays) and several images per item, in every estimator."""

import collections
import io
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from PIL import ExifTags, Image, ImageOps
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from sklearn_imgpair import (
    ImageEmbedder,
    PairFeatures,
    UnreadableImageWarning,
    check_pairs,
    check_paths,
)
from sklearn_imgpair._images import datasets as _datasets
from sklearn_imgpair._images import decode as _decode
from sklearn_imgpair._images.cells import InMemoryImage, image_key
from sklearn_imgpair._images.datasets import PairDataset
from sklearn_imgpair._images.pixels import read_pixels

from conftest import TINY_IMAGE_SIZE, TINY_SWIN, make_tiny_classifier

SIZE = TINY_IMAGE_SIZE

# What each kind of cell makes of an image file: the four must give the same pixels.
KINDS = {
    "path": str,
    "bytes": lambda path: Path(path).read_bytes(),
    "PIL image": Image.open,
    "array": lambda path: np.asarray(Image.open(path).convert("RGB")),
}


def _photo(seed, shape=(96, 128, 3)):
    """Smooth colours (and alpha) plus noise.

    The default size is three times the network's side, so that JPEG files
    are decoded at reduced scale (draft mode).
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    channels = np.stack([x * 2, y * 2, x + y, x * 6], axis=-1)[..., :shape[2]]
    base = channels + rng.integers(0, 200, shape[2])
    noise = rng.normal(0, 20, size=shape)
    return np.clip(base % 256 + noise, 0, 255).astype(np.uint8)


def _save(pixels, path, fmt="PNG", **params):
    Image.fromarray(pixels).save(path, fmt, **params)
    return str(path)


def _encoded(pixels, fmt="PNG"):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def _column(items):
    """A 1-D object array holding ``items`` as they are (numpy would unpack images)."""
    column = np.empty(len(items), dtype=object)
    for index, item in enumerate(items):
        column[index] = item
    return column


def _count_decodes(monkeypatch):
    """Count decodes per image (paths by path, in-memory images by content key)."""
    counts = collections.Counter()
    original = _decode.load_image

    def counting_load_image(source, image_size):
        counts[getattr(source, "key", source)] += 1
        return original(source, image_size)

    monkeypatch.setattr(_decode, "load_image", counting_load_image)
    monkeypatch.setattr(_datasets, "load_image", counting_load_image)
    return counts


@pytest.fixture(scope="module")
def embedder():
    """An untrained tiny embedder without the embedding cache, decoding in this process."""
    return ImageEmbedder(pretrained=False, image_size=SIZE, model_kwargs=dict(TINY_SWIN),
                         cache=False, num_workers=0).fit()


@pytest.fixture(scope="module")
def clf(image_pairs):
    X, y = image_pairs
    return make_tiny_classifier(max_epochs=1, num_workers=0).fit(X[:40], y[:40])


# ----------------------------------------------------------------------
# one decoding for every kind of cell
# ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt, shape", [("PNG", (96, 128, 3)), ("JPEG", (40, 60, 3))])
def test_path_bytes_pil_image_and_array_give_identical_pixels_and_embeddings(
        tmp_path, embedder, fmt, shape):
    path = _save(_photo(0, shape=shape), tmp_path / f"photo.{fmt.lower()}", fmt)
    pixels = {kind: read_pixels(make(path), SIZE) for kind, make in KINDS.items()}
    vectors = {kind: embedder.transform([make(path)]) for kind, make in KINDS.items()}
    for kind in KINDS:
        assert_array_equal(pixels[kind], pixels["path"], err_msg=kind)
        assert_array_equal(vectors[kind], vectors["path"], err_msg=kind)  # bit for bit


def test_a_large_jpeg_file_and_its_bytes_are_decoded_at_reduced_scale(tmp_path, embedder):
    # Three times the network's side: files and bytes are decoded in PIL's draft
    # mode (here at 1/2 scale), decoded pixels cannot be: close, not identical.
    path = _save(_photo(0), tmp_path / "photo.jpg", "JPEG")
    pixels = {kind: read_pixels(make(path), SIZE) for kind, make in KINDS.items()}
    vectors = {kind: embedder.transform([make(path)]) for kind, make in KINDS.items()}
    assert_array_equal(pixels["bytes"], pixels["path"])
    assert_array_equal(vectors["bytes"], vectors["path"])
    assert_array_equal(pixels["array"], pixels["PIL image"])
    assert not np.array_equal(pixels["array"], pixels["path"])
    assert float((vectors["array"] * vectors["path"]).sum()) > 0.999


def test_bytes_and_pil_images_are_turned_upright_by_their_exif_orientation(tmp_path):
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # rotated 90 degrees
    # Under twice the network's side: no reduced-scale decoding.
    path = _save(_photo(1, shape=(48, 60, 3)), tmp_path / "rotated.jpg", "JPEG",
                 exif=exif.tobytes())
    expected = read_pixels(path, SIZE)
    image = Image.open(path)
    assert_array_equal(read_pixels(Path(path).read_bytes(), SIZE), expected)
    assert_array_equal(read_pixels(image, SIZE), expected)
    assert image.size == (60, 48) and image.getexif()[ExifTags.Base.Orientation] == 6  # as given
    # An array carries no EXIF: it is taken as it is, so give it upright.
    upright = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert_array_equal(read_pixels(upright, SIZE), expected)
    assert not np.array_equal(read_pixels(np.asarray(image.convert("RGB")), SIZE), expected)


def test_alpha_grey_and_16_bit_images_in_memory_are_read_as_their_files(tmp_path):
    rgba = _photo(2, shape=(40, 40, 4))
    rgba_path = _save(rgba, tmp_path / "rgba.png")
    expected = read_pixels(rgba_path, SIZE)
    assert_array_equal(read_pixels(rgba, SIZE), expected)  # (H, W, 4): alpha onto white
    assert_array_equal(read_pixels(Image.open(rgba_path), SIZE), expected)
    transparent = np.zeros((8, 8, 4), dtype=np.uint8)
    assert (read_pixels(transparent, 8) == 255).all()
    grey = _photo(3, shape=(40, 40, 3))[..., 0]
    grey_path = _save(grey, tmp_path / "grey.png")
    assert_array_equal(read_pixels(grey, SIZE), read_pixels(grey_path, SIZE))
    deep = Image.fromarray(np.arange(1600, dtype=np.uint16).reshape(40, 40) * 40)
    deep_path = tmp_path / "deep.png"
    deep.save(deep_path)
    expected = read_pixels(str(deep_path), SIZE)
    assert expected.max() > 200  # 16-bit values are scaled, not clipped
    assert_array_equal(read_pixels(deep_path.read_bytes(), SIZE), expected)
    assert_array_equal(read_pixels(Image.open(deep_path), SIZE), expected)


def test_read_pixels_says_what_it_was_given(tmp_path):
    truncated = _encoded(_photo(4))[:300]
    with pytest.raises(ValueError, match=r"^Cannot read image from bytes of length 300 "
                                         r"\(b'\\x89PNG.*'\.\.\.\): "):
        read_pixels(truncated, SIZE)
    with pytest.raises(ValueError, match=r"^Cannot read image from bytes of length 5 "
                                         r"\(b'a\.png'\): PIL cannot identify"):
        read_pixels(b"a.png", SIZE)
    with pytest.raises(ValueError, match=r"^bytes of length 0 are not an image"):
        read_pixels(bytearray(), SIZE)
    with pytest.raises(ValueError, match=r"^a float32 array of shape \(4, 4, 3\) is not an "
                                         r"image; expected dtype uint8"):
        read_pixels(np.zeros((4, 4, 3), dtype=np.float32), SIZE)
    path = tmp_path / "truncated.png"
    path.write_bytes(truncated)
    with pytest.raises(ValueError, match=r"^Cannot read a PIL image of mode RGB and size "
                                         r"128 x 96: "):
        read_pixels(Image.open(path), SIZE)
    with pytest.raises(FileNotFoundError, match="lost.png"):
        read_pixels(tmp_path / "lost.png", SIZE)
    with pytest.raises(TypeError, match="got int"):
        read_pixels(3, SIZE)


def test_decoding_and_cells_import_no_torch():
    code = ("import sys, sklearn_imgpair._images.pixels, sklearn_imgpair._images.cells; "
            "print(sorted(name for name in sys.modules if name.startswith('torch')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[2], timeout=120, check=True)
    assert result.stdout.strip() == "[]"


# ----------------------------------------------------------------------
# normalised cells
# ----------------------------------------------------------------------


def test_cells_are_normalised_by_kind_and_keyed_by_content(tmp_path):
    data = _encoded(_photo(5))
    pixels = _photo(5)
    cells = check_paths([data, bytearray(data), memoryview(data), Image.fromarray(pixels),
                         pixels, pixels.copy(), "a.png", Path("b.png")])
    assert all(isinstance(cell, InMemoryImage) for cell in cells[:6])
    assert cells[0] == cells[1] == cells[2] and cells[4] == cells[5]
    assert len({cells[0], cells[3], cells[4]}) == 3  # bytes, PIL image and array differ
    assert cells[6:].tolist() == ["a.png", "b.png"]
    assert image_key(cells[0]) == image_key(check_paths([bytes(data)])[0])
    assert image_key(cells[0]).startswith("content|bytes:")
    # What decides the pixels is in the key: EXIF orientation, palette, dtype and shape.
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 3
    rotated = Image.open(io.BytesIO(_save_to_bytes(Image.fromarray(pixels), exif=exif)))
    assert check_paths([rotated])[0] != check_paths([Image.fromarray(pixels)])[0]
    palette = Image.fromarray(pixels).convert("P")
    other = palette.copy()
    other.putpalette(list(range(256))[::-1] * 3)
    assert check_paths([palette])[0] != check_paths([other])[0]
    grey = pixels[..., 0].copy()
    assert check_paths([grey])[0] != check_paths([grey.reshape(128, 96)])[0]  # same bytes


def _save_to_bytes(image, **params):
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **params)
    return buffer.getvalue()


def test_in_memory_cells_are_immutable_and_leave_the_callers_data_alone():
    pixels = _photo(6)
    [cell] = check_paths([pixels])
    assert pixels.flags.writeable and not cell.data.flags.writeable
    assert np.shares_memory(cell.data, pixels)  # read in place, not copied
    with pytest.raises(AttributeError, match="immutable"):
        cell.key = "other"
    copy = pickle.loads(pickle.dumps(cell))  # as DataLoader workers get it
    assert copy == cell and copy.key == cell.key
    assert "a uint8 array of shape (96, 128, 3)" in repr(cell)


def test_rules_for_several_images_of_one_item(tmp_path):
    a, b, c = (_save(_photo(seed), tmp_path / f"{name}.png")
               for seed, name in enumerate("abc"))
    joined_file = _save(_photo(9), tmp_path / "x;y.png")
    data = Path(a).read_bytes()
    column = check_paths([(a, b), (c,), [c], f"{a};{b}", joined_file, (data, f"{b};{c}")])
    assert column.tolist() == [(a, b), c, c, (a, b), joined_file,
                               (check_paths([data])[0], b, c)]  # ';' parts are flattened
    # In a list of rows, a list of several values is a second column, not an item.
    with pytest.raises(ValueError, match="row 0 has 2 values.*as a tuple"):
        check_paths([[a, b], c])
    # A list of pairs is read as pairs; a list or tuple inside a pair is one item.
    pairs = check_pairs([(a, b), ([a, b], c), ((c,), f"{a};{c}")])
    assert pairs.tolist() == [[a, b], [(a, b), c], [c, (a, c)]]
    table = np.empty((1, 2), dtype=object)
    table[0, 0], table[0, 1] = (a, b), [c]
    assert check_pairs(table).tolist() == [[(a, b), c]]
    frame = pd.DataFrame({"Image1": [[a, b], a], "Image2": [c, (b, c)]})
    assert check_pairs(frame).tolist() == [[(a, b), c], [a, (b, c)]]
    assert check_paths(pd.Series([[a, b], c])).tolist() == [(a, b), c]


BAD_CELLS = {
    "empty bytes": (b"", ValueError, r"^X\[5, 1\]: bytes of length 0 are not an image\.$"),
    "two channels": (np.zeros((4, 4, 2), dtype=np.uint8), ValueError,
                     r"^X\[5, 1\]: a uint8 array of shape \(4, 4, 2\) is not an image; "
                     r"expected \(H, W\), \(H, W, 3\) or \(H, W, 4\)\.$"),
    "int64 array": (np.zeros((4, 4, 3), dtype=np.int64), ValueError,
                    r"^X\[5, 1\]: an int64 array of shape \(4, 4, 3\) is not an image; expected "
                    r"dtype uint8"),
    "no pixels": (np.zeros((0, 4, 3), dtype=np.uint8), ValueError, r"it has no pixels"),
    "empty list": ([], ValueError, r"^X\[5, 1\]: an empty list holds no image"),
    "empty tuple": ((), ValueError, r"^X\[5, 1\]: an empty tuple holds no image"),
    "empty joined part": ("a.png;", ValueError,
                          r"^X\[5, 1\] \(image 2 of 2\) is an empty string"),
    "missing part": (["a.png", None], ValueError, r"^X\[5, 1\] \(image 2 of 2\) is missing"),
    "nested list": (["a.png", ["b.png"]], TypeError,
                    r"^X\[5, 1\] \(image 2 of 2\) is a list; the images of one item"),
    "numpy bytes": (np.bytes_(b"a.png"), TypeError, r"^X\[5, 1\] holds numpy bytes"),
    "dict": ({"path": "a.png"}, TypeError,
             r"^X\[5, 1\] must be an image path \(str or path-like\), the bytes of an image "
             r"file \(bytes, bytearray, memoryview\), a PIL image, a uint8 array of shape "
             r"\(H, W\), \(H, W, 3\) or \(H, W, 4\), or a list or tuple of these \(several "
             r"images of one item\); got dict"),
}


def _with_cell(X, value):
    X = X.astype(object).copy()
    X[5, 1] = value
    return X


@pytest.mark.parametrize("case", BAD_CELLS)
def test_bad_cells_fail_in_fit_predict_and_transform_naming_the_cell(case, clf, embedder,
                                                                     image_pairs):
    X, y = image_pairs
    value, error, match = BAD_CELLS[case]
    bad = _with_cell(X[:40], value)
    with pytest.raises(error, match=match):
        check_pairs(bad)
    fresh = make_tiny_classifier(max_epochs=1)
    with pytest.raises(error, match=match):
        fresh.fit(bad, y[:40])
    assert not hasattr(fresh, "module_")  # before any network was built
    with pytest.raises(error, match=match):
        clf.predict_proba(bad)
    with pytest.raises(error, match=match.replace(r"X\[5, 1\]", r"X\[2\]")):
        embedder.transform(_column(["a.png", "b.png", value]))


def test_a_single_image_is_not_a_column():
    for image in (b"\x89PNG", Image.new("RGB", (4, 4))):
        with pytest.raises(TypeError, match="got a single .*Wrap it in a list"):
            check_paths(image)
    with pytest.raises(ValueError, match=r"one column of image paths; got shape \(4, 4, 3\)\. "
                                         r".*Images given as arrays go in a list"):
        check_paths(np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"row 0 is a uint8 array of shape \(4, 4, 3\), not a "
                                         r"pair of images"):
        check_pairs([np.zeros((4, 4, 3), dtype=np.uint8)])


# ----------------------------------------------------------------------
# each distinct image once; several images of one item
# ----------------------------------------------------------------------


def test_the_same_content_is_decoded_and_embedded_once(embedder, monkeypatch, tmp_path):
    pixels = _photo(10)
    data = _encoded(pixels)
    counts = _count_decodes(monkeypatch)
    column = _column([data, bytearray(data), memoryview(data), Image.fromarray(pixels),
                      Image.fromarray(pixels.copy()), pixels, pixels.copy(), [data, pixels]])
    vectors = embedder.transform(column)
    assert sorted(counts.values()) == [1, 1, 1]  # bytes, PIL image, array
    assert_array_equal(vectors[1], vectors[0])
    assert_array_equal(vectors[2], vectors[0])
    assert_array_equal(vectors[4], vectors[3])
    assert_array_equal(vectors[6], vectors[5])


def test_in_memory_embeddings_are_cached_by_content(monkeypatch, tmp_path):
    pixels = _photo(11)
    embedder = ImageEmbedder(pretrained=False, image_size=SIZE, model_kwargs=dict(TINY_SWIN),
                             memory=tmp_path / "cache", num_workers=0).fit()
    first = embedder.transform([_encoded(pixels), pixels])
    counts = _count_decodes(monkeypatch)
    again = embedder.transform([bytearray(_encoded(pixels)), pixels.copy()])  # new objects
    assert not counts
    assert_array_equal(again, first)


def test_an_item_of_several_images_is_the_normalised_mean_of_their_embeddings(
        embedder, tmp_path, monkeypatch):
    a, b, c = (_save(_photo(seed), tmp_path / f"{name}.png")
               for seed, name in zip((12, 13, 14), "abc"))
    single = embedder.transform([a, b, c])
    mean = single[0] + single[1]
    mean /= np.linalg.norm(mean)
    counts = _count_decodes(monkeypatch)
    items = [(a, b), (Path(a).read_bytes(), b), f"{a};{b}", [a], c]
    vectors = embedder.transform(items)
    for row in range(3):
        assert_allclose(vectors[row], mean, rtol=1e-5, atol=1e-6)
    assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    assert_allclose(vectors[3], single[0], rtol=1e-5, atol=1e-6)  # one image: that image
    assert_allclose(vectors[4], single[2], rtol=1e-5, atol=1e-6)
    assert sorted(counts.values()) == [1, 1, 1, 1]  # a, b, a's bytes, c: each once
    assert counts[a] == 1


def test_predict_proba_scores_the_mean_embedding_of_several_images(clf, image_pairs):
    X, _ = image_pairs
    a, b, c = X[0, 0], X[1, 0], X[2, 1]
    logits = clf.decision_function([([a, b], c), (f"{a};{b}", c), (a, c)])
    vectors = ImageEmbedder(classifier=clf).fit().transform([a, b, c])
    mean = torch.nn.functional.normalize(torch.from_numpy(vectors[0] + vectors[1]), dim=0)
    with torch.no_grad():
        expected = clf.module_.similarity(mean, torch.from_numpy(vectors[2])).item()
    assert_allclose(logits[0], expected, rtol=1e-5)
    assert_allclose(logits[1], logits[0])
    assert not np.isclose(logits[2], logits[0])


# ----------------------------------------------------------------------
# the estimators on in-memory pairs
# ----------------------------------------------------------------------


def _in_memory(X):
    """The images of ``X``: its first column as bytes, its second as PIL images."""
    X_memory = np.empty(X.shape, dtype=object)
    for row in range(len(X)):
        X_memory[row, 0] = Path(X[row, 0]).read_bytes()
        X_memory[row, 1] = Image.open(X[row, 1])
    return X_memory


def test_fit_and_predict_proba_on_in_memory_pairs_equal_those_on_paths(image_pairs):
    X, y = image_pairs[0][:40], image_pairs[1][:40]
    params = dict(max_epochs=1, num_workers=0, pair_mining="none")
    on_paths = make_tiny_classifier(**params).fit(X, y)
    in_memory = make_tiny_classifier(**params).fit(_in_memory(X), y)
    expected = on_paths.predict_proba(X)
    assert_allclose(in_memory.predict_proba(_in_memory(X)), expected, atol=1e-6)
    assert_allclose(on_paths.predict_proba(_in_memory(X)), expected, atol=1e-6)
    mixed = list(zip(_in_memory(X)[:, 0], X[:, 1]))  # a list of (bytes, path) pairs
    # The same image, embedded in another batch, may differ in float32's last bits; the
    # calibrated head's atanh magnifies that near cosine 1 (logits near 30), so relative.
    assert_allclose(on_paths.decision_function(mixed), on_paths.decision_function(X),
                    rtol=1e-4, atol=1e-5)


def _multi_image_pairs(image_pairs):
    """The pairs of ``image_pairs`` with a second view joined to some cells."""
    original, y = image_pairs[0][:40], image_pairs[1][:40]
    X = original.astype(object).copy()
    for row in range(0, 39, 3):
        X[row, 0] = [original[row, 0], Path(original[row + 1, 0]).read_bytes()]
    return X, y


@pytest.mark.parametrize("params", [{}, {"freeze_backbone": True}],
                         ids=["mining", "frozen-backbone"])
def test_fit_on_several_images_per_cell_reads_each_image_once_and_is_seeded(
        image_pairs, monkeypatch, params):
    X, y = _multi_image_pairs(image_pairs)
    counts = _count_decodes(monkeypatch)
    first = make_tiny_classifier(max_epochs=2, num_workers=0, **params).fit(X, y)
    assert max(counts.values()) == 1
    n_images = len({getattr(image, "key", image) for cell in check_pairs(X).ravel()
                    for image in (cell if isinstance(cell, tuple) else (cell,))})
    assert len(counts) == n_images
    second = make_tiny_classifier(max_epochs=2, num_workers=0, **params).fit(X, y)
    proba = first.predict_proba(X)
    assert np.isfinite(proba).all()
    assert_array_equal(second.predict_proba(X), proba)  # the draws follow random_state


def test_training_reads_one_image_of_a_multi_image_cell_drawn_at_random():
    red, blue = np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)
    red[..., 0], blue[..., 2] = 255, 255
    pairs = check_pairs([((red, blue), red)])
    dataset = PairDataset(pairs, np.array([1.0], dtype=np.float32), image_size=4)

    def draws():
        return [int(dataset[0][0]["x1"][0, 0, 0]) for _ in range(40)]

    torch.manual_seed(0)
    seen = draws()
    assert set(seen) == {0, 255}  # both images, one at a time
    torch.manual_seed(0)
    assert draws() == seen


def test_pair_features_on_in_memory_and_multi_image_pairs(image_pairs):
    X, _ = image_pairs
    X = X[:10]
    features = PairFeatures(ImageEmbedder(pretrained=False, image_size=SIZE,
                                          model_kwargs=dict(TINY_SWIN), num_workers=0))
    expected = features.fit(X).transform(X)
    assert_allclose(features.transform(_in_memory(X)), expected, atol=1e-6)
    multi = X.astype(object).copy()
    multi[0, 0] = [X[0, 0], X[1, 0]]
    assert not np.allclose(features.transform(multi)[0], expected[0])
    assert_allclose(features.transform(multi)[1:], expected[1:], atol=1e-6)


def test_a_column_of_pil_images_goes_through_a_pipeline(image_pairs):
    paths = np.unique(image_pairs[0][:, 0])[:12]
    labels = np.arange(len(paths)) % 2
    images = _column([Image.open(path) for path in paths])
    pipeline = make_pipeline(
        ImageEmbedder(pretrained=False, image_size=SIZE, model_kwargs=dict(TINY_SWIN),
                      num_workers=0),
        LogisticRegression())
    proba = pipeline.fit(images, labels).predict_proba(images)
    assert proba.shape == (len(paths), 2)
    assert_allclose(pipeline.fit(paths, labels).predict_proba(paths), proba, atol=1e-5)


def test_decoding_workers_get_in_memory_images(embedder, image_pairs):
    paths = np.unique(image_pairs[0][:, 0])[:6]
    images = [Image.open(path) for path in paths[:3]] + [np.asarray(Image.open(path))
                                                         for path in paths[3:]]
    with_workers = ImageEmbedder(pretrained=False, image_size=SIZE, cache=False,
                                 model_kwargs=dict(TINY_SWIN), num_workers=1).fit()
    assert_allclose(with_workers.transform(images), embedder.transform(paths), atol=1e-6)


# ----------------------------------------------------------------------
# on_error="warn"
# ----------------------------------------------------------------------


def test_warn_gives_nan_to_exactly_the_rows_of_corrupt_bytes(embedder, clf, image_pairs):
    X, _ = image_pairs
    corrupt = _encoded(_photo(15))[:300]
    column = [X[0, 0], corrupt, (X[1, 0], corrupt), X[2, 0]]
    warning_embedder = ImageEmbedder(pretrained=False, image_size=SIZE, cache=False,
                                     model_kwargs=dict(TINY_SWIN), on_error="warn").fit()
    with pytest.warns(UnreadableImageWarning, match=r"X\[1\]: Cannot read image from bytes "
                                                    r"of length 300") as record:
        vectors = warning_embedder.transform(column)
    assert record[0].message.rows.tolist() == [1, 2]
    assert np.isnan(vectors[[1, 2]]).all() and not np.isnan(vectors[[0, 3]]).any()
    pairs = _with_cell(X[:8], corrupt)
    clf.set_params(on_error="warn")
    try:
        with pytest.warns(UnreadableImageWarning, match=r"X\[5, 1\]: Cannot read image from "
                                                        r"bytes of length 300"):
            proba = clf.predict_proba(pairs)
    finally:
        clf.set_params(on_error="raise")
    assert np.isnan(proba[5]).all() and not np.isnan(np.delete(proba, 5, axis=0)).any()
    with pytest.raises(ValueError, match=r"X\[5, 1\]: Cannot read image from bytes"):
        clf.predict_proba(pairs)


def test_warn_fit_leaves_out_the_pairs_of_unreadable_in_memory_images(image_pairs, tmp_path):
    X, y = image_pairs[0][:40].astype(object).copy(), image_pairs[1][:40]
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(_encoded(_photo(16))[:300])
    X[3, 0] = _encoded(_photo(16))[:300]
    X[7, 1] = [X[7, 1], Image.open(truncated)]  # a lazily opened, broken file
    clf = make_tiny_classifier(max_epochs=1, on_error="warn", train_split=None,
                               num_workers=0)
    with pytest.warns(UnreadableImageWarning, match="left out of training") as record:
        clf.fit(X, y)
    [warning] = [w.message for w in record if isinstance(w.message, UnreadableImageWarning)]
    assert warning.rows.tolist() == [3, 7]
    assert any(failure.startswith("X[7, 1] (image 2 of 2): Cannot read a PIL image")
               for failure in warning.failures)
