"""Smoke tests: the speed benchmarks run end to end on the tiny Swin (no timing asserted)."""

import importlib.util
import json
import sys
from pathlib import Path

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
