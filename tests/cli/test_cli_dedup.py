"""``dedup``'s exact copies, groups, linkage and remove list, and ``search --min-proba``."""

import os
import shutil

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from sklearn_imgpair import find_duplicates
from sklearn_imgpair.__main__ import main
from sklearn_imgpair._cli.copies import exact_copies


@pytest.fixture(scope="module")
def images(image_pairs):
    """Twenty distinct image files of the fixture, in sorted order."""
    return sorted(dict.fromkeys(image_pairs[0].ravel()))[:20]


def _dedup(model_path, images, output, *options):
    return main(["dedup", "--model", str(model_path), "--images", str(images),
                 "--output", str(output), "--quiet", *options])


def _write_column(folder, paths):
    csv = folder / "images.csv"
    pd.DataFrame({"path": [str(path) for path in paths]}).to_csv(csv, index=False)
    return csv


def _partition(groups):
    """The sets of indices of each group number (-1, no group, left out)."""
    groups = np.asarray(groups)
    return {frozenset(np.flatnonzero(groups == number)) for number in set(groups) - {-1}}


def test_exact_copies_are_found_by_hash_among_files_of_one_size(tmp_path):
    (tmp_path / "a").write_bytes(b"same bytes")
    (tmp_path / "b").write_bytes(b"other byte")  # same size, other bytes
    (tmp_path / "c").write_bytes(b"same bytes")
    (tmp_path / "d").write_bytes(b"")
    (tmp_path / "e").write_bytes(b"")  # empty files are unreadable images, not copies
    paths = [str(tmp_path / name) for name in "abcde"] + [str(tmp_path / "missing")]
    assert exact_copies(paths).tolist() == [0, 1, 0, 3, 4, 5]


def test_copies_join_their_original_without_being_decoded(model_path, images, tmp_path,
                                                          monkeypatch, capsys):
    import sklearn_imgpair._images.decode as decode

    folder = tmp_path / "photos"
    (folder / "copies").mkdir(parents=True)
    originals = [str(shutil.copy(image, folder / f"{index:02d}.png"))
                 for index, image in enumerate(images[:5])]
    copies = [str(shutil.copy(originals[0], folder / "copies" / name))
              for name in ("a.png", "b.png")]
    copies.append(str(shutil.copy(originals[3], folder / "copies" / "c.png")))
    decoded = []
    read_pixels = decode.read_pixels

    def counting(source, image_size):
        decoded.append(os.fspath(source))
        return read_pixels(source, image_size)

    monkeypatch.setattr(decode, "read_pixels", counting)
    output = tmp_path / "duplicates.csv"
    assert _dedup(model_path, folder, output, "--threshold", "1") == 0
    # Each original decoded (once, or once per network that reads it); no copy at all.
    assert set(decoded) == set(originals)
    out = capsys.readouterr().out
    assert ("3 exact copies found by hash (3 byte-identical files, 0 with identical pixels), "
            "5 images to embed") in out
    assert "Found 3 duplicate pairs in 2 groups (5 images) at threshold 1, 3 of them " in out
    written = pd.read_csv(output)
    assert list(written.columns) == ["Image1", "Image2", "probability", "group"]
    # Input order: the copies/ sub-folder sorts after the other files.
    assert written.values.tolist() == [[originals[0], copies[0], 1.0, 0],
                                       [originals[0], copies[1], 1.0, 0],
                                       [originals[3], copies[2], 1.0, 1]]


def _single_linkage_cuts(pairs, n_images):
    """Thresholds well away from every probability, and the groups single linkage makes there."""
    values = np.sort(pairs["probability"].to_numpy())[::-1]
    for high, low in zip(values[:-1], values[1:]):
        if high - low < 1e-3:  # well away from every probability, whatever the rounding
            continue
        threshold = float(high + low) / 2
        above = pairs[pairs["probability"] > threshold]
        graph = coo_matrix((np.ones(len(above)), (above["first"], above["second"])),
                           shape=(n_images, n_images))
        yield threshold, len(above), connected_components(graph, directed=False)[1]


