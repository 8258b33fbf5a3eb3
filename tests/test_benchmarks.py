"""Smoke tests: the speed benchmarks run end to end on the tiny Swin (no timing asserted)."""

import importlib.util
import json
import pickle
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    sys.path.insert(0, str(BENCHMARKS))  # the scripts import _common from their folder
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def _summary(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.filterwarnings("ignore:precision='bf16'")
def test_bench_inference_quick(tmp_path, capsys):
    bench = _load("bench_inference")
    bench.main(["--quick", "--n-images", "8", "--n-pair-images", "8", "--batch-size", "4",
                "--workers", "None", "--skip-memory", "--image-dir", str(tmp_path)])
    summary = _summary(capsys)
    assert [row["precision"] for row in summary["transform"]] == ["fp32", "bf16"]
    assert all(row["ratio"] > 0 for row in summary["transform"])
    assert summary["pairs"][0]["n_pairs"] == 8
    assert 0.99 < summary["precision"][0]["cosine"] <= 1.0 + 1e-6


def test_bench_inference_memory_child(tmp_path, capsys):
    bench = _load("bench_inference")
    for index in range(5):
        Image.new("RGB", (40, 40), (index * 40, 0, 0)).save(tmp_path / f"{index}.png")
    bench.main(["--memory-child", "12", "--memory-dir", str(tmp_path)])
    result = _summary(capsys)
    assert result["n_pairs"] == result["n_proba"] == 12
    assert result["rss_peak_mb"] >= result["rss_before_mb"] > 0


def test_bench_fit_quick(tmp_path, capsys):
    bench = _load("bench_fit")
    bench.main(["--quick", "--n-images", "20", "--batch-size", "4", "--frozen-epochs", "2",
                "--image-dir", str(tmp_path)])
    (row,) = _summary(capsys)["fit"]
    assert row["n_pairs"] == 20
    assert row["ratio"] > 0 and row["frozen_s"] > 0


@pytest.mark.slow
def test_bench_search_tiny(capsys):
    pytest.importorskip("faiss")
    bench = _load("bench_search")
    bench.main(["--gallery-sizes", "500", "--n-queries", "20", "--dim", "32",
                "--methods", "sklearn", "brute", "faiss_ivf"])
    summary = _summary(capsys)
    assert summary["dim"] == 32 and summary["k"] == 10
    rows = {row["method"]: row for row in summary["results"]}
    assert sorted(rows) == ["brute", "faiss_ivf", "sklearn"]
    for row in rows.values():
        assert {"build_s", "search_s", "speedup_search", "speedup_total", "recall", "agreement",
                "index_mb", "search_peak_mb", "search_working_mb"} <= set(row)
        assert row["size"] == 500 and row["reference"] == "sklearn"
    # Both exact searches find the same neighbours; IVF's are approximate.
    assert rows["brute"]["recall"] == rows["brute"]["agreement"] == 1.0
    assert 0.5 < rows["faiss_ivf"]["recall"] <= 1.0
    assert rows["faiss_ivf"]["params"]["n_lists"] == 12


def test_bench_retrieval_without_the_data_says_so(tmp_path, capsys):
    bench = _load("retrieval")
    bench.main(["--coil", str(tmp_path / "absent")])
    summary = _summary(capsys)
    assert summary["skipped"].startswith("COIL-100 data not found")


@pytest.mark.slow
def test_bench_retrieval_quick(tmp_path, capsys):
    import pandas as pd

    from conftest import COIL_DIR

    if not (COIL_DIR / "splits.json").is_file():
        pytest.skip(f"the COIL-100 photos are not in {COIL_DIR}")
    bench = _load("retrieval")
    train = pd.read_csv(COIL_DIR / "train.csv").head(40)  # 40 pairs: a fit of seconds
    for column in ("Image1", "Image2"):
        train[column] = [str(COIL_DIR / path) for path in train[column]]
    train.to_csv(tmp_path / "train.csv", index=False)
    bench.main(["--time-budget", "5", "--objects", "2", "--train", str(tmp_path / "train.csv"),
                "--batch-size", "16"])
    summary = _summary(capsys)
    assert (summary["n_images"], summary["n_objects"], summary["n_neighbors"]) == (72, 2, 35)
    assert sorted(summary["scores"]) == ["colour histogram", "fitted model", "raw pixels"]
    for scores in summary["scores"].values():
        assert all(0 <= value <= 1 for value in scores.values())
        # Leave-one-out: every query has relevant images, so precision@1 is recall@1.
        assert scores["precision_at_1"] == scores["recall_at_1"] <= scores["recall_at_5"]


@pytest.mark.slow
def test_bench_onnx_quick(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    bench = _load("bench_onnx")
    bench.main(["--quick", "--n-images", "6", "--batch-size", "4", "--image-dir", str(tmp_path)])
    summary = _summary(capsys)
    rows = {row["engine"]: row for row in summary["engines"]}
    assert sorted(rows) == sorted(["torch fp32", "torch bf16", "onnxruntime fp32",
                                   "onnxruntime int8", "onnxruntime int8 static"])
    for row in rows.values():
        assert {"model", "size", "network", "network_ratio", "transform", "transform_ratio",
                "cosine"} <= set(row)
        assert row["network"] > 0 and row["transform"] > 0
    assert rows["torch fp32"]["network_ratio"] == 1.0
    assert rows["onnxruntime fp32"]["cosine"] >= 0.9999
    assert 0.99 < rows["onnxruntime int8"]["cosine"] <= 1.0 + 1e-6
    assert 0.99 < rows["onnxruntime int8 static"]["cosine"] <= 1.0 + 1e-6
    (sizes,) = summary["sizes"]
    assert sizes["onnx int8 MB"] > 0 and sizes["onnx fp32 MB"] > 0
    assert sizes["onnx int8 static MB"] > 0
    assert sizes["safetensors MB"] > 0


def _pickle_and_pairs_csv(clf, image_pairs, folder):
    """``clf`` pickled to folder/clf.pkl, the pairs to folder/pairs.csv (--model, --pairs)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    with open(folder / "clf.pkl", "wb") as file:
        pickle.dump(clf, file)
    X, y = image_pairs
    pd.DataFrame({"Image1": X[:, 0], "Image2": X[:, 1], "Label": y}).to_csv(
        folder / "pairs.csv", index=False)


@pytest.mark.slow
def test_bench_onnx_measures_the_int8_files_of_a_fitted_classifier(fitted_clf, image_pairs,
                                                                   tmp_path, capsys):
    bench = _load("bench_onnx")
    _pickle_and_pairs_csv(fitted_clf, image_pairs, tmp_path)
    model_file = fitted_clf.save(tmp_path / "clf.safetensors")
    assert bench.load_classifier(model_file).threshold == fitted_clf.threshold
    bench.main(["--model", str(tmp_path / "clf.pkl"), "--pairs", str(tmp_path / "pairs.csv"),
                "--n-calibration", "8", "--n-images", "8", "--batch-size", "4",
                "--repeats", "1", "--min-seconds", "0"])
    summary = _summary(capsys)
    rows = {row["variant"]: row for row in summary["variants"]}
    assert list(rows) == ["torch fp32", "fp32", "int8 dynamic", "int8 static"]
    assert summary["n_calibration"] == 8
    assert rows["fp32"]["max_abs_diff"] == 0 and rows["torch fp32"]["max_abs_diff"] < 1e-3
    for name in ("fp32", "int8 dynamic", "int8 static"):
        assert 0 <= rows[name]["roc_auc"] <= 1 and rows[name]["images_per_s"] > 0
        assert rows[name]["mean_abs_diff"] <= rows[name]["max_abs_diff"] < 0.1


@pytest.mark.slow
def test_quality_and_synthetic_pretraining_quick(tmp_path, capsys):
    from sklearn_imgpair.datasets import make_image_pairs

    pretrain = _load("pretrain_synthetic")
    weights = tmp_path / "synthetic.safetensors"
    pretrain.main(["--products", "6", "--views", "3", "--pairs", "40", "--time-budget", "4",
                   "--batch-size", "8", "--output", str(weights)])
    assert _summary(capsys)["products"] == 6 and weights.is_file()

    train, test = make_image_pairs(tmp_path / "images", n_products=8, n_views=3, n_pairs=60)
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    quality = _load("quality")
    model = tmp_path / "model.pkl"
    quality.main(["--train", str(tmp_path / "train.csv"), "--test", str(tmp_path / "test.csv"),
                  "--time-budget", "4", "--batch-size", "8", "--weights-path", str(weights),
                  "--colour-share", "0.5", "--save", str(model)])
    summary = _summary(capsys)
    assert summary["config"]["weights_path"] == str(weights)
    assert summary["config"]["colour_share"] == 0.5
    figures = summary["tests"]["test.csv"]
    # Each part of the blended cosine, alone: two different scores of the same pairs.
    assert figures["colour_share"] == 0.5
    parts = figures["backbone_part_auc"], figures["colour_part_auc"]
    assert all(0 <= auc <= 1 for auc in parts) and parts[0] != parts[1]
    for prefix in ("", "tta_"):
        assert 0 <= figures[prefix + "ece"] <= 1 and 0 <= figures[prefix + "brier"] <= 1
        assert sum(n for n, _, _ in figures[prefix + "reliability"]) == figures["pairs"]
        assert 0 <= figures[prefix + "self_pair_min_proba"] <= 1
        assert 0 <= figures[prefix + "jpeg_copy_min_proba"] <= 1
    assert 0 <= figures["best_platt_ece"] <= 1
    other = figures["other_identities_platt_ece"]
    assert other is None or 0 <= other <= 1
    # A saved model is evaluated again without fitting: the same figures.
    quality.main(["--evaluate", str(model), "--test", str(tmp_path / "test.csv")])
    again = _summary(capsys)["tests"]["test.csv"]
    assert again["roc_auc"] == figures["roc_auc"] and again["ece"] == figures["ece"]


def test_reliability_bins_and_ece_by_hand():
    import numpy as np

    quality = _load("quality")
    y = np.array([0, 0, 1, 1, 0, 1])
    proba = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    bins, ece = quality.reliability(y, proba, n_bins=3)
    assert [n for n, _, _ in bins] == [2, 2, 2]
    assert bins[1] == (2, pytest.approx(0.45), 1.0)  # 0.3 and 0.6, both matches
    expected = (abs(0.15 - 0.0) * 2 + abs(0.45 - 1.0) * 2 + abs(0.8 - 0.5) * 2) / 6
    assert ece == pytest.approx(expected)


def test_reliability_with_weights_by_hand():
    import numpy as np

    quality = _load("quality")
    y = np.array([0, 1, 1, 0])
    proba = np.array([0.1, 0.4, 0.6, 0.9])
    # Equal-weight bins: the first pair weighs as much as the three others.
    bins, ece = quality.reliability(y, proba, n_bins=2, sample_weight=[3, 1, 1, 1])
    assert [n for n, _, _ in bins] == [1, 3]
    assert bins[1] == (3, pytest.approx(1.9 / 3), pytest.approx(2 / 3))
    assert ece == pytest.approx((3 * 0.1 + 3 * abs(1.9 / 3 - 2 / 3)) / 6)
    # Unit weights give the unweighted figures where the bins divide the pairs evenly.
    assert quality.reliability(y, proba, 2, np.ones(4)) == quality.reliability(y, proba, 2)


def _pairs_with_object_offsets(n_identities, spread, seed=0):
    """Logits of matching and non-matching pairs; each object shifts the logits of its pairs."""
    import itertools

    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    offset = rng.uniform(-spread, spread, n_identities)
    rows = [(f"id{k}_{i}", f"id{k}_{j}", 1, k, k) for k in range(n_identities)
            for i, j in itertools.combinations(range(6), 2)]
    for _ in range(len(rows)):
        k, other = rng.choice(n_identities, 2, replace=False)
        rows.append((f"id{k}_{rng.integers(6)}", f"id{other}_{rng.integers(6)}", 0, k, other))
    frame = pd.DataFrame(rows, columns=["Image1", "Image2", "Label", "first", "second"])
    y = frame["Label"].to_numpy()
    logits = (2.5 * (2 * y - 1) + rng.normal(0, 1.5, len(y))
              + offset[frame["first"]] + offset[frame["second"]])
    return logits, y, frame[["Image1", "Image2"]]


def test_calibration_transfer_tells_object_differences_from_calibration():
    quality = _load("quality")
    # Objects that all behave alike: a head fitted on half of them fits the others.
    alike = quality.calibration_transfer(*_pairs_with_object_offsets(40, 0.0))
    assert alike["best_platt_ece"] < 0.02 and alike["other_identities_platt_ece"] < 0.03
    low, high = alike["other_identities_platt_ece_q10_q90"]
    assert low <= alike["other_identities_platt_ece"] <= high
    # Each of 8 objects moves its pairs' logits: a head fitted on some objects
    # misses on the others by far more than one re-fitted on the pairs themselves.
    differing = quality.calibration_transfer(*_pairs_with_object_offsets(8, 3.0))
    assert differing["other_identities_platt_ece"] > 0.15
    assert differing["other_identities_platt_ece"] > differing["best_platt_ece"] + 0.05


def test_balance_weights_give_the_match_rate():
    import numpy as np

    quality = _load("quality")
    y = np.array([1, 0, 0, 0, 1, 0])
    weight = quality._balance(y, 0.5)
    assert weight.sum() == pytest.approx(1.0)
    assert weight[y == 1].sum() == pytest.approx(0.5)
    assert weight[y == 1][0] == pytest.approx(0.25) and weight[y == 0][0] == pytest.approx(0.125)


def test_calibration_transfer_without_two_classes_in_a_half():
    import numpy as np
    import pandas as pd

    quality = _load("quality")
    # Two objects: each half holds one, with its matching pairs only.
    X = pd.DataFrame({"Image1": ["a0", "a1", "b0", "a0"], "Image2": ["a1", "a2", "b1", "b0"]})
    y = np.array([1, 1, 1, 0])
    figures = quality.calibration_transfer(np.array([2.0, 1.0, 1.5, -1.0]), y, X)
    assert figures["other_identities_platt_ece"] is None
    assert figures["other_identities_platt_ece_q10_q90"] is None
    assert 0 <= figures["best_platt_ece"] <= 1


def test_bench_copies_quick(capsys):
    bench = _load("bench_copies")
    bench.main(["--quick", "--repeats", "1"])
    rows = _summary(capsys)["copies"]
    assert [row["folder"] for row in rows] == ["demo", "photos"]
    assert all(row["n_images"] == 24 and row["dedup_s"] > 0 for row in rows)


def test_bench_pairs_times_every_path_against_the_raw_forward_and_automm(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    bench = _load("bench_pairs")
    (tmp_path / "automm.json").write_text(json.dumps({"eval": [{"pairs_per_s": 2.0}]}))
    bench.main(["--quick", "--n-calibration", "8", "--automm-json",
                str(tmp_path / "automm.json")])
    summary = _summary(capsys)
    rows = {row["path"]: row for row in summary["speed"]}
    assert list(rows) == ["raw forward fp32", "predict_proba default", "transform default",
                          "onnx fp32", "onnx int8 dynamic", "onnx int8 static"]
    assert rows["raw forward fp32"]["ratio"] == 1.0 and summary["automm"] == 2.0
    for row in rows.values():
        assert row["pairs_per_s"] > 0 and row["automm"] == row["pairs_per_s"] / 2.0
    assert [row["batch"] for row in summary["curve"]] == [1, 4]
    assert "accuracy" not in summary  # --dev-model only (run on the dev model in the docs)
