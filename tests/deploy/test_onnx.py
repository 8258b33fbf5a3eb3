"""ONNX export of both estimators and the torch-free runtime, OnnxImageMatcher."""

import contextlib
import io
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from PIL import Image
from sklearn.exceptions import NotFittedError

import sklearn_imgpair
from sklearn_imgpair import ImageEmbedder, ImagePairClassifier, UnreadableImageWarning
from sklearn_imgpair.__main__ import main
from sklearn_imgpair._cli.export import load_estimator
from sklearn_imgpair._deploy.onnx_format import (
    ONNX_FORMAT,
    ONNX_FORMAT_VERSION,
    encode_metadata,
    read_metadata,
)
from sklearn_imgpair._optional import import_optional

from conftest import TINY_IMAGE_SIZE, TINY_SWIN

onnxruntime = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

from sklearn_imgpair.onnx import OnnxImageMatcher  # noqa: E402  (after the skips)

# The tests marked slow use exported files: each export takes seconds (torch.export traces
# the network, then onnxruntime checks the graph).


@pytest.fixture(scope="module")
def clf_onnx(fitted_clf, tmp_path_factory):
    """The module's fitted classifier exported with the default opset; read only."""
    return fitted_clf.export_onnx(tmp_path_factory.mktemp("onnx") / "clf.onnx")


@pytest.fixture(scope="module")
def embedder():
    return ImageEmbedder(pretrained=False, image_size=TINY_IMAGE_SIZE,
                         model_kwargs=dict(TINY_SWIN), cache=False).fit()


@pytest.fixture(scope="module")
def embedder_onnx(embedder, tmp_path_factory):
    """The embedder exported at opset 18; read only."""
    return embedder.export_onnx(tmp_path_factory.mktemp("onnx") / "embedder.onnx", opset=18)


@pytest.fixture(scope="module")
def cli_int8(fitted_clf, tmp_path_factory):
    """``sklearn-imgpair export --quantize int8`` of the classifier: (path, status, stdout)."""
    folder = tmp_path_factory.mktemp("cli")
    model = fitted_clf.save(folder / "model.safetensors")
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        status = main(["export", "--model", model, "--output", str(folder / "model.onnx"),
                       "--quantize", "int8"])
    return str(folder / "model.onnx"), status, output.getvalue()


def _rewrite_metadata(source, target, **changes):
    """Copy an ONNX file with some metadata changed (None removes a key)."""
    model = onnx.load(source)
    props = {entry.key: entry.value for entry in model.metadata_props}
    for key, value in changes.items():
        if value is None:
            props.pop(key, None)
        else:
            props[key] = value
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, target)
    return target


# ----------------------------------------------------------------------
# agreement with the estimators
# ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("n_images", [1, 7])
def test_embeddings_match_the_embedder(embedder, embedder_onnx, image_pairs, n_images):
    X, _ = image_pairs
    paths = X[:, 0][:n_images]
    vectors = OnnxImageMatcher(embedder_onnx).transform(paths)
    expected = embedder.transform(paths)
    assert vectors.shape == expected.shape == (n_images, 32)
    assert vectors.dtype == np.float32
    assert (vectors * expected).sum(axis=1).min() >= 0.9999
    assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("n_pairs", [1, 7])
def test_pairs_match_the_classifier(fitted_clf, clf_onnx, image_pairs, n_pairs):
    X, _ = image_pairs
    X = X[:n_pairs]
    matcher = OnnxImageMatcher(clf_onnx)
    assert_allclose(matcher.predict_proba(X), fitted_clf.predict_proba(X), atol=1e-4)
    assert_allclose(matcher.decision_function(X), fitted_clf.decision_function(X), atol=1e-3)
    assert_array_equal(matcher.predict(X), fitted_clf.predict(X))


