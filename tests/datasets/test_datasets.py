import errno
import hashlib
import http.server
import os
import socket
import threading
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sklearn_imgpair.datasets import (
    _download,
    expand_paths,
    fetch_stanford_online_products,
    read_pairs_csv,
)
from sklearn_imgpair.datasets._stanford_online_products import _find_dataset_dir

# ----------------------------------------------------------------------
# read_pairs_csv
# ----------------------------------------------------------------------


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_read_pairs_csv_resolves_relative_paths_against_the_csv_folder(tmp_path, monkeypatch):
    csv = _write(tmp_path / "data" / "pairs.csv",
                 "Image1,Image2,Label\nimages/a.png,../b.png,1\n/abs/c.png,d.png,0\n")
    monkeypatch.chdir(tmp_path)  # the working folder must not matter
    frame = read_pairs_csv(csv)
    assert frame["Image1"].tolist() == [str(tmp_path / "data" / "images" / "a.png"),
                                        "/abs/c.png"]
    assert frame["Image2"].tolist() == [str(tmp_path / "b.png"), str(tmp_path / "data" / "d.png")]
    assert frame["Label"].tolist() == [1, 0]


def test_read_pairs_csv_accepts_another_base_folder_and_columns(tmp_path):
    csv = _write(tmp_path / "pairs.csv", "query,response,same\nq.png,r.png,yes\n")
    frame = read_pairs_csv(csv, image_columns=["query", "response"], base_folder="/photos")
    assert frame.loc[0, "query"] == "/photos/q.png"
    assert frame.loc[0, "response"] == "/photos/r.png"
    assert frame.loc[0, "same"] == "yes"


def test_read_pairs_csv_expands_each_part_of_multi_image_cells(tmp_path):
    csv = _write(tmp_path / "pairs.csv", "Image1,Image2,Label\na.png;sub/b.png,/c.png,1\n")
    frame = read_pairs_csv(csv)
    assert frame.loc[0, "Image1"] == f"{tmp_path / 'a.png'};{tmp_path / 'sub' / 'b.png'}"
    assert frame.loc[0, "Image2"] == "/c.png"


def test_expand_paths_matches_the_tutorials_path_expander(tmp_path):
    def path_expander(path, base_folder):  # the AutoMM tutorial's function
        return ";".join(os.path.abspath(os.path.join(base_folder, p)) for p in path.split(";"))

    for cell in ["a.png", "x/../b.png;c.png", "/abs/d.png;e.png"]:
        assert expand_paths(cell, tmp_path) == path_expander(cell, str(tmp_path))


def test_read_pairs_csv_uses_an_unnamed_first_column_as_index(tmp_path):
    frame = pd.DataFrame({"Image1": ["a.png"], "Image2": ["b.png"], "Label": [1]}, index=[7])
    frame.to_csv(tmp_path / "pairs.csv")  # writes the index as a first, unnamed column
    read = read_pairs_csv(tmp_path / "pairs.csv")
    assert list(read.columns) == ["Image1", "Image2", "Label"]
    assert read.index.tolist() == [7]


def test_read_pairs_csv_names_a_missing_column_and_the_columns_present(tmp_path):
    csv = _write(tmp_path / "pairs.csv", "Image1,Img2,Label\na.png,b.png,1\n")
    with pytest.raises(ValueError, match=r"no column 'Image2'.*\['Image1', 'Img2', 'Label'\]"):
        read_pairs_csv(csv)


def test_read_pairs_csv_names_the_row_of_an_empty_image_cell(tmp_path):
    csv = _write(tmp_path / "pairs.csv", "Image1,Image2,Label\na.png,b.png,1\nc.png,,0\n")
    with pytest.raises(ValueError, match=r"line 3, column 'Image2': the image path is empty"):
        read_pairs_csv(csv)


