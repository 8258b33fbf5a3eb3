"""Write the model files that tests/persistence/test_legacy_files.py loads with the current code.

Run it from the repository root with the version of sklearn-imgpair that is to
write them, into a new folder named after the versions it writes::

    python tests/persistence/data/make_legacy_files.py tests/persistence/data/files_v3

The files in ``tests/persistence/data/files_v3`` were written by the code of model file
format 3 and ONNX format 2 (sklearn-imgpair before the file format was split
into one container and one schema per estimator). Never write them again with a
later version: they are there to prove that the files users already have still
load. A later format adds a folder of its own.

The folder receives:

* ``images/``: six 32 px PNGs, the inputs of every expected output;
* ``classifier_v2.safetensors``: a classifier without colour, which the writer
  stores as model file format 2;
* ``classifier_v3.safetensors``: a classifier with ``module__colour_share=0.5``
  (format 3);
* ``embedder.safetensors``: an :class:`ImageEmbedder`;
* ``neighbors_brute.safetensors`` and, when faiss is installed,
  ``neighbors_faiss.safetensors``: an :class:`ImageNeighbors` with the exact
  search and with a flat FAISS index;
* ``classifier.onnx``, when the ``onnx`` extra is installed: the version 2
  classifier exported in float32 (the committed file without its nodes' stack
  traces, which named the writing machine's paths; the exporter now leaves them
  out itself, see ``_deploy/onnx_export.py``);
* ``expected.npz``: ``predict_proba`` of both classifiers and the ONNX file on
  :data:`PAIRS`, ``transform`` of the embedder and ``kneighbors`` of each
  search on the images;
* ``pickles.pkl`` and ``pickles.npz`` (:func:`write_pickles`): the version 2
  classifier fitted again and pickled, with an :class:`ImageEmbedder` on its
  network, and their outputs: pickles hold the module paths of the callbacks and
  other objects, which a redesign may move. They were written by the code of the
  commit before the second redesign step, with ``--pickles-only``.
"""

import os
import pickle
import shutil
import sys
import tempfile
import warnings

import numpy as np

from sklearn_imgpair import ImageEmbedder, ImageNeighbors, ImagePairClassifier
from sklearn_imgpair.datasets import make_image_pairs

# The tiny Swin of tests/conftest.py, with an 8-wide stem: files of a few dozen KB.
TINY_SWIN = dict(patch_size=2, window_size=4, embed_dim=8, depths=(1, 1), num_heads=(1, 2))
IMAGE_SIZE = 32
#: The committed images, and the pairs (positions in IMAGES) whose probabilities are kept.
IMAGES = [f"image{index}.png" for index in range(6)]
PAIRS = [(0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 5), (0, 5)]
N_NEIGHBORS = 3


def _fit_classifier(X, y, **params):
    clf = ImagePairClassifier(pretrained=False, image_size=IMAGE_SIZE,
                              model_kwargs=dict(TINY_SWIN), lr=3e-3, max_epochs=2,
                              batch_size=16, random_state=0, verbose=0, **params)
    return clf.fit(X, y)


def main(folder):
    folder = os.path.abspath(folder)
    images_folder = os.path.join(folder, "images")
    os.makedirs(images_folder, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        train, test = make_image_pairs(scratch, n_products=8, n_views=4, image_size=IMAGE_SIZE,
                                       n_pairs=64, random_state=0)
        sources = sorted(set(test["Image1"]) | set(test["Image2"]))[:len(IMAGES)]
        for source, name in zip(sources, IMAGES):
            shutil.copyfile(source, os.path.join(images_folder, name))
        X = train[["Image1", "Image2"]].to_numpy(dtype=object)
        y = train["Label"].to_numpy()
        plain = _fit_classifier(X, y)
        colour = _fit_classifier(X, y, module__colour_share=0.5)

    # Paths relative to the folder, where the test runs: no machine's folders in the files.
    os.chdir(folder)
    paths = np.array([f"images/{name}" for name in IMAGES], dtype=object)
    pairs = paths[np.asarray(PAIRS)]
    expected = {"proba_v2": plain.predict_proba(pairs),
                "proba_v3": colour.predict_proba(pairs)}
    plain.save("classifier_v2.safetensors")
    colour.save("classifier_v3.safetensors")

    embedder = ImageEmbedder(pretrained=False, image_size=IMAGE_SIZE,
                             model_kwargs=dict(TINY_SWIN), random_state=0).fit()
    expected["transform"] = embedder.transform(paths)
    embedder.save("embedder.safetensors")

    searches = {"brute": dict(algorithm="brute")}
    try:
        import faiss  # noqa: F401
    except ImportError:
        warnings.warn("faiss is not installed: no neighbors_faiss.safetensors.", stacklevel=2)
    else:
        searches["faiss"] = dict(algorithm="faiss", faiss_index="flat")
    for name, params in searches.items():
        neighbors = ImageNeighbors(classifier=plain, n_neighbors=N_NEIGHBORS, **params)
        neighbors.fit(paths)
        distances, indices = neighbors.kneighbors(paths)
        expected[f"distances_{name}"], expected[f"indices_{name}"] = distances, indices
        neighbors.save(f"neighbors_{name}.safetensors")

    try:
        from sklearn_imgpair.onnx import OnnxImageMatcher

        plain.export_onnx("classifier.onnx")
    except ImportError:
        warnings.warn("the onnx extra is not installed: no classifier.onnx.", stacklevel=2)
    else:
        matcher = OnnxImageMatcher("classifier.onnx")
        expected["proba_onnx"] = matcher.predict_proba(pairs)
    np.savez("expected.npz", **expected)
    write_pickles(folder)


def write_pickles(folder):
    """Pickle a fitted classifier and an embedder on its network, with their outputs."""
    folder = os.path.abspath(folder)
    with tempfile.TemporaryDirectory() as scratch:
        train, _ = make_image_pairs(scratch, n_products=8, n_views=4, image_size=IMAGE_SIZE,
                                    n_pairs=64, random_state=0)
        clf = _fit_classifier(train[["Image1", "Image2"]].to_numpy(dtype=object),
                              train["Label"].to_numpy())
    os.chdir(folder)
    paths = np.array([f"images/{name}" for name in IMAGES], dtype=object)
    embedder = ImageEmbedder(classifier=clf).fit()
    with open("pickles.pkl", "wb") as file:
        pickle.dump({"classifier": clf, "embedder": embedder}, file)
    np.savez("pickles.npz", proba=clf.predict_proba(paths[np.asarray(PAIRS)]),
             transform=embedder.transform(paths))


if __name__ == "__main__":
    arguments = [argument for argument in sys.argv[1:] if argument != "--pickles-only"]
    target = arguments[0] if arguments else os.path.join(os.path.dirname(__file__), "files_v3")
    (write_pickles if "--pickles-only" in sys.argv else main)(target)