@pytest.mark.slow
def test_a_linear_head_exports_and_scores_as_the_classifier(fitted_clf, image_pairs, tmp_path):
    # A head linear in the cosine (uncalibrated, or from an older model file):
    # the graph and the runtime's scoring of embeddings both follow the link.
    clf = pickle.loads(pickle.dumps(fitted_clf))
    clf.module_.head.link = "linear"
    path = clf.export_onnx(tmp_path / "linear.onnx")
    matcher = OnnxImageMatcher(path)
    assert matcher.metadata_["head_link"] == "linear"
    X = image_pairs[0][:7]
    assert_allclose(matcher.predict_proba(X), clf.predict_proba(X), atol=1e-4)
    assert not np.allclose(clf.predict_proba(X), fitted_clf.predict_proba(X), atol=1e-3)
    # A file of the format before head_link (no such key) is read as linear.
    old = _rewrite_metadata(path, tmp_path / "old.onnx", head_link=None)
    assert_allclose(OnnxImageMatcher(old).predict_proba(X), clf.predict_proba(X), atol=1e-4)


@pytest.mark.slow
def test_test_time_flips_export_with_a_dynamic_batch(fitted_clf, image_pairs, tmp_path):
    clf = pickle.loads(pickle.dumps(fitted_clf))
    clf.module_.test_time_flip = True
    matcher = OnnxImageMatcher(clf.export_onnx(tmp_path / "flip.onnx"), batch_size=3)
    for n_pairs in (1, 7):  # batches of 1 to 3 images through one graph
        X = image_pairs[0][:n_pairs]
        assert_allclose(matcher.predict_proba(X), clf.predict_proba(X), atol=1e-4)
    assert not np.allclose(clf.predict_proba(X), fitted_clf.predict_proba(X), atol=1e-4)


@pytest.mark.slow
def test_classifier_file_embeds_as_the_classifier_backbone(fitted_clf, clf_onnx, image_pairs):
    X, _ = image_pairs
    paths = X[:9, 0]  # odd: the second input of the pair graph is padded
    expected = ImageEmbedder(classifier=fitted_clf, cache=False).fit().transform(paths)
    vectors = OnnxImageMatcher(clf_onnx, batch_size=4).transform(paths)
    assert (vectors * expected).sum(axis=1).min() >= 0.9999


def test_the_runtime_batch_size_is_chosen_for_the_provider_and_image_size(
        embedder_onnx, image_pairs, monkeypatch):
    paths = np.unique(image_pairs[0].ravel())
    assert 32 < len(paths) <= 48
    matcher = OnnxImageMatcher(embedder_onnx)
    assert matcher.batch_size == "auto"
    batches = []
    run = matcher._run
    monkeypatch.setattr(matcher, "_run", lambda images: batches.append(len(images)) or run(images))
    vectors = matcher.transform(paths)
    assert batches == [len(paths)]  # inference_batch_size("cpu", 32) is 256: one run, not 32 + n
    batches.clear()
    matcher.batch_size = 16
    assert_allclose(matcher.transform(paths), vectors, atol=1e-5)
    assert batches == [16, 16, len(paths) - 32]


@pytest.mark.slow
def test_pair_graph_outputs(fitted_clf, clf_onnx, image_pairs):
    """Any ONNX runtime gets logits, probabilities and embeddings from the graph alone."""
    from sklearn_imgpair import load_image

    X, _ = image_pairs
    X = X[:7]
    session = onnxruntime.InferenceSession(clf_onnx, providers=["CPUExecutionProvider"])
    assert [(node.name, node.type, node.shape) for node in session.get_inputs()] == [
        (name, "tensor(uint8)", ["N", 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE])
        for name in ("images1", "images2")]
    images = [np.stack([load_image(path, TINY_IMAGE_SIZE).numpy() for path in X[:, column]])
              for column in (0, 1)]
    logits, probabilities, embeddings1, embeddings2 = session.run(
        ["logits", "probabilities", "embeddings1", "embeddings2"],
        {"images1": images[0], "images2": images[1]})
    assert logits.shape == probabilities.shape == (7,)
    assert embeddings1.shape == embeddings2.shape == (7, 32)
    assert_allclose(logits, fitted_clf.decision_function(X), atol=1e-3)
    assert_allclose(probabilities, fitted_clf.predict_proba(X)[:, 1], atol=1e-4)


