"""``index``, ``search --index``, ``--backbone``: a saved catalogue that grows, no training run."""

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from numpy.testing import assert_allclose
from PIL import Image

from sklearn_imgpair import (
    ImageEmbedder,
    ImageNeighbors,
    create_backbone,
)
from sklearn_imgpair.__main__ import main

from conftest import TINY_IMAGE_SIZE, TINY_SWIN, go_offline

MODEL = "swin_tiny_patch4_window7_224"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A checkpoint of the tiny Swin: the --weights-path of a pretrained --backbone."""
    torch.manual_seed(1)
    backbone = create_backbone(MODEL, image_size=TINY_IMAGE_SIZE, model_kwargs=dict(TINY_SWIN))
    path = tmp_path_factory.mktemp("weights") / "tiny_swin.pth"
    torch.save(backbone.state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def backbone(weights):
    """The options of the tiny pretrained backbone."""
    return ["--backbone", MODEL, "--weights-path", weights, "--image-size",
            str(TINY_IMAGE_SIZE), "--model-kwargs", json.dumps(TINY_SWIN)]


@pytest.fixture(scope="module")
def sources(image_pairs):
    """Sixteen distinct image files of the fixture: twelve for a catalogue, four queries."""
    return sorted(dict.fromkeys(image_pairs[0].ravel()))[:16]


def _copy(paths, folder):
    """Copies of ``paths`` in ``folder``: new files, whose vectors no cache holds."""
    folder.mkdir(parents=True, exist_ok=True)
    return [str(shutil.copy(path, folder / f"{index:02d}.png")) for index, path in
            enumerate(paths)]


def _run(*argv):
    return main([*map(str, argv), "--quiet"])


def _one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    assert err.startswith("sklearn-imgpair: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


def _embedder(weights):
    return ImageEmbedder(MODEL, weights_path=weights, image_size=TINY_IMAGE_SIZE,
                         model_kwargs=dict(TINY_SWIN)).fit()


def test_index_then_search_index_embeds_the_queries_only(backbone, weights, sources, tmp_path,
                                                         decode_counts, capsys):
    gallery = _copy(sources[:12], tmp_path / "gallery")
    queries = _copy(sources[12:], tmp_path / "queries")
    index = tmp_path / "catalogue.safetensors"
    assert _run("index", "--images", tmp_path / "gallery", "--output", index, *backbone) == 0
    assert f"Saved the index of 12 images to {index}" in capsys.readouterr().out
    assert set(decode_counts) == set(gallery)
    search = ImageNeighbors.load(index)
    assert search.gallery_.tolist() == gallery and search.match_threshold_ is None
    assert_allclose(search.embeddings_, _embedder(weights).transform(gallery), atol=1e-6)

    decode_counts.clear()
    output = tmp_path / "results.csv"
    assert _run("search", "--index", index, "--query", tmp_path / "queries", "--output",
                output, "--n-neighbors", "3") == 0
    assert set(decode_counts) <= set(queries)  # not one gallery image read again
    written = pd.read_csv(output)
    assert list(written.columns) == ["Image1", "Image2", "rank", "similarity", "distance"]
    distances, indices = search.kneighbors(queries, n_neighbors=3)
    assert written["Image2"].tolist() == np.asarray(gallery)[indices.ravel()].tolist()
    assert_allclose(written["similarity"], 1 - distances.ravel(), atol=1e-6)
    assert_allclose(written["similarity"], 1 - written["distance"], atol=1e-12)

    # The same table as embedding the gallery now with the same backbone.
    again = tmp_path / "again.csv"
    assert _run("search", "--gallery", tmp_path / "gallery", "--query", tmp_path / "queries",
                "--output", again, "--n-neighbors", "3", *backbone) == 0
    pd.testing.assert_frame_equal(pd.read_csv(again), written, atol=1e-6)


def test_an_index_of_a_model_keeps_its_match_probabilities(model_path, model, sources,
                                                           tmp_path):
    gallery = _copy(sources[:12], tmp_path / "gallery")
    index = tmp_path / "catalogue.safetensors"
    assert _run("index", "--images", tmp_path / "gallery", "--output", index, "--model",
                model_path) == 0
    output = tmp_path / "results.csv"
    # --model may be given again: it is the network of the index.
    assert _run("search", "--index", index, "--query", tmp_path / "gallery", "--output",
                output, "--n-neighbors", "2", "--min-proba", "0", "--model", model_path) == 0
    written = pd.read_csv(output)
    assert list(written.columns) == ["Image1", "Image2", "rank", "probability", "distance"]
    proba, indices = ImageNeighbors(classifier=model).fit(gallery).kneighbors_proba(
        gallery, n_neighbors=2)
    assert written["Image2"].tolist() == np.asarray(gallery)[indices.ravel()].tolist()
    assert_allclose(written["probability"], proba.ravel(), rtol=1e-5)


def test_append_embeds_only_what_the_index_lacks(backbone, weights, sources, tmp_path,
                                                 decode_counts, capsys):
    gallery = _copy(sources[:12], tmp_path / "gallery")
    index = tmp_path / "catalogue.safetensors"
    first = tmp_path / "first.csv"
    pd.DataFrame({"path": gallery[:8]}).to_csv(first, index=False)
    assert _run("index", "--images", first, "--output", index, *backbone) == 0
    decode_counts.clear()
    capsys.readouterr()
    # The whole folder: eight images are in the index already, without --backbone.
    assert _run("index", "--images", tmp_path / "gallery", "--output", index, "--append") == 0
    assert set(decode_counts) == set(gallery[8:])
    out = capsys.readouterr().out
    assert ("Embedded 4 images (0 of them changed since they were indexed) and reused 8 "
            "already in the index, unchanged.") in out
    assert "Saved the index of 12 images" in out
    grown = ImageNeighbors.load(index)
    assert grown.gallery_.tolist() == gallery
    assert_allclose(grown.embeddings_, _embedder(weights).transform(gallery), atol=1e-6)

    # One file changed since: embedded again; its old row removed, the new one at the end.
    Image.open(gallery[1]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(gallery[1])
    os.utime(gallery[1], ns=(1, 1))
    decode_counts.clear()
    assert _run("index", "--images", tmp_path / "gallery", "--output", index, "--append",
                *backbone) == 0
    assert set(decode_counts) == {gallery[1]}
    out = capsys.readouterr().out
    assert "Embedded 1 images (1 of them changed since" in out
    assert "Their old rows were removed, their new ones added at the end." in out
    updated = ImageNeighbors.load(index)
    assert updated.gallery_.tolist() == [*gallery[:1], *gallery[2:], gallery[1]]
    row = updated.gallery_.tolist().index(gallery[1])
    assert_allclose(updated.embeddings_[row], _embedder(weights).transform([gallery[1]])[0],
                    atol=1e-6)

    # Nothing new: nothing embedded, the file untouched.
    before = index.read_bytes()
    assert _run("index", "--images", tmp_path / "gallery", "--output", index, "--append") == 0
    assert "nothing to embed, nothing written" in capsys.readouterr().out
    assert index.read_bytes() == before


def test_index_on_a_dask_cluster_equals_the_local_index(backbone, sources, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    pytest.importorskip("dask.dataframe")
    gallery = _copy(sources[:12], tmp_path / "gallery")
    local, remote = tmp_path / "local.safetensors", tmp_path / "remote.safetensors"
    assert _run("index", "--images", tmp_path / "gallery", "--output", local, *backbone) == 0
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        first = tmp_path / "first.csv"
        pd.DataFrame({"path": gallery[:5]}).to_csv(first, index=False)
        assert _run("index", "--images", first, "--output", remote, "--dask",
                    cluster.scheduler_address, *backbone) == 0
        assert _run("index", "--images", tmp_path / "gallery", "--output", remote, "--append",
                    "--dask", cluster.scheduler_address) == 0
    expected, built = ImageNeighbors.load(local), ImageNeighbors.load(remote)
    assert built.gallery_.tolist() == expected.gallery_.tolist() == gallery
    assert_allclose(built.embeddings_, expected.embeddings_, atol=1e-6)
    # The workers ran on the CPU; the file runs where the user asked, by default auto.
    assert built.embedder_.get_params()["device"] == "auto"


def test_a_faiss_index_grows_and_keeps_its_kind(backbone, sources, tmp_path, capsys):
    pytest.importorskip("faiss")
    gallery = _copy(sources[:12], tmp_path / "gallery")
    first = tmp_path / "first.csv"
    pd.DataFrame({"path": gallery[:6]}).to_csv(first, index=False)
    index = tmp_path / "catalogue.safetensors"
    assert _run("index", "--images", first, "--output", index, "--faiss-index", "flat",
                *backbone) == 0
    assert _run("index", "--images", tmp_path / "gallery", "--output", index, "--append") == 0
    search = ImageNeighbors.load(index)
    assert (search.algorithm, search.faiss_index) == ("faiss", "flat")
    exact = ImageNeighbors(search.embedder_).fit(gallery, embeddings=search.embeddings_)
    assert_allclose(search.kneighbors(n_neighbors=3)[0], exact.kneighbors(n_neighbors=3)[0],
                    atol=1e-5)
    capsys.readouterr()
    before = index.read_bytes()
    assert _run("index", "--images", tmp_path / "gallery", "--output", index, "--append",
                "--algorithm", "brute") == 2
    _one_line_error(capsys, f"--append: '{index}' is a faiss flat index")
    assert index.read_bytes() == before


def test_embed_with_a_backbone_writes_its_vectors(backbone, weights, sources, tmp_path):
    output = tmp_path / "vectors.npy"
    folder = tmp_path / "images"
    paths = _copy(sources[:4], folder)
    assert _run("embed", "--images", folder, "--output", output, *backbone) == 0
    assert_allclose(np.load(output), _embedder(weights).transform(paths), atol=1e-6)


def test_verbose_shows_the_embedding_bar_and_quiet_none(backbone, sources, tmp_path, capsys):
    _copy(sources[:4], tmp_path / "images")
    command = ["index", "--images", str(tmp_path / "images"), "--output",
               str(tmp_path / "index.safetensors"), *backbone]
    assert main([*command, "-v"]) == 0
    assert "Embedding" in capsys.readouterr().err
    assert main([*command, "-q"]) == 0
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------
# dedup
# ----------------------------------------------------------------------

def test_dedup_verbose_shows_the_hashing_and_embedding_bars(model_path, sources, tmp_path,
                                                            capsys):
    paths = _copy(sources[:4], tmp_path / "images")
    shutil.copy(paths[0], tmp_path / "images" / "copy.png")
    command = ["dedup", "--images", str(tmp_path / "images"), "--output",
               str(tmp_path / "duplicates.csv"), "--model", str(model_path)]
    assert main([*command, "-v"]) == 0
    err = capsys.readouterr().err
    assert "Hashing" in err and "Embedding" in err
    assert main([*command, "-q"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("network", ["backbone", "model"])
def test_dedup_index_equals_dedup_images_without_embedding(network, backbone, model_path,
                                                           sources, tmp_path, decode_counts,
                                                           capsys):
    options = backbone if network == "backbone" else ["--model", str(model_path)]
    gallery = _copy(sources[:12], tmp_path / "gallery")
    shutil.copy(gallery[0], tmp_path / "gallery" / "zz_copy.png")  # an exact copy
    index = tmp_path / "catalogue.safetensors"
    assert _run("index", "--images", tmp_path / "gallery", "--output", index, *options) == 0
    threshold = "0.95" if network == "backbone" else "0.6"
    from_images, from_index = tmp_path / "images.csv", tmp_path / "index.csv"
    assert _run("dedup", "--images", tmp_path / "gallery", "--output", from_images,
                "--threshold", threshold, "--keep", "first", *options) == 0
    decode_counts.clear()
    capsys.readouterr()
    assert _run("dedup", "--index", index, "--output", from_index, "--threshold", threshold,
                "--keep", "first") == 0
    assert not decode_counts
    out = capsys.readouterr().out
    assert ("1 exact copies found by hash (1 byte-identical files, 0 with identical pixels), "
            "none to embed") in out
    written = pd.read_csv(from_index)
    column = "similarity" if network == "backbone" else "probability"
    assert list(written.columns) == ["Image1", "Image2", column, "group"]
    assert [gallery[0], str(tmp_path / "gallery" / "zz_copy.png"), 1.0] in (
        written[["Image1", "Image2", column]].values.tolist())
    pd.testing.assert_frame_equal(written, pd.read_csv(from_images), atol=1e-6)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "index_remove.csv"),
                                  pd.read_csv(tmp_path / "images_remove.csv"), atol=1e-6)


def test_dedup_with_a_backbone_groups_by_cosine_similarity(backbone, weights, sources,
                                                           tmp_path, capsys):
    gallery = _copy(sources[:12], tmp_path / "gallery")
    vectors = _embedder(weights).transform(gallery)
    cosines = vectors @ vectors.T
    threshold = float(np.quantile(cosines[np.triu_indices(12, 1)], 0.9))
    output = tmp_path / "duplicates.csv"
    assert _run("dedup", "--images", tmp_path / "gallery", "--output", output, "--threshold",
                threshold, *backbone) == 0
    written = pd.read_csv(output)
    first, second = np.triu_indices(12, 1)
    above = {(gallery[i], gallery[j]) for i, j in zip(first, second)
             if cosines[i, j] > threshold}
    assert set(zip(written["Image1"], written["Image2"])) == above
    assert f"at cosine similarity threshold {threshold:g}" in capsys.readouterr().out


# ----------------------------------------------------------------------
# bad input: one line, nothing written
# ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def backbone_index(backbone, sources, tmp_path_factory):
    """An index of twelve images built with the tiny backbone; tests must not change it."""
    folder = tmp_path_factory.mktemp("indexed")
    _copy(sources[:12], folder / "gallery")
    index = folder / "catalogue.safetensors"
    assert _run("index", "--images", folder / "gallery", "--output", index, *backbone) == 0
    return index


@pytest.mark.parametrize("command", ["search", "dedup", "append"])
def test_an_index_of_another_network_is_refused(command, backbone_index, model_path, sources,
                                                tmp_path, capsys):
    index = tmp_path / "catalogue.safetensors"
    shutil.copy(backbone_index, index)
    before = index.read_bytes()
    output = tmp_path / "out.csv"
    _copy(sources[12:], tmp_path / "more")
    argv = {"search": ["search", "--index", index, "--query", tmp_path / "more", "--output",
                       output],
            "dedup": ["dedup", "--index", index, "--output", output],
            "append": ["index", "--images", tmp_path / "more", "--output", index, "--append"]}
    assert _run(*argv[command], "--model", model_path) == 2
    option = "--output" if command == "append" else "--index"
    _one_line_error(capsys, f"{option} '{index}' was built with another network than --model "
                            f"'{model_path}'")
    assert not output.exists() and index.read_bytes() == before


@pytest.mark.parametrize("content", ["model", "random", "missing", "folder"])
def test_a_file_that_is_no_index_is_refused(content, model_path, sources, tmp_path, capsys):
    index = tmp_path / "catalogue.safetensors"
    if content == "model":
        shutil.copy(model_path, index)
    elif content == "random":
        index.write_bytes(os.urandom(300))
    elif content == "folder":
        index.mkdir()
    output = tmp_path / "out.csv"
    _copy(sources[:1], tmp_path / "queries")
    assert _run("search", "--index", index, "--query", tmp_path / "queries", "--output",
                output) == 2
    fragment = ("does not exist; build it with 'sklearn-imgpair index'"
                if content in ("missing", "folder") else
                "is not a search file written by 'sklearn-imgpair index'")
    _one_line_error(capsys, f"--index '{index}' {fragment}")
    assert not output.exists()


def test_append_onto_a_missing_file_writes_nothing(backbone, sources, tmp_path, capsys):
    _copy(sources[:2], tmp_path / "images")
    index = tmp_path / "catalogue.safetensors"
    assert _run("index", "--images", tmp_path / "images", "--output", index, "--append",
                *backbone) == 2
    _one_line_error(capsys, f"--append: --output '{index}' does not exist")
    assert not index.exists()


def test_a_failed_append_leaves_the_index_byte_identical(backbone_index, sources, tmp_path,
                                                         capsys):
    index = tmp_path / "catalogue.safetensors"
    shutil.copy(backbone_index, index)
    before = index.read_bytes()
    broken = tmp_path / "new" / "broken.png"
    _copy(sources[12:], broken.parent)
    broken.write_bytes(b"\x89PNG not really")
    assert _run("index", "--images", broken.parent, "--output", index, "--append") == 2
    _one_line_error(capsys, f"Cannot read image '{broken}'")
    assert index.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["catalogue.safetensors", "new"]  # no partial file


@pytest.mark.parametrize("options, fragment", [
    (["--min-proba", "0.5"], "--min-proba needs a model's match probability"),
    (["--device", "bogus"], "--device: device='bogus' is not a torch device"),
    (["--precision", "fp16", "--device", "cpu"], "--precision fp16: precision='fp16' needs a "
                                                 "CUDA device"),
])
def test_search_options_that_do_not_fit_the_network_fail(options, fragment, backbone_index,
                                                         sources, tmp_path, capsys):
    output = tmp_path / "out.csv"
    _copy(sources[:1], tmp_path / "queries")
    assert _run("search", "--index", backbone_index, "--query", tmp_path / "queries",
                "--output", output, *options) == 2
    _one_line_error(capsys, fragment)
    assert not output.exists()


def test_min_similarity_goes_with_a_backbone_only(model_path, sources, tmp_path, capsys,
                                                  decode_counts):
    folder = tmp_path / "images"
    _copy(sources[:3], folder)
    output = tmp_path / "out.csv"
    assert _run("search", "--gallery", folder, "--query", folder, "--output", output,
                "--model", model_path, "--min-similarity", "0.5", "--n-neighbors", "1") == 2
    _one_line_error(capsys, "--min-similarity is for a --backbone")
    assert not output.exists() and not decode_counts  # before any work


@pytest.mark.parametrize("argv, fragment", [
    (["index", "--images", "IMAGES", "--output", "OUT"], "index needs the network"),
    (["index", "--images", "IMAGES", "--output", "OUT", "--weights-path", "w.pth"],
     "--weights-path describe a --backbone"),
    (["search", "--gallery", "IMAGES", "--query", "IMAGES", "--output", "OUT.csv",
      "--n-neighbors", "1"],
     "search --gallery needs the network"),
    (["dedup", "--images", "IMAGES", "--output", "OUT.csv"], "dedup --images needs the network"),
    (["index", "--images", "IMAGES", "--output", "OUT", "--backbone", "not_a_model"],
     "--backbone not_a_model: Unknown timm model 'not_a_model'"),
])
def test_commands_need_one_network(argv, fragment, sources, tmp_path, capsys):
    _copy(sources[:2], tmp_path / "images")
    output = tmp_path / "out"
    argv = [str(tmp_path / "images") if arg == "IMAGES" else
            str(output) + arg[3:] if arg.startswith("OUT") else arg for arg in argv]
    assert _run(*argv) == 2
    _one_line_error(capsys, fragment)
    assert not os.path.exists(argv[argv.index("--output") + 1])


def test_a_backbone_out_of_reach_offline_is_one_line(monkeypatch, sources, tmp_path, capsys):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    go_offline(monkeypatch)
    _copy(sources[:2], tmp_path / "images")
    output = tmp_path / "out.npy"
    assert _run("embed", "--images", tmp_path / "images", "--output", output, "--backbone",
                MODEL) == 2
    _one_line_error(capsys, f"--backbone {MODEL}: Pretrained weights for '{MODEL}' are not in "
                            "the local cache", "On the command line: --weights-path FILE.")
    assert not output.exists()


@pytest.mark.parametrize("command", ["fit", "evaluate", "predict", "embed", "index", "search",
                                     "dedup"])
def test_every_command_that_runs_the_network_takes_device_and_precision(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "--device DEVICE" in out and "--precision {auto,fp32,bf16,fp16}" in out


@pytest.mark.parametrize("command", ["evaluate", "predict", "embed"])
def test_a_precision_the_device_cannot_do_fails_before_any_work(command, model_path,
                                                                 synthetic_pairs, tmp_path,
                                                                 capsys):
    data = tmp_path / "pairs.csv"
    synthetic_pairs[1].head(4).to_csv(data, index=False)
    output = tmp_path / ("out.npy" if command == "embed" else "out.csv")
    argv = [command, "--model", model_path, "--precision", "fp16", "--device", "cpu",
            "--images" if command == "embed" else "--data", data]
    argv += [] if command == "evaluate" else ["--output", output]
    assert _run(*argv) == 2
    _one_line_error(capsys, "--precision fp16: precision='fp16' needs a CUDA device")
    assert not output.exists()


@pytest.mark.filterwarnings("ignore:precision='bf16'")  # emulated on CPUs without bfloat16
def test_precision_is_applied_to_the_loaded_model(model_path, model, synthetic_pairs, tmp_path,
                                                  monkeypatch):
    from sklearn_imgpair._cli import commands

    used = []
    real = commands.load_classifier
    monkeypatch.setattr(commands, "load_classifier",
                        lambda args: used.append(real(args)) or used[-1])
    data = tmp_path / "pairs.csv"
    synthetic_pairs[1].head(4).to_csv(data, index=False)
    output = tmp_path / "out.csv"
    assert _run("predict", "--model", model_path, "--data", data, "--output", output,
                "--precision", "bf16") == 0
    assert [clf.precision for clf in used] == ["bf16"]
    written = pd.read_csv(output)
    expected = model.predict_proba(written[["Image1", "Image2"]].to_numpy(dtype=object))
    assert_allclose(written["probability"], expected[:, 1], atol=0.05)  # close, not equal


RUNNING_HERE = {
    False: "Running on cpu in fp32 (precision auto: this CPU has no bfloat16 instructions)",
    True: "Running on cpu in bf16 (precision auto: this CPU has bfloat16 instructions)",
}


@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize("network", ["backbone", "model", "index", "predict"])
def test_verbose_names_the_device_and_the_precision_that_runs(
        network, native, backbone, backbone_index, model_path, synthetic_pairs, sources,
        tmp_path, capsys, monkeypatch):
    from sklearn_imgpair._nn import device

    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: native)
    images = tmp_path / "images"
    _copy(sources[:2], images)
    if network == "predict":
        data = tmp_path / "pairs.csv"
        synthetic_pairs[1].head(2).to_csv(data, index=False)
        command = ["predict", "--model", model_path, "--data", data]
    else:
        command = ["search", "--query", images, "--n-neighbors", "1", *{
            "backbone": ["--gallery", images, *backbone],
            "model": ["--gallery", images, "--model", model_path],
            "index": ["--index", backbone_index, *backbone]}[network]]
    command = [*map(str, command), "--output", str(tmp_path / "out.csv")]
    # The default: "auto" for a backbone, the model's (here "auto") for a model or an index.
    assert main([*command, "-v"]) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("Running")] == [
        RUNNING_HERE[native]]
    assert main([*command, "--precision", "auto"]) == 0  # without -v, no line
    assert "Running" not in capsys.readouterr().err


def test_search_index_of_a_backbone_writes_a_similarity_report(backbone_index, sources, tmp_path):
    from html.parser import HTMLParser

    queries = _copy(sources[12:14], tmp_path / "queries")
    output, report = tmp_path / "matches.csv", tmp_path / "matches.html"
    assert _run("search", "--index", backbone_index, "--query", tmp_path / "queries",
                "--n-neighbors", "3", "--output", output, "--report", report) == 0
    table = pd.read_csv(output)
    assert "similarity" in table.columns and "probability" not in table.columns
    images = []

    class Images(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "img":
                images.append(dict(attrs)["title"])

    text = report.read_text(encoding="utf-8")
    Images().feed(text)
    for query in queries:  # each query, then its three matches, each drawn
        shown = images[images.index(query):][:4]
        assert shown[1:] == table.loc[table["Image1"] == query, "Image2"].tolist()
    assert "above threshold" not in text  # a cosine has no match threshold to mark
    assert "<td>threshold (similarity)</td><td>-</td>" in text


def test_append_keeps_the_row_of_a_file_gone_since_and_names_it(backbone, weights, sources,
                                                                 tmp_path, capsys):
    gallery = _copy(sources[:12], tmp_path / "gallery")
    index = tmp_path / "catalogue.safetensors"
    first, every = tmp_path / "first.csv", tmp_path / "every.csv"
    pd.DataFrame({"path": gallery[:8]}).to_csv(first, index=False)
    pd.DataFrame({"path": gallery}).to_csv(every, index=False)
    assert _run("index", "--images", first, "--output", index, *backbone) == 0
    os.remove(gallery[2])  # indexed, then deleted: neither new nor changed
    capsys.readouterr()
    assert _run("index", "--images", every, "--output", index, "--append", "--on-error",
                "warn") == 0
    captured = capsys.readouterr()
    assert ("Embedded 4 images (0 of them changed since they were indexed) and reused 7 "
            "already in the index, unchanged.") in captured.out
    assert captured.err.count(gallery[2]) == 1, captured.err
    assert "those in the index keep their rows" in captured.err
    grown = ImageNeighbors.load(index)
    assert grown.gallery_.tolist() == gallery  # its row stays, where it was
    assert_allclose(grown.embeddings_[8:], _embedder(weights).transform(gallery[8:]), atol=1e-6)

    # Nothing else new: nothing written, the missing file named again.
    before = index.read_bytes()
    assert _run("index", "--images", every, "--output", index, "--append", "--on-error",
                "warn") == 0
    captured = capsys.readouterr()
    assert ("All 11 images of " in captured.out
            and "that still exist are in the index already" in captured.out)
    assert captured.err.count(gallery[2]) == 1 and index.read_bytes() == before


def test_quiet_silences_an_index_saved_by_a_verbose_run(backbone_index, sources, tmp_path,
                                                        capsys):
    verbose = ImageNeighbors.load(backbone_index, mmap_mode=None)
    verbose.set_params(verbose=1)
    verbose.embedder_.set_params(verbose=1)
    index = verbose.save(tmp_path / "verbose.safetensors")
    assert ImageNeighbors.load(index).embedder_.verbose == 1
    _copy(sources[12:], tmp_path / "queries")
    capsys.readouterr()
    for argv in (["search", "--index", index, "--query", tmp_path / "queries", "--output",
                  tmp_path / "results.csv", "--n-neighbors", "3"],
                 ["dedup", "--index", index, "--output", tmp_path / "duplicates.csv"]):
        assert _run(*argv) == 0  # with --quiet
        assert capsys.readouterr().err == ""
