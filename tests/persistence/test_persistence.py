"""save/load: one file, no pickle, identical predictions, clear errors, atomic writes."""

import json
import os
import pickle
import struct

import numpy as np
import pandas as pd
import pytest
import safetensors.torch
import torch
from numpy.testing import assert_array_equal
from skorch.dataset import ValidSplit

from sklearn_imgpair import IdentityValidSplit, ImageEmbedder, ImagePairClassifier
from sklearn_imgpair._io import container as _container
from sklearn_imgpair._io.embedding_cache import tensors_digest
from sklearn_imgpair._persistence.classifier_file import CLASSIFIER_FORMAT_VERSION as FORMAT_VERSION

from conftest import TINY_IMAGE_SIZE, TINY_SWIN, go_offline, make_tiny_classifier


@pytest.fixture(scope="module")
def saved(fitted_clf, tmp_path_factory):
    return fitted_clf.save(tmp_path_factory.mktemp("saved") / "model.safetensors")


def _header(path):
    data = open(path, "rb").read()
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + size]), data


def test_load_predicts_exactly_like_the_saved_classifier(saved, fitted_clf, image_pairs):
    X, y = image_pairs
    loaded = ImagePairClassifier.load(saved)
    assert_array_equal(loaded.predict_proba(X), fitted_clf.predict_proba(X))
    assert_array_equal(loaded.predict(X), fitted_clf.predict(X))
    assert loaded.score(X, y) == fitted_clf.score(X, y)
    assert_array_equal(loaded.classes_, fitted_clf.classes_)
    assert loaded.classes_.dtype == fitted_clf.classes_.dtype
    assert loaded.image_size_ == fitted_clf.image_size_ == TINY_IMAGE_SIZE
    params, saved_params = loaded.get_params(deep=False), fitted_clf.get_params(deep=False)
    assert params.pop("train_split").__dict__ == saved_params.pop("train_split").__dict__
    assert params == saved_params
    assert loaded.history[:, "valid_auc"] == fitted_clf.history[:, "valid_auc"]


def test_the_file_is_safetensors_with_json_metadata_and_no_pickle(saved, fitted_clf):
    header, data = _header(saved)
    metadata = header["__metadata__"]
    assert metadata["format"] == "sklearn-imgpair"
    # Written in the oldest format that holds it: version 4 for precision="auto" (the
    # default), 2 without colour and with an explicit precision (see below and test_colour).
    assert metadata["format_version"] == "4" and FORMAT_VERSION == 4
    content = json.loads(metadata["content"])
    assert content["estimator"] == "ImagePairClassifier"
    assert content["params"]["match_label"] == 1 and content["params"]["threshold"] == 0.5
    assert content["fitted"]["classes_"] == {"dtype": "<i8", "values": [0, 1]}
    assert content["preprocessing"]["image_size"] == TINY_IMAGE_SIZE
    assert {"torch", "timm", "skorch", "scikit-learn", "sklearn_imgpair"} <= set(
        content["versions"])
    assert b"\x80\x04" not in data[:8 + len(json.dumps(header))]  # no pickle protocol marker
    tensors = safetensors.torch.load_file(saved)
    assert set(tensors) == set(fitted_clf.module_.state_dict())


def test_load_needs_neither_network_nor_weights_file(tmp_path, image_pairs, monkeypatch):
    X, y = image_pairs
    weights = tmp_path / "backbone.safetensors"
    backbone = make_tiny_classifier().initialize().module_.backbone
    safetensors.torch.save_file(backbone.state_dict(), weights)
    clf = make_tiny_classifier(weights_path=str(weights), max_epochs=1).fit(X, y)
    path = clf.save(tmp_path / "model.safetensors")
    os.remove(weights)
    go_offline(monkeypatch)
    loaded = ImagePairClassifier.load(path)
    assert loaded.weights_path == str(weights)  # the parameter is kept, the file not needed
    assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_string_labels_custom_split_and_augmentation_round_trip(tmp_path, image_pairs):
    X, y = image_pairs
    labels = np.where(y == 1, "same", "different")
    from sklearn_imgpair import ViewAugmentation

    clf = make_tiny_classifier(match_label="same", max_epochs=1, threshold=0.3,
                               train_split=IdentityValidSplit(0.25, random_state=1),
                               augment=ViewAugmentation(min_scale=0.8, flip=False),
                               optimizer=torch.optim.SGD, optimizer__momentum=0.9)
    clf.fit(X, labels)
    loaded = ImagePairClassifier.load(clf.save(tmp_path / "m.safetensors"))
    assert loaded.classes_.tolist() == ["different", "same"] and loaded.match_label == "same"
    assert loaded.threshold == 0.3 and loaded.optimizer is torch.optim.SGD
    assert loaded.optimizer__momentum == 0.9
    assert isinstance(loaded.train_split, IdentityValidSplit)
    assert loaded.train_split.test_size == 0.25 and loaded.train_split.random_state == 1
    assert loaded.augment.min_scale == 0.8 and loaded.augment.flip is False
    assert loaded.model_kwargs == TINY_SWIN  # tuples stay tuples
    assert_array_equal(loaded.predict(X), clf.predict(X))
    loaded.set_params(max_epochs=1).fit(X, labels)  # a loaded model can be refitted


