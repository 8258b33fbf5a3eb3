import numpy as np
import pytest
import torch
from numpy.testing import assert_array_equal
from PIL import Image

from sklearn_imgpair._images.datasets import ImageDataset, PairDataset
from sklearn_imgpair._images.decode import load_image


def _save(image, tmp_path, name="image.png", **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return str(path)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I", "F"])
def test_load_image_handles_png_modes(tmp_path, mode):
    image = Image.new("RGB", (20, 10), (200, 100, 50)).convert(mode)
    name = "image.tiff" if mode in ("I", "F") else "image.png"
    tensor = load_image(_save(image, tmp_path, name), 16)
    assert tensor.shape == (3, 16, 16)
    assert tensor.dtype == torch.uint8


def test_load_image_handles_cmyk_jpeg(tmp_path):
    image = Image.new("CMYK", (24, 24), (0, 255, 255, 0))  # pure red in CMYK
    tensor = load_image(_save(image, tmp_path, "red.jpg"), 8)
    red, green, blue = tensor.float().mean(dim=(1, 2)).tolist()
    assert red > 200 and green < 60 and blue < 60


def test_load_image_rescales_16_bit_instead_of_clipping(tmp_path):
    pixels = np.full((8, 8), 32896, dtype=np.uint16)  # half of 65535
    tensor = load_image(_save(Image.fromarray(pixels), tmp_path), 8)
    assert tensor.unique().tolist() == [128]


def test_load_image_composites_transparency_onto_white(tmp_path):
    image = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red
    tensor = load_image(_save(image, tmp_path), 8)
    assert tensor.unique().tolist() == [255]


def test_load_image_applies_exif_orientation(tmp_path):
    # Stored 20 wide x 10 high: left half red, right half blue. Orientation 6
    # means "rotate 90 degrees clockwise to display": red ends up on top.
    image = Image.new("RGB", (20, 10), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    tensor = load_image(_save(image, tmp_path, "rotated.png", exif=exif), 10).float()
    top, bottom = tensor[:, :4].mean(dim=(1, 2)), tensor[:, -4:].mean(dim=(1, 2))
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_load_image_resizes_without_cropping(tmp_path):
    image = Image.new("RGB", (40, 10), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 4, 10))  # a white strip on the far left
    tensor = load_image(_save(image, tmp_path), 10)
    assert tensor[:, :, 0].float().mean() > 200


def test_load_image_missing_file(tmp_path):
    missing = str(tmp_path / "missing.png")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(missing, 8)


@pytest.mark.parametrize(
    "content, match",
    [(b"", "Cannot read image"), (b"not an image at all", "Cannot read image")],
    ids=["empty", "text"],
)
def test_load_image_unreadable_file(tmp_path, content, match):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"{match} .*broken.png"):
        load_image(str(path), 8)


def test_load_image_truncated_file(tmp_path):
    path = _save(Image.new("RGB", (64, 64), (1, 2, 3)), tmp_path, "full.jpg")
    data = open(path, "rb").read()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.jpg"):
        load_image(str(truncated), 8)


def test_load_image_directory(tmp_path):
    with pytest.raises(ValueError, match="not a file"):
        load_image(str(tmp_path), 8)


def test_pair_dataset_items_and_targets(tmp_path):
    red = _save(Image.new("RGB", (8, 8), (255, 0, 0)), tmp_path, "red.png")
    blue = _save(Image.new("RGB", (8, 8), (0, 0, 255)), tmp_path, "blue.png")
    pairs = np.array([[red, blue], [blue, blue]], dtype=object)
    dataset = PairDataset(pairs, np.array([0.0, 1.0], dtype=np.float32), image_size=4)
    images, target = dataset[1]
    assert len(dataset) == 2
    assert set(images) == {"x1", "x2"}
    assert_array_equal(images["x1"], images["x2"])
    assert images["x1"][2].unique().tolist() == [255]
    assert target.item() == 1.0 and target.dtype == torch.float32


def test_pair_dataset_error_names_row_and_column(tmp_path):
    red = _save(Image.new("RGB", (8, 8), (255, 0, 0)), tmp_path, "red.png")
    pairs = np.array([[red, red], [red, str(tmp_path / "gone.png")]], dtype=object)
    with pytest.raises(FileNotFoundError, match=r"X\[1, 1\]: .*gone.png"):
        PairDataset(pairs, image_size=4)[1]


def test_image_dataset_error_uses_given_names(tmp_path):
    dataset = ImageDataset([str(tmp_path / "gone.png")], 4, names=["X[7, 0]"])
    with pytest.raises(FileNotFoundError, match=r"X\[7, 0\]: .*gone.png"):
        dataset[0]


def test_decoded_image_cache_decodes_each_file_once(tmp_path, monkeypatch):
    from sklearn_imgpair._images import decode as _dataset

    red = _save(Image.new("RGB", (8, 8), (255, 0, 0)), tmp_path, "red.png")
    blue = _save(Image.new("RGB", (8, 8), (0, 0, 255)), tmp_path, "blue.png")
    decoded = []
    original = _dataset.load_image
    monkeypatch.setattr(_dataset, "load_image",
                        lambda path, size: decoded.append(path) or original(path, size))
    pairs = np.array([[red, blue], [blue, red], [red, red]], dtype=object)
    dataset = PairDataset(pairs, image_size=4, cache=_dataset.DecodedImageCache(10**6))
    first = [dataset[i] for i in range(3)]
    second = [dataset[i] for i in range(3)]
    assert sorted(decoded) == sorted([red, blue])
    for (images_a, _), (images_b, _) in zip(first, second):
        assert_array_equal(images_a["x1"], images_b["x1"])


def test_decoded_image_cache_respects_its_budget(tmp_path):
    from sklearn_imgpair._images.decode import DecodedImageCache

    paths = [_save(Image.new("RGB", (8, 8), (i, i, i)), tmp_path, f"{i}.png") for i in range(5)]
    one_image = 3 * 4 * 4
    cache = DecodedImageCache(max_bytes=2 * one_image)
    for path in paths:
        assert cache.get(path, 4).shape == (3, 4, 4)
    assert len(cache) == 2 and cache.n_bytes == 2 * one_image
    assert cache.get(paths[4], 4)[0, 0, 0].item() == 4  # uncached images still load