@pytest.mark.slow
def test_each_distinct_image_is_embedded_once(clf_onnx, image_pairs):
    X, _ = image_pairs
    matcher = OnnxImageMatcher(clf_onnx, batch_size=64)
    fed = []
    run = matcher.session_.run

    def counting_run(outputs, feed):
        fed.append(sum(len(images) for images in feed.values()))
        return run(outputs, feed)

    matcher.session_ = type("Session", (), {"run": staticmethod(counting_run)})()
    pairs = X[:40]
    n_distinct = len(np.unique(pairs.ravel()))
    matcher.predict_proba(pairs)
    assert sum(fed) == n_distinct + n_distinct % 2  # one padding image when odd


@pytest.mark.slow
def test_in_memory_images_read_as_their_files(clf_onnx, image_pairs):
    X, _ = image_pairs
    X = X[:6]
    matcher = OnnxImageMatcher(clf_onnx)
    expected = matcher.predict_proba(X)

    def as_bytes(path):
        with open(path, "rb") as file:
            return file.read()

    readers = [as_bytes, Image.open, lambda path: np.asarray(Image.open(path).convert("RGB"))]
    for read in readers:
        in_memory = [[read(path) for path in row] for row in X]
        assert_allclose(matcher.predict_proba(in_memory), expected, atol=1e-6)
    vectors = matcher.transform([as_bytes(path) for path in X[:, 0]])
    assert_allclose(vectors, matcher.transform(X[:, 0]), atol=1e-6)


@pytest.mark.slow
def test_cells_of_several_images_match_the_classifier(fitted_clf, clf_onnx, image_pairs):
    X, _ = image_pairs
    several = [[[X[row, 0], X[row + 1, 0]], X[row, 1]] for row in range(4)]
    matcher = OnnxImageMatcher(clf_onnx)
    assert_allclose(matcher.predict_proba(several), fitted_clf.predict_proba(several), atol=1e-4)


@pytest.mark.slow
def test_dataframe_input_and_threshold(fitted_clf, clf_onnx, image_pairs):
    X, _ = image_pairs
    frame = pd.DataFrame(X[:10], columns=["Image1", "Image2"])
    matcher = OnnxImageMatcher(clf_onnx)
    proba = matcher.predict_proba(frame)[:, 1]
    matcher.threshold = float(np.median(proba))
    assert_array_equal(matcher.predict(frame), np.where(proba > matcher.threshold, 1, 0))


@pytest.mark.slow
def test_pickling_reloads_the_file_and_keeps_the_threshold(clf_onnx, image_pairs):
    X, _ = image_pairs
    matcher = OnnxImageMatcher(clf_onnx)
    matcher.threshold = 0.25
    copy = pickle.loads(pickle.dumps(matcher))
    assert copy.threshold == 0.25
    assert_allclose(copy.predict_proba(X[:3]), matcher.predict_proba(X[:3]))


# ----------------------------------------------------------------------
# the file: graph, metadata, quantisation, command line
# ----------------------------------------------------------------------


@pytest.mark.slow
def test_metadata_record_preprocessing_labels_and_versions(fitted_clf, clf_onnx):
    matcher = OnnxImageMatcher(clf_onnx)
    metadata = matcher.metadata_
    assert metadata["format"] == ONNX_FORMAT
    assert metadata["format_version"] == ONNX_FORMAT_VERSION
    assert metadata["estimator"] == "ImagePairClassifier"
    assert metadata["image_size"] == matcher.image_size_ == TINY_IMAGE_SIZE
    assert metadata["embedding_dim"] == matcher.embedding_dim_ == fitted_clf.embedding_dim_
    assert_allclose(metadata["mean"], fitted_clf.module_.mean.reshape(-1).numpy())
    assert_allclose(metadata["std"], fitted_clf.module_.std.reshape(-1).numpy())
    assert_array_equal(matcher.classes_, fitted_clf.classes_)
    assert matcher.classes_.dtype == fitted_clf.classes_.dtype
    assert matcher.match_label == 1 and matcher.threshold == 0.5
    assert metadata["head_scale"] == pytest.approx(fitted_clf.module_.head.scale.item())
    assert metadata["head_link"] == fitted_clf.module_.head.link == "atanh"  # calibrated
    assert metadata["quantization"] == "none" and metadata["opset"] >= 18
    assert {"sklearn_imgpair", "torch", "timm", "onnx", "onnxruntime"} <= set(
        metadata["versions"])
    model = onnx.load(clf_onnx)
    assert model.producer_name == "sklearn-imgpair"
    assert max(entry.version for entry in model.opset_import if entry.domain == "") == \
        metadata["opset"]


