"""The ``search`` and ``dedup`` commands: a catalogue searched with a saved matcher."""

import os
import shutil

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from PIL import Image

from sklearn_imgpair import ImageMatchClustering, ImageNeighbors, find_duplicates
from sklearn_imgpair.__main__ import main
from sklearn_imgpair._cli.inputs import CommandError, list_image_files, read_images

pytest.importorskip("matplotlib", reason="--plot draws with matplotlib")


@pytest.fixture(scope="module")
def catalogue(image_pairs, tmp_path_factory):
    """Copies of the images: ``gallery/`` in two sub-folders and ``queries/``; read only."""
    X, _ = image_pairs
    images = list(dict.fromkeys(X.ravel()))
    folder = tmp_path_factory.mktemp("catalogue")
    for index, image in enumerate(images[:20]):
        target = folder / "gallery" / f"shelf{index % 2}" / os.path.basename(image)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, target)
    (folder / "queries").mkdir()
    for image in images[20:26]:
        shutil.copy(image, folder / "queries" / os.path.basename(image))
    (folder / "gallery" / "notes.txt").write_text("not an image")
    (folder / "gallery" / ".hidden").mkdir()
    shutil.copy(images[0], folder / "gallery" / ".hidden" / "skipped.png")
    return folder


def _gallery_paths(catalogue):
    return sorted(str(path) for path in (catalogue / "gallery").glob("shelf*/*.png"))


def _write_column(tmp_path, paths, column="path", name="images.csv", relative=True):
    """A one-column CSV of ``paths`` (relative to its folder) in ``tmp_path/data``."""
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    cells = [os.path.relpath(path, folder) if relative else path for path in paths]
    pd.DataFrame({column: cells}).to_csv(folder / name, index=False)
    return folder / name