def test_parameters_that_need_pickle_are_saved_as_defaults_with_a_warning(tmp_path,
                                                                          image_pairs):
    X, y = image_pairs
    clf = make_tiny_classifier(max_epochs=1, random_state=np.random.RandomState(0),
                               train_split=ValidSplit(0.2, stratified=True)).fit(X, y)
    with pytest.warns(UserWarning, match=r"random_state \(a RandomState\)"):
        path = clf.save(tmp_path / "m.safetensors")
    loaded = ImagePairClassifier.load(path)
    assert loaded.random_state is None and loaded.train_split.cv == 0.2
    assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_embedder_round_trip_from_parameters_and_from_a_classifier(tmp_path, fitted_clf,
                                                                   image_pairs):
    paths = image_pairs[0][:10, 0]
    own = ImageEmbedder(pretrained=False, image_size=TINY_IMAGE_SIZE,
                        model_kwargs=dict(TINY_SWIN), random_state=3, cache=False).fit()
    borrowed = ImageEmbedder(classifier=fitted_clf, cache=False).fit()
    for embedder in (own, borrowed):
        loaded = ImageEmbedder.load(embedder.save(tmp_path / "e.safetensors"))
        assert_array_equal(loaded.transform(paths), embedder.transform(paths))
        assert loaded.classifier is None and loaded.image_size_ == TINY_IMAGE_SIZE
    with pytest.raises(ValueError, match="holds a 'ImageEmbedder', not a ImagePairClassifier"):
        ImagePairClassifier.load(tmp_path / "e.safetensors")


# ----------------------------------------------------------------------
# bad files
# ----------------------------------------------------------------------


