"""``--report``: one self-contained HTML page of a ``search`` or ``dedup`` result."""

import base64
import html
import io
import os
import re
import shutil
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import sklearn_imgpair._cli.retrieval as retrieval
from sklearn_imgpair.__main__ import main
from sklearn_imgpair._cli.report import dedup_report, search_report, thumbnail

# A file name that breaks HTML unless it is escaped.
AWKWARD = "<b>a&b \"q\" 'x'.png"
_VOID = {"meta", "img", "br", "link", "input", "hr"}


class _Parsed(HTMLParser):
    """The sections of a report, each with its heading and figures; checks that tags nest."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.sections, self.stack, self.tags = [], [], set()
        self.feed(text)
        self.close()
        assert not self.stack, f"unclosed tags: {self.stack}"

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag == "section":
            self.sections.append({"id": attrs["id"], "heading": "", "figures": []})
        elif tag == "figure":
            self.sections[-1]["figures"].append(
                {"class": attrs.get("class", ""), "src": None, "text": ""})
        elif tag == "br" and "figure" in self.stack:
            self.sections[-1]["figures"][-1]["text"] += "\n"
        elif tag == "img" and self.sections:
            self.sections[-1]["figures"][-1]["src"] = attrs["src"]
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (tag, self.stack)
        self.stack.pop()
        if tag == "div" and "figure" in self.stack:  # a placeholder: a line of its own
            self.sections[-1]["figures"][-1]["text"] += "\n"

    def handle_data(self, data):
        if "h2" in self.stack:
            self.sections[-1]["heading"] += data
        elif "figure" in self.stack:
            self.sections[-1]["figures"][-1]["text"] += data


def _read(path):
    text = open(path, encoding="utf-8").read()
    assert not re.search(r"https?://", text)
    assert "<script" not in text and "<link" not in text
    return text, _Parsed(text)


def _decoded(src):
    """The thumbnail of a data URI, checked to be a small image PIL can decode."""
    match = re.fullmatch(r"data:image/(jpeg|png);base64,([A-Za-z0-9+/=]+)", src)
    assert match, src[:60]
    with Image.open(io.BytesIO(base64.b64decode(match[2]))) as image:
        image.load()
        assert max(image.size) <= 160
        return image.size


def _caption_path(figure):
    """The path a figure names: the last line of its caption."""
    return figure["text"].rsplit("\n", 1)[-1]


@pytest.fixture(scope="module")
def catalogue(image_pairs, tmp_path_factory):
    """Twelve gallery images, one with an awkward name, a byte copy and a pixel copy."""
    images = sorted(dict.fromkeys(image_pairs[0].ravel()))[:12]
    folder = tmp_path_factory.mktemp("report") / "gallery"
    folder.mkdir()
    paths = [str(shutil.copy(image, folder / f"{index:02d}.png"))
             for index, image in enumerate(images)]
    paths[5] = str(shutil.move(paths[5], folder / AWKWARD))
    paths.append(str(shutil.copy(paths[0], folder / "zz_copy.png")))
    pixels = np.asarray(Image.open(paths[1]).convert("RGB"))
    Image.fromarray(pixels).save(folder / "zz_pixels.bmp")
    paths.append(str(folder / "zz_pixels.bmp"))
    return folder, sorted(paths)


def _search(model_path, folder, tmp_path, *options):
    output, report = tmp_path / "results.csv", tmp_path / "out" / "results.html"
    code = main(["search", "--model", str(model_path), "--gallery", str(folder), "--query",
                 str(folder), "--n-neighbors", "4", "--output", str(output), "--report",
                 str(report), "--quiet", *options])
    return code, output, report


def test_search_report_shows_every_query_and_its_matches_in_rank_order(
        model_path, model, catalogue, tmp_path, capsys):
    folder, paths = catalogue
    code, output, report = _search(model_path, folder, tmp_path)
    assert code == 0
    assert f"Wrote the search report to {report}" in capsys.readouterr().out
    table = pd.read_csv(output)
    text, page = _read(report)
    assert html.escape(AWKWARD) in text and AWKWARD not in text
    assert [section["heading"].split(": ", 1)[1].rsplit(" (", 1)[0]
            for section in page.sections] == paths  # every query, in order
    for section, (query, rows) in zip(page.sections, table.groupby("Image1", sort=False)):
        figures = section["figures"]
        assert _caption_path(figures[0]) == query and figures[0]["class"] == "query"
        assert [_caption_path(figure) for figure in figures[1:]] == rows["Image2"].tolist()
        for figure, rank, probability in zip(figures[1:], rows["rank"], rows["probability"]):
            assert figure["text"].startswith(f"{rank}. probability {probability:.3f}")
            above = probability > model.threshold
            assert (figure["class"] == "above") == above
            assert ("above threshold" in figure["text"]) == above
        assert all(_decoded(figure["src"]) for figure in figures)
    assert "threshold (probability)" in text and "model.safetensors" in text


def test_dedup_report_shows_groups_copies_and_the_kept_file(model_path, catalogue, tmp_path):
    folder, paths = catalogue
    output, report = tmp_path / "duplicates.csv", tmp_path / "duplicates.html"
    assert main(["dedup", "--model", str(model_path), "--images", str(folder), "--output",
                 str(output), "--threshold", "0.9", "--keep", "first", "--report",
                 str(report), "--quiet"]) == 0
    table = pd.read_csv(output)
    remove = pd.read_csv(tmp_path / "duplicates_remove.csv")
    text, page = _read(report)
    assert [section["id"] for section in page.sections] == [
        f"group-{number}" for number in sorted(table["group"].unique())]
    for section, (number, rows) in zip(page.sections, table.groupby("group")):
        members = set(rows["Image1"]) | set(rows["Image2"])
        figures = section["figures"]
        assert section["heading"] == f"Group {number} ({len(members)} members)"
        assert {_caption_path(figure) for figure in figures} == members
        assert all(_decoded(figure["src"]) for figure in figures)
        kept = [figure for figure in figures if "kept" in figure["text"]]
        assert len(kept) == 1 and kept[0] is figures[0]
        removed = {_caption_path(figure) for figure in figures if "remove" in figure["text"]}
        assert removed == set(remove["Image1"][remove["group"] == number])
    captions = {_caption_path(figure): figure["text"] for section in page.sections
                for figure in section["figures"]}
    # Both copies, of their first file, with probability 1.
    assert f"probability 1 exact copy of {os.path.basename(paths[0])}" in captions[
        str(folder / "zz_copy.png")]
    assert f"exact copy of {os.path.basename(paths[1])}" in captions[
        str(folder / "zz_pixels.bmp")]
    assert "exact copies</td><td>2<" in text


def test_an_image_that_vanished_is_a_named_placeholder_and_the_rest_is_written(
        model_path, catalogue, tmp_path, monkeypatch, capsys):
    folder, paths = catalogue
    gallery = tmp_path / "gallery"
    shutil.copytree(folder, gallery)
    lost = gallery / "03.png"
    write = retrieval.report_search

    def vanish_then_write(*args, **kwargs):  # between the search and its report
        os.remove(lost)
        (gallery / "04.png").write_bytes(b"corrupt")
        return write(*args, **kwargs)

    monkeypatch.setattr(retrieval, "report_search", vanish_then_write)
    code, _, report = _search(model_path, gallery, tmp_path)
    assert code == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 image(s) could not be read" in err
    assert str(lost) in err and str(gallery / "04.png") in err
    text, page = _read(report)
    assert len(page.sections) == len(paths)
    assert f"missing: {lost}" in text and f"missing: {gallery / '04.png'}" in text
    figures = [figure for section in page.sections for figure in section["figures"]]
    for figure in figures:
        path = _caption_path(figure)
        if path in (str(lost), str(gallery / "04.png")):
            assert figure["src"] is None and figure["text"].startswith(f"missing: {path}")
        else:
            assert _decoded(figure["src"])


def test_search_report_of_a_similarity_table_without_matches(tmp_path):
    image = tmp_path / "q.png"
    Image.new("RGB", (400, 200), (10, 20, 30)).save(image)
    table = pd.DataFrame({"Image1": [str(image)] * 2, "Image2": [str(image), "lost.png"],
                          "rank": [1, 2], "similarity": [0.99, 0.2], "distance": [0.01, 0.8]})
    path, missing = search_report(tmp_path / "r.htm", table, score_column="similarity",
                                  threshold=0.9, title="t", queries=[str(image), "other.png"])
    assert path == str(tmp_path / "r.htm") and missing == ["lost.png", "other.png"]
    _, page = _read(path)
    first, second = page.sections
    assert first["figures"][1]["text"].startswith("1. similarity 0.990 ✓ above threshold")
    assert first["figures"][2]["text"] == "missing: lost.png\n2. similarity 0.200\nlost.png"
    assert _decoded(first["figures"][0]["src"]) == (160, 80)
    assert second["heading"] == "Query 2: other.png (0 matches)"
    (query,) = second["figures"]
    assert query["text"] == "missing: other.png\nquery\nother.png" and query["src"] is None


def test_dedup_report_of_a_hand_made_table(tmp_path):
    names = [str(tmp_path / f"{name}.png") for name in "abcd"]
    for index, name in enumerate(names):
        Image.new("RGB", (8, 8), (index * 60, 0, 0)).save(name)
    a, b, c, d = names
    # One group joined by a chain: c-b and b-a... listed most likely first; d copies a.
    table = pd.DataFrame({"Image1": [a, c, b], "Image2": [d, b, a],
                          "probability": [1.0, 0.97, 0.8], "group": [0, 0, 0]})
    keep = pd.DataFrame({"Image1": [a, b, d], "Image2": [c, c, c]})
    path, missing = dedup_report(tmp_path / "d.html", table, threshold=0.7, title="dups",
                                 keep=keep, copies={d: a}, images=names)
    assert not missing
    text, page = _read(path)
    (group,) = page.sections
    assert group["heading"] == "Group 0 (4 members)"
    shown = [(_caption_path(figure), figure["text"].split("\n")[0]) for figure in
             group["figures"]]
    assert [name for name, _ in shown] == [c, a, b, d]  # the kept one, then input order
    assert shown[0][1] == "first kept"
    # a joined through later members only: its best pair, with its copy d.
    assert shown[1][1] == "probability 1.000 ✓ above threshold with d.png remove"
    assert shown[2][1] == "probability 0.970 ✓ above threshold with c.png remove"
    assert shown[3][1] == "probability 1 exact copy of a.png remove"
    assert "files to remove (--keep)</td><td>3<" in text


def test_dedup_report_shows_a_member_not_listed_as_not_removed(tmp_path):
    names = [str(tmp_path / f"{name}.png") for name in "abc"]
    for index, name in enumerate(names):
        Image.new("RGB", (8, 8), (index * 60, 0, 0)).save(name)
    a, b, c = names
    # A chain a~b~c: c matches the kept a only through b, so only b is listed.
    table = pd.DataFrame({"Image1": [b, a], "Image2": [c, b], "probability": [0.9, 0.8],
                          "group": [0, 0]})
    keep = pd.DataFrame({"Image1": [b], "Image2": [a]})
    path, _ = dedup_report(tmp_path / "d.html", table, threshold=0.7, title="dups", keep=keep,
                           images=names)
    text, page = _read(path)
    shown = [figure["text"].split("\n")[0] for figure in page.sections[0]["figures"]]
    assert shown[0] == "first kept" and shown[1].endswith(" remove")
    assert shown[2].endswith("not listed (no direct match with the kept file)")
    assert "files to remove (--keep)</td><td>1<" in text


def test_thumbnail_is_upright_by_exif_and_none_for_a_file_gone(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to show upright
    Image.new("RGB", (320, 160), (200, 30, 30)).save(path, exif=exif)
    assert thumbnail(path).size == (80, 160)  # upright, at most 160 a side
    assert thumbnail(path, 40).size == (20, 40)
    assert thumbnail(tmp_path / "gone.png") is None


@pytest.mark.parametrize("command", ["search", "dedup"])
def test_a_report_that_is_not_html_fails_before_any_work(command, tmp_path, capsys):
    output = tmp_path / "out.csv"
    images = ["--gallery", "x", "--query", "x"] if command == "search" else ["--images", "x"]
    assert main([command, "--model", "missing.safetensors", *images, "--output", str(output),
                 "--report", str(tmp_path / "report.pdf")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--report must end in .html or .htm" in err
    assert "report.pdf" in err and not output.exists()


def test_help_describes_report(capsys):
    for command in ("search", "dedup"):
        assert main([command, "--help"]) == 0
        assert "--report HTML" in capsys.readouterr().out