def _assert_one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    assert err.startswith("sklearn-imgpair: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def _search(model_path, gallery, query, output, *options):
    return main(["search", "--model", str(model_path), "--gallery", str(gallery),
                 "--query", str(query), "--output", str(output), "--quiet", *options])


def test_list_image_files_walks_sub_folders_and_skips_other_files(catalogue):
    paths = list_image_files(catalogue / "gallery")
    assert paths == _gallery_paths(catalogue) and len(paths) == 20
    assert all(os.path.isabs(path) for path in paths)
    flat = list_image_files(catalogue / "queries")  # images right in the folder count too
    assert len(flat) == 6 and flat == sorted(flat)


@pytest.mark.parametrize("option", ["--images", "--gallery", "--query"])
def test_one_rule_reads_the_images_of_every_csv_input(option, catalogue, tmp_path):
    gallery = _gallery_paths(catalogue)
    pairs = tmp_path / "pairs.csv"  # a pairs CSV, as search writes: Image1, Image2, more
    pd.DataFrame({"Image1": gallery[:4], "Image2": gallery[2:6], "probability": 0.5}).to_csv(
        pairs, index=False)
    # No column named: both image columns of a pairs CSV, each distinct path once.
    assert read_images(str(pairs), None, option).paths.tolist() == gallery[:6]
    # --image-column: that column alone.
    assert read_images(str(pairs), ("Image2", "Image2"), option).paths.tolist() == gallery[2:6]
    one = _write_column(tmp_path, gallery[:3], column="anything")
    assert read_images(str(one), None, option).paths.tolist() == gallery[:3]
    other = tmp_path / "other.csv"
    pd.DataFrame({"path": gallery[:2], "label": 1}).to_csv(other, index=False)
    with pytest.raises(CommandError, match=f"{option} .* has 2 columns"):
        read_images(str(other), None, option)


def test_search_writes_the_k_nearest_with_the_classifiers_probabilities(
        model_path, model, catalogue, tmp_path, capsys):
    gallery = _gallery_paths(catalogue)
    # A CSV of relative paths, one of them twice: the gallery is its distinct images.
    gallery_csv = _write_column(tmp_path, [*gallery, gallery[3]], column="image")
    output = tmp_path / "out" / "results.csv"
    assert _search(model_path, gallery_csv, catalogue / "queries", output, "--n-neighbors",
                   "4", "--image-column", "image") == 0
    written = pd.read_csv(output)
    assert list(written.columns) == ["Image1", "Image2", "rank", "probability", "distance"]
    queries = list_image_files(catalogue / "queries")
    assert written["Image1"].tolist() == np.repeat(queries, 4).tolist()
    assert written["rank"].tolist() == [1, 2, 3, 4] * len(queries)

    neighbors = ImageNeighbors(classifier=model).fit(gallery)
    proba, indices = neighbors.kneighbors_proba(queries, n_neighbors=4)
    distances, _ = neighbors.kneighbors(queries, n_neighbors=4)
    assert written["Image2"].tolist() == np.asarray(gallery)[indices.ravel()].tolist()
    assert_allclose(written["probability"], proba.ravel(), rtol=1e-5)
    assert_allclose(written["distance"], distances.ravel(), rtol=1e-5, atol=1e-7)
    out = capsys.readouterr().out
    assert f"Embedding the 20 gallery images of {gallery_csv}" in out
    assert f"Wrote the 4 nearest gallery images of {len(queries)} queries to {output}" in out


def test_search_writes_pairs_that_predict_reads(model_path, catalogue, tmp_path):
    results, predictions = tmp_path / "results.csv", tmp_path / "predictions.csv"
    assert _search(model_path, catalogue / "gallery", catalogue / "queries", results,
                   "--n-neighbors", "2") == 0
    assert main(["predict", "--model", str(model_path), "--data", str(results), "--output",
                 str(predictions), "--quiet"]) == 0
    written = pd.read_csv(predictions)
    assert_allclose(written["probability"], pd.read_csv(results)["probability"], rtol=1e-5)


def test_a_csv_written_with_its_index_has_one_column_of_images(
        model_path, catalogue, tmp_path):
    queries = list_image_files(catalogue / "queries")
    query_csv = tmp_path / "queries.csv"
    pd.DataFrame({"photo": queries}).to_csv(query_csv)  # with the unnamed index column
    output = tmp_path / "results.csv"
    assert _search(model_path, catalogue / "gallery", query_csv, output,
                   "--n-neighbors", "1") == 0
    assert pd.read_csv(output)["Image1"].tolist() == queries


def test_a_query_in_the_gallery_finds_itself_first(model_path, catalogue, tmp_path):
    output = tmp_path / "results.csv"
    gallery = catalogue / "gallery"
    assert _search(model_path, gallery, gallery, output, "--n-neighbors", "2") == 0
    written = pd.read_csv(output)
    first = written[written["rank"] == 1]
    assert first["Image2"].tolist() == first["Image1"].tolist() == _gallery_paths(catalogue)
    assert_allclose(first["distance"], 0.0, atol=1e-5)


def test_plot_draws_a_picture_with_one_row_per_query(model_path, catalogue, tmp_path,
                                                     capsys):
    plot = tmp_path / "pictures" / "grid.png"
    assert _search(model_path, catalogue / "gallery", catalogue / "queries",
                   tmp_path / "results.csv", "--n-neighbors", "3", "--plot", str(plot),
                   "--plot-queries", "2") == 0
    assert f"Drew 2 queries and their matches in {plot}" in capsys.readouterr().out
    with Image.open(plot) as picture:
        assert picture.format == "PNG"
        width, height = picture.size
    assert width > height > 200  # two rows of four thumbnails
    # More queries, more rows; thumbnails keep their size.
    assert _search(model_path, catalogue / "gallery", catalogue / "queries",
                   tmp_path / "results.csv", "--n-neighbors", "3", "--plot", str(plot),
                   "--plot-queries", "4") == 0
    with Image.open(plot) as picture:
        assert picture.size[0] == width and picture.size[1] > 1.6 * height


def test_plot_draws_a_named_placeholder_for_a_gallery_image_gone_since(model_path, catalogue,
                                                                      tmp_path, capsys):
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    images = [shutil.copy(path, gallery) for path in _gallery_paths(catalogue)[:5]]
    index, plot = tmp_path / "catalogue.safetensors", tmp_path / "grid.png"
    assert main(["index", "--model", str(model_path), "--images", str(gallery), "--output",
                 str(index), "--quiet"]) == 0
    os.remove(images[3])  # every gallery image is a match: this one is drawn
    capsys.readouterr()
    assert main(["search", "--index", str(index), "--query", str(catalogue / "queries"),
                 "--output", str(tmp_path / "results.csv"), "--n-neighbors", "5", "--plot",
                 str(plot), "--plot-queries", "2", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert f"Drew 2 queries and their matches in {plot}" in captured.out
    assert captured.err.count(str(images[3])) == 1, captured.err
    assert "drawn as placeholders in the --plot picture" in captured.err
    with Image.open(plot) as picture:
        assert picture.format == "PNG"


def test_dedup_writes_find_duplicates_table_and_counts_groups(model_path, model, catalogue,
                                                              tmp_path, capsys):
    gallery = _gallery_paths(catalogue)
    every_pair = find_duplicates(gallery, model, threshold=0.0)
    threshold = float(np.quantile(every_pair["probability"], 0.95))
    output = tmp_path / "duplicates.csv"
    assert main(["dedup", "--model", str(model_path), "--images", str(catalogue / "gallery"),
                 "--output", str(output), "--threshold", str(threshold)]) == 0
    written = pd.read_csv(output)
    expected = find_duplicates(gallery, model, threshold=threshold)
    assert 0 < len(written) < len(every_pair)
    assert written[["Image1", "Image2"]].values.tolist() == (
        expected[["Image1", "Image2"]].values.tolist())
    assert_allclose(written["probability"], expected["probability"], rtol=1e-5)
    labels = ImageMatchClustering(model, threshold=threshold).fit_predict(gallery)
    sizes = np.bincount(labels)
    out = capsys.readouterr().out
    assert (f"Found {len(expected)} duplicate pairs in {int((sizes > 1).sum())} groups "
            f"({int(sizes[sizes > 1].sum())} images) at threshold {threshold:g}") in out


def test_dedup_n_neighbors_looks_among_the_nearest_only(model_path, model, catalogue,
                                                        tmp_path):
    gallery_csv = _write_column(tmp_path, _gallery_paths(catalogue))
    output = tmp_path / "duplicates.csv"
    assert main(["dedup", "--model", str(model_path), "--images", str(gallery_csv),
                 "--output", str(output), "--threshold", "0", "--n-neighbors", "1",
                 "--quiet"]) == 0
    written = pd.read_csv(output)
    expected = find_duplicates(_gallery_paths(catalogue), model, threshold=0.0, n_neighbors=1)
    assert written["Image1"].tolist() == expected["Image1"].tolist()
    assert len(written) < 20 * 19 / 2  # not every pair


def test_a_missing_model_fails_before_any_work(catalogue, tmp_path, capsys):
    missing = tmp_path / "none.safetensors"
    assert _search(missing, catalogue / "gallery", catalogue / "queries",
                   tmp_path / "out" / "results.csv") == 2
    _assert_one_line_error(capsys, f"model file '{missing}' does not exist")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["search", "dedup"])
def test_an_unreadable_gallery_image_is_named_by_line_and_path(name, model_path, catalogue,
                                                               tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    gallery = _gallery_paths(catalogue)
    gallery_csv = _write_column(tmp_path, [*gallery[:3], str(broken), *gallery[3:]])
    output = tmp_path / "out" / "out.csv"
    command = (["search", "--gallery", str(gallery_csv), "--query",
                str(catalogue / "queries")] if name == "search"
               else ["dedup", "--images", str(gallery_csv)])
    command += ["--model", str(model_path), "--output", str(output)]
    assert main(command) == 2
    _assert_one_line_error(capsys, f"{gallery_csv}, line 5, column 'path'",
                           f"Cannot read image '{broken}'")
    assert not (tmp_path / "out").exists()
    # A missing file is found before the model is loaded.
    missing = tmp_path / "lost.png"
    _write_column(tmp_path, [*gallery[:1], str(missing)])
    assert main(command) == 2
    _assert_one_line_error(capsys, f"{gallery_csv}, line 3, column 'path': image "
                                   f"'{missing}' does not exist")


def test_on_error_warn_leaves_unreadable_images_out(model_path, catalogue, tmp_path, capsys):
    broken = tmp_path / "data" / "broken.png"
    broken.parent.mkdir()
    broken.write_bytes(b"\x89PNG not really")
    gallery = _gallery_paths(catalogue)
    gallery_csv = _write_column(tmp_path, [str(broken), *gallery])
    queries = list_image_files(catalogue / "queries")
    query_csv = _write_column(tmp_path, [*queries[:2], str(broken)], name="queries.csv")
    output = tmp_path / "results.csv"
    assert _search(model_path, gallery_csv, query_csv, output, "--n-neighbors", "2",
                   "--on-error", "warn") == 0
    err = capsys.readouterr().err
    assert f"{gallery_csv}, line 2, column 'path': Cannot read image '{broken}'" in err
    assert "left out of the gallery" in err
    assert f"{query_csv}, line 4, column 'path': Cannot read image '{broken}'" in err
    written = pd.read_csv(output)
    assert written["Image1"].unique().tolist() == queries[:2]
    assert str(broken) not in set(written["Image2"])


def test_n_neighbors_larger_than_the_gallery_fails_with_a_clear_message(
        model_path, catalogue, tmp_path, capsys):
    gallery_csv = _write_column(tmp_path, _gallery_paths(catalogue)[:3])
    output = tmp_path / "out" / "results.csv"
    assert _search(model_path, gallery_csv, catalogue / "queries", output,
                   "--n-neighbors", "4") == 2
    _assert_one_line_error(capsys, f"--n-neighbors 4 is more than the 3 images of the gallery "
                                   f"'{gallery_csv}'; give --n-neighbors 3 or less.")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("setup, fragment", [
    ("two_columns", "has 2 columns ['path', 'label']; name the column of image paths with "
                    "--image-column"),
    ("no_column", "has no column 'image'"),
    ("empty_csv", "Cannot read --gallery"),
    ("missing", "does not exist; give a CSV file or a folder of images"),
    ("empty_folder", "holds no image file"),
    ("bad_plot", "--plot must end in .png, .pdf or .svg"),
    ("bad_output", "--output must end in .csv"),
    ("bad_device", "--device: device='bogus' is not a torch device"),
])
def test_bad_inputs_fail_with_one_line(setup, fragment, model_path, catalogue, tmp_path,
                                       capsys):
    gallery, options, output = catalogue / "gallery", [], tmp_path / "results.csv"
    if setup == "two_columns":
        gallery = tmp_path / "two.csv"
        frame = pd.DataFrame({"path": _gallery_paths(catalogue), "label": 1})
        frame.to_csv(gallery, index=False)
    elif setup == "no_column":
        gallery = _write_column(tmp_path, _gallery_paths(catalogue))
        options = ["--image-column", "image"]
    elif setup == "empty_csv":
        gallery = tmp_path / "empty.csv"
        gallery.write_text("")
    elif setup == "missing":
        gallery = tmp_path / "nothing.csv"
    elif setup == "empty_folder":
        gallery = tmp_path / "empty"
        gallery.mkdir()
        (gallery / "readme.txt").write_text("no images")
    elif setup == "bad_plot":
        options = ["--plot", str(tmp_path / "grid.gif")]
    elif setup == "bad_device":
        options = ["--device", "bogus"]
    else:
        output = tmp_path / "results.txt"
    assert _search(model_path, gallery, catalogue / "queries", output, *options) == 2
    _assert_one_line_error(capsys, fragment)
    assert not output.exists()


def test_batch_size_and_device_options_are_applied(model_path, catalogue, tmp_path,
                                                   batch_sizes):
    # Copies: new files, so that no embedding comes from the cache.
    gallery = tmp_path / "gallery"
    shutil.copytree(catalogue / "gallery", gallery)
    assert _search(model_path, gallery, gallery, tmp_path / "results.csv", "--n-neighbors", "1",
                   "--batch-size", "3", "--device", "cpu") == 0
    assert batch_sizes and set(batch_sizes) == {3}


def test_help_describes_both_commands(capsys):
    for name, options in (("search", ["--gallery", "--query", "--n-neighbors", "--plot"]),
                          ("dedup", ["--images", "--threshold", "--n-neighbors"])):
        assert main([name, "--help"]) == 0
        out = capsys.readouterr().out
        for option in [*options, "--model", "--image-column", "--on-error", "--device"]:
            assert option in out, (name, option)
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "search" in out and "dedup" in out


def test_a_cuda_device_on_a_machine_without_one_fails_with_one_line(model_path, catalogue,
                                                                    tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    assert main(["dedup", "--model", str(model_path), "--images", str(catalogue / "gallery"),
                 "--output", str(tmp_path / "duplicates.csv"), "--device", "cuda"]) == 2
    _assert_one_line_error(capsys, "--device 'cuda': this machine has no CUDA device")
