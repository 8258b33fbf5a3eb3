"""Exact copies: the same bytes, or the same decoded pixels in another file, without the network."""

import collections
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image, PngImagePlugin, features

import sklearn_imgpair._cli.copies as copies_module
from sklearn_imgpair.__main__ import main
from sklearn_imgpair._cli.copies import exact_copies


def _pixels(seed, size=(12, 9)):
    width, height = size
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _save(path, pixels, **kwargs):
    Image.fromarray(pixels).save(path, **kwargs)
    return str(path)


@pytest.fixture
def pixel_decodes(monkeypatch):
    """How often the pixel pass decoded each file (a Counter by path)."""
    counts = collections.Counter()
    read_pixels = copies_module.read_pixels

    def counting(source, image_size):
        counts[os.fspath(source)] += 1
        return read_pixels(source, image_size)

    monkeypatch.setattr(copies_module, "read_pixels", counting)
    return counts


def test_a_byte_copy_is_found_without_decoding(tmp_path, pixel_decodes):
    original = _save(tmp_path / "a.png", _pixels(0))
    copy = str(shutil.copy(original, tmp_path / "b.png"))
    other = _save(tmp_path / "c.png", _pixels(1, size=(5, 5)))
    original_of, same_bytes = exact_copies([original, copy, other], return_same_bytes=True)
    assert original_of.tolist() == [0, 0, 2]
    assert same_bytes.tolist() == [False, True, False]
    assert not pixel_decodes  # no two byte-distinct files of one size


def _text(key, value):
    info = PngImagePlugin.PngInfo()
    info.add_text(key, value)
    return info


def _grey(folder, pixels):
    grey = pixels[..., 0]
    return (_save(folder / "grey.png", grey),  # mode L
            _save(folder / "rgb.png", np.repeat(grey[..., None], 3, axis=2)))


# Pairs of files with the same picture in other bytes: (first, other).
SAME_PIXELS = {
    "png-bmp": lambda folder, pixels: (_save(folder / "a.png", pixels),
                                       _save(folder / "a.bmp", pixels)),
    "png-tiff": lambda folder, pixels: (_save(folder / "a.png", pixels),
                                        _save(folder / "a.tiff", pixels)),
    "png-webp-lossless": lambda folder, pixels: (_save(folder / "a.png", pixels),
                                                 _save(folder / "a.webp", pixels,
                                                       lossless=True)),
    "png-compression": lambda folder, pixels: (_save(folder / "a.png", pixels),
                                               _save(folder / "b.png", pixels,
                                                     compress_level=0)),
    "png-metadata": lambda folder, pixels: (_save(folder / "a.png", pixels),
                                            _save(folder / "b.png", pixels,
                                                  pnginfo=_text("Comment", "re-saved"))),
    "grey-as-rgb": _grey,
}


@pytest.mark.parametrize("kind", SAME_PIXELS)
def test_the_same_pixels_in_other_bytes_are_a_copy(kind, tmp_path, pixel_decodes):
    if "webp" in kind and not features.check("webp"):
        pytest.skip("this PIL has no WebP support")
    first, other = SAME_PIXELS[kind](tmp_path, _pixels(0))
    different = _save(tmp_path / "different.png", _pixels(1))  # same size, other pixels
    with open(first, "rb") as a, open(other, "rb") as b:
        assert a.read() != b.read()
    original_of, same_bytes = exact_copies([first, different, other], return_same_bytes=True)
    assert original_of.tolist() == [0, 1, 0]
    assert not same_bytes.any()
    assert pixel_decodes == {first: 1, different: 1, other: 1}  # each decoded once


def test_exif_orientation_is_applied_before_pixels_are_compared(tmp_path):
    pixels = _pixels(0)
    upright = _save(tmp_path / "upright.png", pixels)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: stored turned the other way
    turned = Image.fromarray(pixels).transpose(Image.Transpose.ROTATE_90)
    turned.save(tmp_path / "turned.png", exif=exif)
    stored_only = str(shutil.copy(tmp_path / "turned.png", tmp_path / "plain.png"))
    Image.open(stored_only).save(stored_only)  # the same stored pixels, no EXIF
    paths = [upright, str(tmp_path / "turned.png"), stored_only]
    assert exact_copies(paths).tolist() == [0, 0, 2]


def test_different_pixels_of_one_size_are_not_copies(tmp_path):
    paths = [_save(tmp_path / f"{seed}.png", _pixels(seed)) for seed in range(3)]
    almost = _pixels(0)
    almost[0, 0, 0] ^= 1  # one value of one pixel
    paths.append(_save(tmp_path / "almost.png", almost))
    assert exact_copies(paths).tolist() == [0, 1, 2, 3]


def test_unreadable_files_are_copies_of_none(tmp_path, pixel_decodes):
    whole = (tmp_path / "whole.png")
    _save(whole, _pixels(0, size=(64, 64)))
    data = whole.read_bytes()
    (tmp_path / "cut1.png").write_bytes(data[:len(data) // 2])  # the header of a 64 x 64 image
    (tmp_path / "cut2.png").write_bytes(data[:len(data) // 2 + 1])
    (tmp_path / "text.png").write_bytes(b"not an image")
    (tmp_path / "text2.png").write_bytes(b"not an imagE")  # same size, other bytes
    paths = [str(tmp_path / name) for name in
             ("cut1.png", "whole.png", "cut2.png", "text.png", "text2.png", "missing.png")]
    assert exact_copies(paths).tolist() == [0, 1, 2, 3, 4, 5]
    assert set(pixel_decodes) == {paths[0], paths[1], paths[2]}  # text files: no header


def test_byte_copies_of_a_pixel_copy_follow_the_first_file(tmp_path):
    pixels = _pixels(0)
    bmp = _save(tmp_path / "a.bmp", pixels)
    png = _save(tmp_path / "b.png", pixels)
    png_copy = str(shutil.copy(png, tmp_path / "c.png"))
    original_of, same_bytes = exact_copies([bmp, png, png_copy], return_same_bytes=True)
    assert original_of.tolist() == [0, 0, 0]
    assert same_bytes.tolist() == [False, False, True]
    assert exact_copies([bmp, png, png_copy], pixels=False).tolist() == [0, 1, 1]


def test_dedup_counts_byte_and_pixel_copies_and_embeds_neither(model_path, image_pairs,
                                                               tmp_path, decode_counts, capsys):
    images = sorted(dict.fromkeys(image_pairs[0].ravel()))[:4]
    folder = tmp_path / "photos"
    folder.mkdir()
    originals = [str(shutil.copy(image, folder / f"{index}.png"))
                 for index, image in enumerate(images)]
    pixel_copy = _save(folder / "x_pixels.bmp", np.asarray(Image.open(originals[1])
                                                           .convert("RGB")))
    byte_copy = str(shutil.copy(originals[2], folder / "x_bytes.png"))
    output = tmp_path / "duplicates.csv"
    assert main(["dedup", "--model", str(model_path), "--images", str(folder), "--output",
                 str(output), "--threshold", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert ("2 exact copies found by hash (1 byte-identical files, 1 with identical pixels), "
            "4 images to embed") in out
    assert set(decode_counts) == set(originals)  # no copy is decoded for the network
    written = pd.read_csv(output)
    assert sorted(written[["Image1", "Image2"]].values.tolist()) == sorted(
        [[originals[1], pixel_copy], [originals[2], byte_copy]])
    assert (written["probability"] == 1).all()
