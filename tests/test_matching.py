"""The match head in numpy, chunked pair scoring and the class outputs of both matchers."""

import inspect

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal

from sklearn_imgpair import UnreadableImageWarning, _matching
from sklearn_imgpair._images.validation import check_pairs
from sklearn_imgpair._matching import (
    CosineHead,
    class_probabilities,
    decision_scores,
    predicted_labels,
)
from sklearn_imgpair._nn.siamese import CosineMatchHead


@pytest.mark.parametrize("link", ["linear", "atanh"])
def test_cosine_head_by_hand_and_as_the_network_head(link):
    cosine = np.array([-1.0, -0.5, 0.0, 0.5, 0.999, 1.0], dtype=np.float32)
    head = CosineHead(4.0, -2.0, link)
    z = np.arctanh(np.clip(cosine, -(1 - 1e-6), 1 - 1e-6)) if link == "atanh" else cosine
    assert_allclose(head(cosine), 4.0 * z - 2.0, rtol=1e-6)
    network = CosineMatchHead(init_scale=4.0, init_bias=-2.0, link=link)
    with torch.no_grad():
        expected = network(torch.from_numpy(cosine)).numpy()
    assert_allclose(head(cosine), expected, rtol=1e-5)


def test_cosine_head_refuses_other_links():
    with pytest.raises(ValueError, match="link must be one of"):
        CosineHead(1.0, 0.0, "cubic")


def test_similarity_is_the_head_of_the_row_wise_cosine():
    a = np.array([[1, 0], [0.6, 0.8]], dtype=np.float32)
    b = np.array([[0.6, 0.8], [0.6, 0.8]], dtype=np.float32)
    assert_allclose(CosineHead(10.0, -5.0, "linear").similarity(a, b), [1.0, 5.0], rtol=1e-6)


def test_score_pairs_in_chunks_equals_scoring_at_once(monkeypatch):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((7, 3)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = rng.integers(0, 7, size=(23, 2))
    head = CosineHead(3.0, 1.0, "atanh")
    expected = head.similarity(vectors[index[:, 0]], vectors[index[:, 1]])
    sizes = []

    def similarity(first, second):
        sizes.append(len(first))
        return head.similarity(first, second)

    for chunk_size in (1, 4, 23, 100):
        assert_allclose(_matching.score_pairs(vectors, index, similarity, chunk_size=chunk_size),
                        expected, rtol=1e-6)
    monkeypatch.setattr(_matching, "SCORE_CHUNK_SIZE", 5)
    sizes.clear()
    assert _matching.score_pairs(vectors, index, similarity).dtype == np.float32
    assert max(sizes) == 5 and sum(sizes) == 23


@pytest.mark.parametrize("match_column", [0, 1])
def test_class_outputs_follow_the_match_column(match_column):
    logits = np.array([0.0, 2.0, np.nan], dtype=np.float32)
    proba = class_probabilities(logits, match_column)
    assert proba.dtype == np.float64
    match = 1 / (1 + np.exp(-2.0))
    assert_allclose(proba[:2, match_column], [0.5, match])
    assert_allclose(proba[:2, 1 - match_column], [0.5, 1 - match])
    assert np.isnan(proba[2]).all()
    assert_array_equal(decision_scores(logits[:2], match_column),
                       logits[:2] if match_column == 1 else -logits[:2])
    classes = np.array(["same", "other"]) if match_column == 0 else np.array(["no", "yes"])
    labels = predicted_labels(proba, classes, match_column, 0.6)
    no, yes = classes[1 - match_column], classes[match_column]
    assert labels.tolist() == [no, yes, no]  # NaN is not above the threshold


def test_float64_keeps_close_pairs_apart():
    proba = class_probabilities(np.array([20.0, 21.0], dtype=np.float32), 1)
    assert proba[0, 1] < proba[1, 1] < 1.0


def test_match_logits_warns_once_for_the_caller_of_predict_proba():
    def embed_images(images, names):
        errors = [f"{name}: broken" if image == "b.png" else "" for image, name in
                  zip(images, names)]
        return np.eye(len(images), 3, dtype=np.float32), errors

    def predict_proba(X):
        def score(embeddings, index):
            head = CosineHead(1.0, 0.0, "linear")
            return _matching.score_pairs(embeddings, index, head.similarity)

        def logits():
            return _matching.match_logits(check_pairs(X), embed_images, score, on_error="warn")

        return logits()

    line = inspect.currentframe().f_lineno + 2
    with pytest.warns(UnreadableImageWarning, match="get NaN probabilities") as record:
        logits = predict_proba([["a.png", "c.png"], ["a.png", "b.png"]])
    assert record[0].lineno == line and record[0].message.rows.tolist() == [1]
    assert record[0].message.failures == ["X[1, 1]: broken"]
    assert logits[0] == 0.0 and np.isnan(logits[1])


def test_match_logits_finds_missing_files_before_reading_any_image(tmp_path):
    def embed_images(images, names):
        raise AssertionError("nothing is read before the files are checked")

    with pytest.raises(FileNotFoundError, match="lost.png"):
        _matching.match_logits(check_pairs([[str(tmp_path / "lost.png"), "a.png"]]),
                               embed_images, None)