@pytest.mark.slow
def test_embedder_file_has_its_opset_and_no_match_head(embedder_onnx):
    matcher = OnnxImageMatcher(embedder_onnx)
    assert matcher.metadata_["opset"] == 18
    assert matcher.metadata_["estimator"] == "ImageEmbedder"
    assert not hasattr(matcher, "predict_proba")
    with pytest.raises(AttributeError, match="predict"):
        matcher.predict([["a.png", "b.png"]])
    assert not hasattr(matcher, "classes_")


@pytest.mark.slow
def test_cli_exports_int8(cli_int8, clf_onnx, image_pairs):
    path, status, output = cli_int8
    assert status == 0
    assert f"Wrote {path}" in output and "int8 weights" in output
    quantized, fp32 = OnnxImageMatcher(path), OnnxImageMatcher(clf_onnx)
    assert quantized.metadata_["quantization"] == "int8"
    assert "MatMulInteger" in {node.op_type for node in onnx.load(path).graph.node}
    X, _ = image_pairs
    vectors, expected = quantized.transform(X[:16, 0]), fp32.transform(X[:16, 0])
    assert (vectors * expected).sum(axis=1).min() > 0.99
    assert_allclose(quantized.predict_proba(X[:16]), fp32.predict_proba(X[:16]), atol=0.05)


def test_cli_export_loads_embedder_files_and_refuses_others(embedder, tmp_path, capsys):
    path = embedder.save(tmp_path / "embedder.safetensors")
    assert isinstance(load_estimator(path), ImageEmbedder)
    (tmp_path / "notes.txt").write_text("not a model")
    assert main(["export", "--model", str(tmp_path / "notes.txt"),
                 "--output", str(tmp_path / "out.onnx")]) == 2
    error = capsys.readouterr().err
    assert "notes.txt" in error and "not a sklearn-imgpair model file" in error
    assert not (tmp_path / "out.onnx").exists()


# ----------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------


def test_export_refuses_bad_parameters_and_unfitted_estimators(fitted_clf, tmp_path):
    with pytest.raises(ValueError, match="'opset' parameter of export_onnx"):
        fitted_clf.export_onnx(tmp_path / "a.onnx", opset=17)
    with pytest.raises(ValueError, match="'quantize' parameter of export_onnx"):
        fitted_clf.export_onnx(tmp_path / "a.onnx", quantize="int4")
    with pytest.raises(NotFittedError):
        ImageEmbedder().export_onnx(tmp_path / "a.onnx")
    with pytest.raises(NotFittedError):
        ImagePairClassifier().export_onnx(tmp_path / "a.onnx")
    assert not (tmp_path / "a.onnx").exists()


def test_loading_refuses_missing_and_non_onnx_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        OnnxImageMatcher(tmp_path / "missing.onnx")
    (tmp_path / "text.onnx").write_text("not a model")
    with pytest.raises(ValueError, match="text.onnx' is not an ONNX model"):
        OnnxImageMatcher(tmp_path / "text.onnx")
    with pytest.raises(ValueError, match="not a file"):
        OnnxImageMatcher(tmp_path)


def test_loading_refuses_onnx_files_of_others(tmp_path):
    helper = onnx.helper
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "identity",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), tmp_path / "other.onnx")
    with pytest.raises(ValueError, match="without sklearn-imgpair metadata"):
        OnnxImageMatcher(tmp_path / "other.onnx")