def test_read_pairs_csv_errors_on_missing_and_unparsable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.csv"):
        read_pairs_csv(tmp_path / "nothing.csv")
    csv = _write(tmp_path / "broken.csv", 'Image1,Image2\n"a.png,b.png\n')
    with pytest.raises(ValueError, match="Cannot read pairs file .*broken.csv"):
        read_pairs_csv(csv)
    with pytest.raises(ValueError, match="is a folder"):
        read_pairs_csv(tmp_path)


# ----------------------------------------------------------------------
# fetch_stanford_online_products, offline: a small zip of the same layout
# ----------------------------------------------------------------------


def _cache_files(data_home):
    return sorted(str(p.relative_to(data_home)) for p in Path(data_home).rglob("*"))


def test_fetch_downloads_from_a_file_url_and_returns_the_tutorial_tables(sop_zip, tmp_path):
    sop = fetch_stanford_online_products(data_home=tmp_path, url=sop_zip.as_uri(),
                                         verbose=False)
    data_dir = tmp_path / "stanford_online_products" / "Stanford_Online_Products"
    assert sop.data_dir == str(data_dir)
    assert list(sop.train.columns) == ["Image1", "Image2", "Label"]
    assert sop.train["Label"].tolist() == [1, 0] and sop.test["Label"].tolist() == [1]
    assert sop.train.loc[0, "Image1"] == str(data_dir / "bicycle_final" / "1_0.png")
    for frame in (sop.train, sop.test):
        assert all(os.path.isfile(p) for p in np.ravel(frame[["Image1", "Image2"]]))
    assert "Stanford Online Products" in sop.DESCR
    # Only the extracted folder stays: no archive, no partial download, no staging folder.
    assert all(name.startswith("stanford_online_products/Stanford_Online_Products")
               or name == "stanford_online_products" for name in _cache_files(tmp_path))

    X_train, X_test, y_train, y_test = fetch_stanford_online_products(
        data_home=tmp_path, download_if_missing=False, return_X_y=True)
    assert X_train.shape == (2, 2) and X_test.shape == (1, 2)
    assert y_train.tolist() == [1, 0] and y_test.tolist() == [1]


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests = []

    def do_GET(self):
        type(self).requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(sop_zip):
    """Serve the zip's folder on 127.0.0.1; yields (base URL, list of requested paths)."""
    handler = type("Handler", (_CountingHandler,), {"requests": []})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0),
        lambda *args: handler(*args, directory=str(sop_zip.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler.requests
    server.shutdown()
    server.server_close()


def test_fetch_downloads_over_http_once_then_reads_the_cache(sop_zip, http_server, tmp_path,
                                                            capsys):
    base_url, requests = http_server
    url = f"{base_url}/{sop_zip.name}"
    sha256 = hashlib.sha256(sop_zip.read_bytes()).hexdigest()
    first = fetch_stanford_online_products(data_home=tmp_path, url=url, sha256=sha256)
    assert requests == [f"/{sop_zip.name}"]
    assert f"Downloading {url}" in capsys.readouterr().err

    second = fetch_stanford_online_products(data_home=tmp_path, url=url, sha256=sha256)
    assert requests == [f"/{sop_zip.name}"]  # no second download
    pd.testing.assert_frame_equal(first.train, second.train)


def test_fetch_without_cache_and_downloads_off_says_where_it_looked(tmp_path):
    with pytest.raises(OSError) as info:
        fetch_stanford_online_products(data_home=tmp_path, download_if_missing=False)
    message = str(info.value)
    assert str(tmp_path / "stanford_online_products") in message
    assert "download_if_missing=True" in message and "by hand" in message
    assert not (tmp_path / "stanford_online_products").exists()


def test_fetch_from_an_unreachable_server_raises_oserror_with_advice(tmp_path):
    with socket.socket() as probe:  # a loopback port with no server behind it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/Stanford_Online_Products.zip"
    with pytest.raises(OSError, match="Cannot download") as info:
        fetch_stanford_online_products(data_home=tmp_path, url=url, verbose=False)
    assert url in str(info.value) and "by hand" in str(info.value)
    assert _cache_files(tmp_path) == ["stanford_online_products"]  # nothing left behind


def test_fetch_reports_a_missing_file_on_the_server(http_server, tmp_path):
    base_url, _ = http_server
    with pytest.raises(OSError, match="Cannot download .*HTTP Error 404"):
        fetch_stanford_online_products(data_home=tmp_path, url=f"{base_url}/nothing.zip",
                                       verbose=False)


@pytest.mark.parametrize("content, sha256, match", [
    (b"this is not a zip archive", None, "not a valid zip archive"),
    (None, "0" * 64, "SHA-256"),
])
def test_fetch_rejects_a_corrupt_download_and_leaves_no_cache(sop_zip, tmp_path, content,
                                                             sha256, match):
    archive = sop_zip
    if content is not None:
        archive = tmp_path / "source" / "Stanford_Online_Products.zip"
        archive.parent.mkdir()
        archive.write_bytes(content)
    home = tmp_path / "home"
    with pytest.raises(OSError, match=match):
        fetch_stanford_online_products(data_home=home, url=archive.as_uri(), sha256=sha256,
                                       verbose=False)
    assert _cache_files(home) == ["stanford_online_products"]
    with pytest.raises(OSError, match="download_if_missing=True"):
        fetch_stanford_online_products(data_home=home, download_if_missing=False)


@pytest.mark.parametrize("member", ["../escaped.txt", "/tmp/sklearn_imgpair_escaped.txt"])
def test_fetch_refuses_archive_members_outside_the_cache(tmp_path, member):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zip_file:
        zip_file.writestr("Stanford_Online_Products/train.csv", "Image1,Image2,Label\n")
        zip_file.writestr(member, "gotcha")
    home = tmp_path / "home"
    with pytest.raises(OSError, match=f"Refusing to extract '{member}'"):
        fetch_stanford_online_products(data_home=home, url=archive.as_uri(), verbose=False)
    assert not (home / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    assert not os.path.exists("/tmp/sklearn_imgpair_escaped.txt")
    assert _cache_files(home) == ["stanford_online_products"]


def _write_splits(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train.csv", "test.csv"):
        (folder / split).write_text("Image1,Image2,Label\na.png,b.png,1\n")
    return folder


@pytest.mark.parametrize("layout", ["Stanford_Online_Products", ".", "sop_copy"])
def test_find_dataset_dir_takes_the_archive_folder_a_flat_copy_or_a_subfolder(tmp_path,
                                                                            layout):
    folder = _write_splits(tmp_path / layout)
    assert Path(_find_dataset_dir(str(tmp_path))).resolve() == folder.resolve()


def test_find_dataset_dir_ignores_hidden_and_incomplete_folders(tmp_path):
    _write_splits(tmp_path / ".extract-abc")  # an extraction in progress
    (tmp_path / "Stanford_Online_Products").mkdir()
    (tmp_path / "Stanford_Online_Products" / "train.csv").write_text("Image1,Image2,Label\n")
    assert _find_dataset_dir(str(tmp_path)) is None
    assert _find_dataset_dir(str(tmp_path / "absent")) is None


def test_fetch_replaces_an_incomplete_copy_in_the_cache(sop_zip, tmp_path):
    partial = tmp_path / "stanford_online_products" / "Stanford_Online_Products"
    partial.mkdir(parents=True)
    (partial / "train.csv").write_text("Image1,Image2,Label\n")  # no test.csv: interrupted
    with pytest.raises(OSError, match="incomplete; delete it"):
        fetch_stanford_online_products(data_home=tmp_path, download_if_missing=False)
    sop = fetch_stanford_online_products(data_home=tmp_path, url=sop_zip.as_uri(),
                                         verbose=False)
    assert sop.data_dir == str(partial)
    assert sop.train["Label"].tolist() == [1, 0] and sop.test["Label"].tolist() == [1]


def test_a_full_disk_is_not_reported_as_a_network_error(sop_zip, tmp_path, monkeypatch):
    class FullDisk:
        def __init__(self, file):
            self.file = file

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    def full_disk_open(file, mode="r", *args, **kwargs):
        opened = open(file, mode, *args, **kwargs)
        return FullDisk(opened) if "w" in mode else opened  # not the file:// source

    # fetch_file writes the download through urllib.request.urlretrieve, which
    # opens the local file with open(); a name in the module comes before builtins.
    monkeypatch.setattr(urllib.request, "open", full_disk_open, raising=False)
    with pytest.raises(OSError) as info:
        fetch_stanford_online_products(data_home=tmp_path, url=sop_zip.as_uri(), verbose=False)
    assert not isinstance(info.value, _download.DownloadError)
    message = str(info.value)
    assert "Cannot write the download" in message and "No space left on device" in message
    assert str(tmp_path / "stanford_online_products") in message
    assert "network" not in message
    assert _cache_files(tmp_path) == ["stanford_online_products"]  # no partial file


class _TruncatingHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "1000")  # but only 9 bytes follow
        self.end_headers()
        self.wfile.write(b"PK\x03\x04 trun")

    def log_message(self, *args):
        pass


def test_fetch_rejects_an_incomplete_download_and_leaves_no_cache(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TruncatingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/Stanford_Online_Products.zip"
    try:
        with pytest.raises(_download.DownloadError,
                           match="Cannot download .*got only 9 out of 1000 bytes"):
            fetch_stanford_online_products(data_home=tmp_path, url=url, verbose=False)
    finally:
        server.shutdown()
        server.server_close()
    assert _cache_files(tmp_path) == ["stanford_online_products"]


def test_the_download_goes_through_sklearn_fetch_file(sop_zip, tmp_path, monkeypatch):
    calls = []

    def fake_fetch_file(url, folder=None, local_filename=None, sha256=None, **kwargs):
        calls.append(dict(url=url, folder=folder, local_filename=local_filename,
                          sha256=sha256, **kwargs))
        path = Path(folder) / local_filename
        path.write_bytes(sop_zip.read_bytes())
        return path

    monkeypatch.setattr(_download, "fetch_file", fake_fetch_file)
    url = "https://mirror.invalid/data/Stanford_Online_Products.zip"
    sha256 = hashlib.sha256(sop_zip.read_bytes()).hexdigest()
    sop = fetch_stanford_online_products(data_home=tmp_path, url=url, sha256=sha256.upper(),
                                         verbose=False)
    assert sop.train["Label"].tolist() == [1, 0]
    assert len(calls) == 1
    assert calls[0]["url"] == url
    assert Path(calls[0]["folder"]) == tmp_path / "stanford_online_products"
    assert calls[0]["local_filename"] == "Stanford_Online_Products.zip"
    assert calls[0]["sha256"] == sha256  # fetch_file compares lower-case hex digests
    assert calls[0]["n_retries"] == 0
    # The archive is deleted once extracted.
    assert not (tmp_path / "stanford_online_products" / "Stanford_Online_Products.zip").exists()


@pytest.mark.parametrize("url, expected", [
    ("file:///data/sop.zip", "file://localhost/data/sop.zip"),
    ("file://localhost/data/sop.zip", "file://localhost/data/sop.zip"),
    ("https://example.org/sop.zip", "https://example.org/sop.zip"),
])
def test_file_urls_get_a_host_for_fetch_file(url, expected):
    assert _download._with_host(url) == expected


@pytest.mark.parametrize("url, name", [
    ("https://example.org/a/Stanford_Online_Products.zip", "Stanford_Online_Products.zip"),
    ("https://example.org/get?file=x.zip", "get"),
    ("file:///tmp/my%20copy.zip", "my copy.zip"),
    ("https://example.org/", "download"),
    ("https://example.org/a/..", "download"),
])
def test_the_download_keeps_the_urls_last_name(url, name):
    assert _download._local_name(url) == name