def _threshold_that_splits_a_group(pairs, n_images):
    """A threshold at which a connected component of the pairs above it is not a clique."""
    for threshold, n_above, components in _single_linkage_cuts(pairs, n_images):
        sizes = np.bincount(components)
        if (sizes * (sizes - 1) // 2).sum() > n_above:
            return threshold, components
    pytest.fail("no threshold splits a group of the fixture's images")


def test_group_column_and_single_against_complete_linkage(model_path, model, images,
                                                          tmp_path):
    pairs = find_duplicates(images, model, threshold=0.0)
    position = {image: index for index, image in enumerate(images)}
    pairs["first"], pairs["second"] = pairs["Image1"].map(position), pairs["Image2"].map(position)
    probability = {(a, b): p for a, b, p in zip(pairs["first"], pairs["second"],
                                                pairs["probability"])}
    threshold, components = _threshold_that_splits_a_group(pairs, len(images))
    csv = _write_column(tmp_path, images)
    groups = {}
    for linkage in ("single", "complete"):
        output = tmp_path / f"{linkage}.csv"
        assert _dedup(model_path, csv, output, "--threshold", repr(threshold),
                      "--linkage", linkage) == 0
        written = pd.read_csv(output)
        assert (written["probability"] > threshold).all()
        first, second = written["Image1"].map(position), written["Image2"].map(position)
        group = np.full(len(images), -1)
        group[first], group[second] = written["group"], written["group"]
        assert (group[first] == group[second]).all()
        assert sorted(set(written["group"])) == list(range(group.max() + 1))
        groups[linkage] = group
    single, complete = groups["single"], groups["complete"]
    sizes = np.bincount(components)
    assert _partition(single) == _partition(np.where(sizes[components] > 1, components, -1))
    for members in _partition(complete):
        members = sorted(members)
        assert all(probability[a, b] > threshold
                   for i, a in enumerate(members) for b in members[i + 1:])
    assert _partition(single) != _partition(complete)
    assert len(_partition(complete)) > len(_partition(single))


def _write_png(path, size, *, noise=False, colour=(200, 30, 30)):
    width, height = size
    if noise:
        pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    else:
        pixels = np.full((height, width, 3), colour, dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path)


@pytest.fixture
def keep_folder(tmp_path):
    """Four files in one group at threshold 0: sizes, bytes and times chosen by hand."""
    folder = tmp_path / "keep"
    folder.mkdir()
    small = _write_png(folder / "small.png", (16, 16))
    flat = _write_png(folder / "flat.png", (40, 30))  # as many pixels as noisy,
    noisy = _write_png(folder / "noisy.png", (30, 40), noise=True)  # but fewer bytes
    copy = str(shutil.copy(small, folder / "copy.png"))
    assert os.path.getsize(noisy) > os.path.getsize(flat)
    for age, path in enumerate([flat, copy, noisy, small]):  # flat is the newest
        os.utime(path, ns=(10**18 - age * 10**9, 10**18 - age * 10**9))
    return [small, flat, noisy, copy]


@pytest.mark.parametrize("policy, kept", [("first", 0), ("largest", 2), ("newest", 1)])
def test_keep_lists_every_file_but_the_kept_one_and_deletes_nothing(
        policy, kept, model_path, keep_folder, tmp_path, capsys):
    csv = _write_column(tmp_path, keep_folder)  # input order: small, flat, noisy, copy
    output = tmp_path / "out" / "duplicates.csv"
    assert _dedup(model_path, csv, output, "--threshold", "0", "--keep", policy) == 0
    remove = pd.read_csv(tmp_path / "out" / "duplicates_remove.csv")
    assert list(remove.columns) == ["Image1", "Image2", "probability", "group"]
    expected = [path for index, path in enumerate(keep_folder) if index != kept]
    assert remove["Image1"].tolist() == expected
    assert (remove["Image2"] == keep_folder[kept]).all() and (remove["group"] == 0).all()
    # The copy of small is a copy of the kept file, or of small when small goes too.
    copy_row = remove.index[remove["Image1"] == keep_folder[3]][0]
    assert remove["probability"][copy_row] == (1.0 if kept == 0 else remove["probability"][0])
    assert ((remove["probability"] > 0) & (remove["probability"] <= 1)).all()
    assert all(os.path.exists(path) for path in keep_folder)
    assert "nothing was deleted" in capsys.readouterr().out


def test_no_remove_list_without_keep(model_path, keep_folder, tmp_path):
    output = tmp_path / "duplicates.csv"
    assert _dedup(model_path, keep_folder[0].rsplit(os.sep, 1)[0], output,
                  "--threshold", "0") == 0
    assert output.exists() and not (tmp_path / "duplicates_remove.csv").exists()


def test_search_min_proba_leaves_out_the_matches_below_it(model_path, images, tmp_path):
    csv = _write_column(tmp_path, images)
    every, kept = tmp_path / "every.csv", tmp_path / "kept.csv"
    base = ["search", "--model", str(model_path), "--gallery", str(csv), "--query", str(csv),
            "--n-neighbors", "5", "--quiet"]
    assert main([*base, "--output", str(every)]) == 0
    every = pd.read_csv(every)
    # Halfway between two probabilities, away from float rounding.
    values = np.sort(every["probability"].unique())
    middle = len(values) // 2
    min_proba = float(values[middle - 1] + values[middle]) / 2
    assert main([*base, "--output", str(kept), "--min-proba", repr(min_proba)]) == 0
    kept = pd.read_csv(kept)
    expected = every[every["probability"] >= min_proba].reset_index(drop=True)
    assert 0 < len(kept) < len(every)
    assert kept[["Image1", "Image2", "rank"]].values.tolist() == (
        expected[["Image1", "Image2", "rank"]].values.tolist())
    assert_allclose(kept["probability"], expected["probability"], rtol=1e-6)


@pytest.mark.parametrize("options, fragment", [
    (["dedup", "--images", "x", "--keep", "biggest"],
     "argument --keep: invalid choice: 'biggest' (choose from 'first', 'largest', 'newest')"),
    (["dedup", "--index", "x", "--keep", "biggest"], "argument --keep: invalid choice"),
    (["dedup", "--index", "x", "--images", "x"],
     "argument --images: not allowed with argument --index"),
    (["search", "--index", "x", "--gallery", "x", "--query", "x"],
     "argument --gallery: not allowed with argument --index"),
    (["search", "--query", "x"], "one of the arguments --gallery --index is required"),
    (["dedup", "--images", "x", "--linkage", "average"], "argument --linkage: invalid choice"),
    (["search", "--gallery", "x", "--query", "x", "--min-proba", "1.5"],
     "argument --min-proba: must be a number from 0 to 1; got '1.5'"),
    (["dedup", "--images", "x", "--threshold", "1.5"],
     "argument --threshold: must be a number from -1 to 1; got '1.5'"),
])
def test_bad_options_fail_with_exit_status_2_and_one_error_line(options, fragment, tmp_path,
                                                                 capsys):
    output = tmp_path / "out.csv"
    assert main([*options, "--model", "m.safetensors", "--output", str(output)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and fragment in errors[0], err
    assert err.endswith(errors[0] + "\n") and not output.exists()


def test_help_lists_the_new_options(capsys):
    assert main(["dedup", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(option in out for option in ("--linkage", "--keep", "_remove.csv"))
    assert main(["search", "--help"]) == 0
    assert "--min-proba" in capsys.readouterr().out


def test_keep_without_duplicates_writes_an_empty_list(model_path, images, tmp_path):
    csv = _write_column(tmp_path, images[:3])
    assert _dedup(model_path, csv, tmp_path / "duplicates.csv", "--threshold", "1",
                  "--keep", "newest") == 0
    remove = pd.read_csv(tmp_path / "duplicates_remove.csv")
    assert list(remove.columns) == ["Image1", "Image2", "probability", "group"]
    assert remove.empty


def _threshold_that_chains_past_the_first(pairs, n_images):
    """A threshold at which single linkage groups images that do not match their group's first.

    Returns the threshold and how many members of those groups score at or
    below it with the first member of their group.
    """
    probability = {frozenset(pair): p for *pair, p in
                   zip(pairs["first"], pairs["second"], pairs["probability"])}
    for threshold, _, components in _single_linkage_cuts(pairs, n_images):
        n_indirect = 0
        for component in np.unique(components):
            first, *others = np.flatnonzero(components == component)
            n_indirect += sum(probability[frozenset((first, other))] <= threshold
                              for other in others)
        if n_indirect:
            return threshold, n_indirect
    pytest.fail("no threshold chains a group past its first image")


def test_keep_lists_only_the_members_that_match_the_kept_file_directly(
        model_path, model, images, tmp_path, capsys):
    pairs = find_duplicates(images, model, threshold=0.0)
    position = {image: index for index, image in enumerate(images)}
    pairs["first"], pairs["second"] = pairs["Image1"].map(position), pairs["Image2"].map(position)
    probability = {frozenset(pair): p for *pair, p in
                   zip(pairs["Image1"], pairs["Image2"], pairs["probability"])}
    threshold, n_indirect = _threshold_that_chains_past_the_first(pairs, len(images))
    csv = _write_column(tmp_path, images)
    output = tmp_path / "duplicates.csv"
    capsys.readouterr()
    assert _dedup(model_path, csv, output, "--threshold", repr(threshold), "--keep",
                  "first") == 0
    out = capsys.readouterr().out
    remove, written = pd.read_csv(tmp_path / "duplicates_remove.csv"), pd.read_csv(output)
    # No row of the list scores at or below the threshold with its kept file.
    assert len(remove) and (remove["probability"] > threshold).all()
    assert_allclose(remove["probability"],
                    [probability[frozenset(pair)] for pair in zip(remove["Image1"],
                                                                  remove["Image2"])], atol=1e-5)
    members = set(written["Image1"]) | set(written["Image2"])
    n_groups = written["group"].nunique()
    assert len(remove) + n_indirect == len(members) - n_groups
    assert (f"{n_indirect} members of chained groups do not match the kept file directly and "
            "are not listed") in out


def test_keep_largest_never_keeps_a_file_gone_since_it_was_indexed(model_path, keep_folder,
                                                                    tmp_path, capsys):
    small, flat, noisy, copy = keep_folder
    index = tmp_path / "catalogue.safetensors"
    assert main(["index", "--model", str(model_path), "--images", str(_write_column(
        tmp_path, keep_folder)), "--output", str(index), "--quiet"]) == 0
    os.remove(noisy)  # the largest: the index is older than the folder
    capsys.readouterr()
    output = tmp_path / "duplicates.csv"
    assert main(["dedup", "--index", str(index), "--output", str(output), "--threshold", "0",
                 "--keep", "largest", "--quiet"]) == 0
    remove = pd.read_csv(tmp_path / "duplicates_remove.csv")
    assert remove["Image1"].tolist() == [small, noisy, copy]  # in input order
    assert (remove["Image2"] == flat).all()  # the largest file still there
    assert output.exists()
    err = capsys.readouterr().err
    assert err.count(noisy) == 1 and "never the file that --keep largest keeps" in err, err


@pytest.mark.parametrize("threshold", ["-0.5", "-1"])
def test_a_negative_threshold_with_a_model_fails_before_any_work(threshold, model_path, images,
                                                                  tmp_path, capsys):
    output = tmp_path / "duplicates.csv"
    csv = _write_column(tmp_path, images[:3])
    assert _dedup(model_path, csv, output, "--threshold", threshold) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"sklearn-imgpair: error: --threshold {float(threshold):g}: with a "
                            "model the threshold is a match probability, from 0 to 1 (a cosine "
                            "similarity, from -1 to 1, is for a --backbone).\n")
    assert "Looking for duplicates" not in captured.out and not output.exists()