@pytest.mark.slow
@pytest.mark.parametrize("changes, message", [
    (dict(format_version="3"), "format 3 by a newer sklearn-imgpair"),
    (dict(image_size="64"), r"takes tensor\(uint8\) of shape \['N', 3, 32, 32\].*image_size=64"),
    (dict(classes="[0, 1"), "corrupt sklearn-imgpair metadata: classes="),
    (dict(match_label="2"), "match_label 2 is not one of the classes"),
    (dict(threshold=None), "incomplete sklearn-imgpair metadata: no 'threshold'"),
    (dict(estimator="ImageEmbedder"), r"inputs \['images'\]"),
])
def test_loading_refuses_inconsistent_metadata(clf_onnx, tmp_path, changes, message):
    path = _rewrite_metadata(clf_onnx, tmp_path / "changed.onnx", **changes)
    with pytest.raises(ValueError, match=message):
        OnnxImageMatcher(path)


@pytest.mark.slow
def test_bad_images_name_their_cell(clf_onnx, image_pairs, tmp_path):
    X, _ = image_pairs
    matcher = OnnxImageMatcher(clf_onnx)
    missing = X[:3].copy()
    missing[1, 0] = str(tmp_path / "lost.png")
    with pytest.raises(FileNotFoundError, match=r"X\[1, 0\].*lost.png"):
        matcher.predict_proba(missing)
    broken = [[X[0, 0], X[0, 1]], [X[1, 0], b"not an image"]]
    with pytest.raises(ValueError, match=r"X\[1, 1\].*bytes of length 12"):
        matcher.predict_proba(broken)
    with pytest.raises(ValueError, match="must have 2 columns"):
        matcher.predict_proba(np.column_stack([X[:3], X[:3, 0]]))
    with pytest.raises(ValueError, match=r"X\[2\].*int64 array"):
        matcher.transform([X[0, 0], X[1, 0], np.zeros((4, 4, 3), dtype=np.int64)])


@pytest.mark.slow
def test_warn_gives_nan_to_exactly_the_rows_of_unreadable_images(fitted_clf, clf_onnx,
                                                                 image_pairs, tmp_path):
    X, _ = image_pairs
    X = X[:12].copy()
    expected = OnnxImageMatcher(clf_onnx).predict_proba(X)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(open(X[0, 0], "rb").read()[:40])
    X[2, 0], X[5, 1], X[9, 0] = str(tmp_path / "lost.png"), str(truncated), str(truncated)
    matcher = OnnxImageMatcher(clf_onnx, on_error="warn")
    with pytest.warns(UnreadableImageWarning, match="get NaN probabilities") as record:
        proba = matcher.predict_proba(X)
    assert len(record) == 1 and record[0].filename == __file__
    warning = record[0].message
    bad_rows = [2, 5, 9]
    assert warning.rows.tolist() == bad_rows and len(warning.failures) == 2
    assert "X[2, 0]" in warning.failures[0] and "lost.png" in warning.failures[0]
    assert "X[5, 1]" in warning.failures[1] and "truncated.png" in warning.failures[1]
    assert np.isnan(proba[bad_rows]).all()
    good = np.setdiff1d(np.arange(len(X)), bad_rows)
    assert_allclose(proba[good], expected[good], rtol=0, atol=1e-5)
    assert_allclose(proba[good], fitted_clf.predict_proba(X[good]), atol=1e-4)
    with pytest.warns(UnreadableImageWarning):
        assert np.isnan(matcher.decision_function(X)[bad_rows]).all()
    with pytest.warns(UnreadableImageWarning):
        assert (matcher.predict(X)[bad_rows] == 0).all()  # NaN is not above the threshold
    with pytest.warns(UnreadableImageWarning, match=r"get NaN embeddings.*X\[2\]"):
        vectors = matcher.transform(X[:3, 0].tolist() + [b"not an image"])
    assert np.isnan(vectors[[2, 3]]).all() and not np.isnan(vectors[:2]).any()


def test_matcher_validates_its_parameters(tmp_path):
    with pytest.raises(ValueError, match="'batch_size' parameter of OnnxImageMatcher"):
        OnnxImageMatcher(tmp_path / "a.onnx", batch_size=0)
    with pytest.raises(ValueError, match="'on_error' parameter of OnnxImageMatcher"):
        OnnxImageMatcher(tmp_path / "a.onnx", on_error="ignore")