class _Payload:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_a_malicious_pickle_runs_no_code(kind, tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "model.safetensors"
    if kind == "pickle":
        path.write_bytes(pickle.dumps(_Payload(marker)))
    else:
        torch.save({"state": _Payload(marker)}, path)
    pickle.loads(pickle.dumps(_Payload(marker)))  # the payload works when unpickled ...
    assert marker.exists()
    marker.unlink()
    for load in (ImagePairClassifier.load, ImageEmbedder.load):  # ... load never unpickles
        with pytest.raises(ValueError, match="is not a sklearn-imgpair model file"):
            load(path)
    assert not marker.exists()


def test_truncated_files_fail_clearly(saved, tmp_path):
    data = open(saved, "rb").read()
    for size in (0, 5, 100, len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut{size}.safetensors"
        path.write_bytes(data[:size])
        with pytest.raises(ValueError, match="truncated|not a sklearn-imgpair model file"):
            ImagePairClassifier.load(path)


def test_tampered_weights_or_settings_fail_the_checksum(saved, tmp_path):
    header, data = _header(saved)
    weights = bytearray(data)
    weights[-3] ^= 0x01  # one bit of the last tensor
    path = tmp_path / "weights.safetensors"
    path.write_bytes(bytes(weights))
    with pytest.raises(ValueError, match="checksum does not match"):
        ImagePairClassifier.load(path)

    tensors = safetensors.torch.load_file(saved)
    metadata = dict(header["__metadata__"])
    metadata["content"] = metadata["content"].replace('"threshold": 0.5', '"threshold": 0.01')
    assert metadata["content"] != header["__metadata__"]["content"]
    safetensors.torch.save_file(tensors, tmp_path / "settings.safetensors", metadata=metadata)
    with pytest.raises(ValueError, match="checksum does not match"):
        ImagePairClassifier.load(tmp_path / "settings.safetensors")


def test_a_newer_format_version_fails_with_upgrade_advice(saved, tmp_path):
    header, _ = _header(saved)
    metadata = dict(header["__metadata__"], format_version=str(FORMAT_VERSION + 1))
    path = tmp_path / "newer.safetensors"
    safetensors.torch.save_file(safetensors.torch.load_file(saved), path, metadata=metadata)
    with pytest.raises(ValueError, match="newer sklearn-imgpair.*Upgrade"):
        ImagePairClassifier.load(path)


def test_other_files_fail_clearly(saved, tmp_path):
    weights = tmp_path / "weights.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(2)}, weights)
    with pytest.raises(ValueError, match="without the library's metadata"):
        ImagePairClassifier.load(weights)
    with pytest.raises(FileNotFoundError, match="not found"):
        ImagePairClassifier.load(tmp_path / "absent.safetensors")
    with pytest.raises(ValueError, match="not a file"):
        ImagePairClassifier.load(tmp_path)


def test_a_file_naming_an_unknown_class_is_refused(saved, tmp_path, monkeypatch):
    header, _ = _header(saved)
    content = json.loads(header["__metadata__"]["content"])
    content["params"]["optimizer"] = {"__class__": "os.system"}
    text = json.dumps(content, sort_keys=True)
    tensors = safetensors.torch.load_file(saved)
    metadata = dict(header["__metadata__"], content=text,
                    sha256=tensors_digest(text, tensors))
    path = tmp_path / "evil.safetensors"
    safetensors.torch.save_file(tensors, path, metadata=metadata)
    with pytest.raises(ValueError, match="unknown class 'os.system'"):
        ImagePairClassifier.load(path)


def test_unfitted_estimators_cannot_be_saved(tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        make_tiny_classifier().save(tmp_path / "m.safetensors")
    with pytest.raises(NotFittedError):
        ImageEmbedder().save(tmp_path / "e.safetensors")
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------
# atomic writes
# ----------------------------------------------------------------------


@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failure_mid_save_keeps_the_previous_file(failure, saved, fitted_clf, tmp_path,
                                                    monkeypatch):
    path = tmp_path / "model.safetensors"
    path.write_bytes(open(saved, "rb").read())
    before = path.read_bytes()
    real_open = open

    class FailingFile:
        def __init__(self, name, mode):
            self.file = real_open(name, mode)

        def write(self, data):
            self.file.write(data[:len(data) // 2])  # half written, then the failure
            self.file.flush()
            raise failure

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    monkeypatch.setattr(_container, "open", FailingFile, raising=False)
    with pytest.raises(type(failure)):
        fitted_clf.save(path)
    assert path.read_bytes() == before  # the previous model is intact
    assert os.listdir(tmp_path) == ["model.safetensors"]  # no temporary file left
    monkeypatch.undo()
    assert_array_equal(ImagePairClassifier.load(path).classes_, [0, 1])


def test_the_checksum_of_a_model_file_never_changes():
    # The digest the format's checksum uses (shared with the embedding cache's
    # keys): a change would make every saved model fail its check.
    tensors = {"head.bias": torch.tensor([0.5, -1.0]),
               "backbone.w": torch.arange(6, dtype=torch.float32).reshape(2, 3),
               "n": torch.tensor([3], dtype=torch.int64)}
    assert tensors_digest('{"a": 1}', tensors) == (
        "772e1d581820e137ebc7a2f5d53b2e5881ef9623bee3a2809b15b4d2fd2166db")


def test_a_file_of_the_previous_layout_still_loads(saved, tmp_path, image_pairs):
    # Files written before the package was reorganised name the network class
    # by its old module; they must keep loading (and predicting) as they did.
    header, _ = _header(saved)
    content = json.loads(header["__metadata__"]["content"])
    assert content["params"]["module"] == {"__class__": "sklearn_imgpair._nn.siamese.SiameseNet"}
    content["params"]["module"] = {"__class__": "sklearn_imgpair._module.SiameseNet"}
    text = json.dumps(content, sort_keys=True)
    tensors = safetensors.torch.load_file(saved)
    metadata = dict(header["__metadata__"], content=text, sha256=tensors_digest(text, tensors))
    old = tmp_path / "old.safetensors"
    safetensors.torch.save_file(tensors, old, metadata=metadata)
    X, _ = image_pairs
    assert_array_equal(ImagePairClassifier.load(old).predict_proba(X),
                       ImagePairClassifier.load(saved).predict_proba(X))


def test_a_model_file_holds_public_parameters_only(saved):
    # skorch's bookkeeping (_params_to_validate, ...) is no parameter, so it is not saved.
    header, _ = _header(saved)
    params = json.loads(header["__metadata__"]["content"])["params"]
    assert params and not [name for name in params if name.startswith("_")]


def _rewrite_content(saved, path, edit, drop=()):
    """Copy the model file ``saved`` to ``path`` with its JSON content edited (and re-signed)."""
    header, _ = _header(saved)
    content = json.loads(header["__metadata__"]["content"])
    edit(content)
    text = json.dumps(content, sort_keys=True)
    tensors = {name: value for name, value in safetensors.torch.load_file(saved).items()
               if name not in drop}
    metadata = dict(header["__metadata__"], content=text, sha256=tensors_digest(text, tensors))
    safetensors.torch.save_file(tensors, path, metadata=metadata)
    return path


def test_network_settings_round_trip_and_older_files_keep_the_linear_head(
        saved, fitted_clf, tmp_path, image_pairs):
    X, _ = image_pairs
    assert json.loads(_header(saved)[0]["__metadata__"]["content"])["network"] == {
        "test_time_flip": False}
    assert fitted_clf.module_.head.link == "atanh"  # calibrated; the link is a buffer
    assert safetensors.torch.load_file(saved)["head.link_atanh"] == 1.0
    flipped = pickle.loads(pickle.dumps(fitted_clf))
    flipped.module_.test_time_flip = True
    loaded = ImagePairClassifier.load(flipped.save(tmp_path / "flip.safetensors"))
    assert loaded.module_.test_time_flip and loaded.module_.head.link == "atanh"
    assert_array_equal(loaded.predict_proba(X), flipped.predict_proba(X))
    assert not np.allclose(loaded.predict_proba(X), fitted_clf.predict_proba(X))
    # A file written before the link and settings were saved had a linear head.
    old = _rewrite_content(saved, tmp_path / "old.safetensors",
                           lambda content: content.pop("network"),
                           drop=("head.link_atanh",))
    head = ImagePairClassifier.load(old).module_.head
    assert head.link == "linear" and not ImagePairClassifier.load(old).module_.test_time_flip
    bad = _rewrite_content(saved, tmp_path / "bad.safetensors",
                           lambda content: content["network"].update(head_link="cubic"))
    with pytest.raises(ValueError, match="cannot be rebuilt.*unknown network settings"):
        ImagePairClassifier.load(bad)


def test_an_embedder_of_a_classifier_keeps_its_network_settings(fitted_clf, tmp_path,
                                                                image_pairs):
    clf = pickle.loads(pickle.dumps(fitted_clf))
    clf.module_.test_time_flip = True
    embedder = ImageEmbedder(classifier=clf).fit()
    loaded = ImageEmbedder.load(embedder.save(tmp_path / "embedder.safetensors"))
    assert loaded.module_.test_time_flip and loaded.module_.head.link == "atanh"
    paths = image_pairs[0][:4, 0]
    assert_array_equal(loaded.transform(paths), embedder.transform(paths))


# ----------------------------------------------------------------------
# one schema per estimator: versions and the state they ask of the estimators
# ----------------------------------------------------------------------


def _format_version(path):
    header, _ = _header(path)
    return int(header["__metadata__"]["format_version"])


@pytest.mark.parametrize("colour", [False, True])
def test_each_schema_writes_the_oldest_version_that_holds_it(colour, tmp_path, monkeypatch):
    from sklearn_imgpair import ImageNeighbors

    files = os.path.join(os.path.dirname(__file__), "data", "files_v3")
    monkeypatch.chdir(files)
    clf = ImagePairClassifier.load(f"classifier_v{3 if colour else 2}.safetensors")
    embedder = ImageEmbedder(classifier=clf).fit()
    neighbors = ImageNeighbors(classifier=clf, n_neighbors=2).fit(
        [f"images/image{index}.png" for index in range(4)])
    version = 3 if colour else 2
    assert clf.precision == "fp32"  # as the file holds it
    assert _format_version(clf.save(tmp_path / "clf.safetensors")) == version
    # "auto", the embedder's default batch_size and precision, is new in version 4 (5 in a
    # search's file).
    assert _format_version(embedder.save(tmp_path / "embedder.safetensors")) == 4
    embedder.set_params(batch_size=32, precision="fp32")
    assert _format_version(embedder.save(tmp_path / "embedder.safetensors")) == version
    # A search's file holds its gallery's content keys, new in version 4.
    assert _format_version(neighbors.save(tmp_path / "neighbors.safetensors")) == 5
    neighbors.embedder_.set_params(batch_size=32, precision="fp32")
    assert _format_version(neighbors.save(tmp_path / "neighbors.safetensors")) == 4
    clf.set_params(precision="auto")
    assert _format_version(clf.save(tmp_path / "auto.safetensors")) == 4
    loaded = ImageNeighbors.load(tmp_path / "neighbors.safetensors")
    assert loaded.embedder_.module_.colour_share == (0.5 if colour else 0.0)
    assert_array_equal(loaded.kneighbors()[1], neighbors.kneighbors()[1])


def test_the_classifier_file_leaves_out_what_a_subclass_names(saved, fitted_clf):
    params = fitted_clf._to_file()
    assert params.keys() == fitted_clf.get_params(deep=False).keys()
    subclass = type("Subclass", (ImagePairClassifier,), {"_not_saved": ("threshold",)})
    clf = subclass(**fitted_clf.get_params(deep=False))
    assert "threshold" not in clf._to_file()
    assert clf.set_params(device=None)._to_file()["device"] == "cpu"


def test_an_embedder_is_rebuilt_from_what_its_file_holds(fitted_clf, image_pairs):
    X, _ = image_pairs
    embedder = ImageEmbedder(classifier=fitted_clf).fit(pd.DataFrame({"image": X[:3, 0]}))
    architecture = embedder._to_file()["architecture"]
    assert architecture == {"model_name": fitted_clf.model_name,
                            "model_kwargs": fitted_clf.model_kwargs,
                            "image_size": fitted_clf.image_size_}
    rebuilt = ImageEmbedder._from_file(
        {**embedder.get_params(deep=False), "classifier": None}, module=embedder.module_,
        image_size=embedder.image_size_, architecture=architecture,
        feature_names_in=["image"], n_features_in=1)
    assert rebuilt.classifier is None and rebuilt.n_features_in_ == 1
    assert_array_equal(rebuilt.feature_names_in_, ["image"])
    images = pd.DataFrame({"image": X[:4, 1]})
    assert_array_equal(rebuilt.transform(images), embedder.transform(images))


@pytest.mark.parametrize("algorithm", ["brute", "faiss"])
def test_a_search_gives_its_file_the_faiss_index_only(algorithm, monkeypatch):
    from sklearn_imgpair import ImageNeighbors

    if algorithm == "faiss":
        pytest.importorskip("faiss", reason="the faiss extra is not installed")
    monkeypatch.chdir(os.path.join(os.path.dirname(__file__), "data", "files_v3"))
    neighbors = ImageNeighbors.load(f"neighbors_{algorithm}.safetensors")
    faiss_index = neighbors._to_file()["faiss_index"]
    if algorithm == "brute":
        assert faiss_index is None
    else:
        assert faiss_index.dtype == np.uint8 and faiss_index.ndim == 1


def test_torch_losses_and_optimizers_are_known_classes():
    # The table of classes a file may name finds torch's losses by their private
    # base class, torch.nn.modules.loss._Loss: this fails if torch renames it.
    from sklearn_imgpair._persistence.estimator_state import decode_value, encode_value

    for cls in (torch.nn.BCEWithLogitsLoss, torch.nn.MSELoss, torch.optim.AdamW,
                torch.optim.SGD):
        encoded = encode_value(cls)
        assert encoded == {"__class__": f"{cls.__module__}.{cls.__qualname__}"}
        assert decode_value(encoded) is cls
    with pytest.raises(ValueError, match="cannot be saved without pickle"):
        encode_value(torch.nn.Linear)