def test_metadata_reading_finds_the_match_column():
    props = encode_metadata({
        "format": ONNX_FORMAT, "format_version": 1, "estimator": "ImagePairClassifier",
        "model_name": "m", "image_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3,
        "embedding_dim": 8, "quantization": "none", "opset": 20, "versions": {},
        "classes": {"dtype": "<U3", "values": ["no", "yes"]}, "match_label": "no",
        "threshold": 0.5, "head_scale": 10.0, "head_bias": -5.0})
    metadata = read_metadata(props, "m.onnx")
    assert metadata["match_column"] == 0
    assert metadata["classes"].dtype == np.dtype("<U3")
    # Files written before the head had a link were linear in the cosine.
    assert metadata["head_link"] == "linear"
    props["head_link"] = "atanh"
    assert read_metadata(props, "m.onnx")["head_link"] == "atanh"
    props["head_link"] = "cubic"
    with pytest.raises(ValueError, match="unknown head_link 'cubic'"):
        read_metadata(props, "m.onnx")


def test_missing_extra_says_how_to_install_it():
    with pytest.raises(ImportError, match=r'pip install "sklearn-imgpair\[onnx\]"'):
        import_optional("not_a_module_9", "OnnxImageMatcher", extra="onnx")


# ----------------------------------------------------------------------
# torch-free: the runtime, and the package's lazy imports
# ----------------------------------------------------------------------

_BLOCK_TORCH = """
import importlib.abc, sys

class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("torch", "timm"):
            raise ImportError(f"{name} is blocked in this test")

sys.meta_path.insert(0, BlockTorch())
"""


def _run_python(code):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.slow
def test_runtime_runs_with_torch_and_timm_blocked(clf_onnx, image_pairs):
    X, _ = image_pairs
    code = _BLOCK_TORCH + f"""
import json
import os
from sklearn_imgpair.onnx import OnnxImageMatcher
matcher = OnnxImageMatcher({clf_onnx!r})
proba = matcher.predict_proba({X[:5].tolist()!r})
loaded = sorted(name for name in sys.modules if name.partition(".")[0] in ("torch", "timm"))
print(json.dumps({{"proba": proba.tolist(), "loaded": loaded}}))
"""
    result = json.loads(_run_python(code).splitlines()[-1])
    assert result["loaded"] == []
    assert_allclose(result["proba"], OnnxImageMatcher(clf_onnx).predict_proba(X[:5]),
                    rtol=1e-6)


def test_the_shared_embedding_and_scoring_modules_import_no_torch():
    code = _BLOCK_TORCH + """
import sklearn_imgpair._images.embedding, sklearn_imgpair._matching
print(sorted(name for name in sys.modules if name.startswith(("torch", "timm"))))
"""
    assert _run_python(code).strip() == "[]"


def test_package_import_is_lazy():
    code = _BLOCK_TORCH + """
import sklearn_imgpair
from sklearn_imgpair import check_pairs, __version__
print(sorted(name for name in sys.modules if name.startswith(("torch", "timm"))))
"""
    assert _run_python(code).strip() == "[]"


def test_every_public_name_resolves():
    assert set(sklearn_imgpair._LAZY_NAMES) == set(sklearn_imgpair.__all__) - {"__version__"}
    for name in sklearn_imgpair.__all__:
        assert getattr(sklearn_imgpair, name) is not None
    assert set(sklearn_imgpair.__all__) <= set(dir(sklearn_imgpair))
    assert sklearn_imgpair.onnx.OnnxImageMatcher is OnnxImageMatcher
    assert sklearn_imgpair.datasets.make_image_pairs is not None
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        sklearn_imgpair.nothing
    assert sklearn_imgpair.ImageEmbedder.__module__ == "sklearn_imgpair._embedder"


@pytest.mark.slow
@pytest.mark.parametrize("exported", ["clf_onnx", "embedder_onnx", "cli_int8"])
def test_an_exported_file_names_no_source_path_of_the_exporting_machine(exported, request):
    path = request.getfixturevalue(exported)
    path = path[0] if isinstance(path, tuple) else path
    source = os.path.dirname(os.path.abspath(sklearn_imgpair.__file__)).encode()
    data = open(path, "rb").read()
    assert source not in data and b"pkg.torch.onnx.stack_trace" not in data
    assert b"pkg.torch.onnx.name_scopes" in data  # the rest of the nodes' metadata stays
