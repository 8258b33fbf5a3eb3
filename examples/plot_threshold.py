"""
Choosing a threshold
====================

``predict`` calls a pair a match when its match probability is above
``threshold`` (0.5 by default, sensible once the head is calibrated). For
another trade-off, scikit-learn's
:class:`~sklearn.model_selection.TunedThresholdClassifierCV` chooses the
threshold that maximises a score. Wrapped in
:class:`~sklearn.frozen.FrozenEstimator`, the fitted network is used as it
is, never refit, so only pairs it did not fit on should choose: here, pairs of
validation products, and the choice is then checked on pairs of test products.
"""

# %%
# Three sets of products
# ----------------------
# Training and validation pairs of one catalogue, split by product; test pairs
# of another catalogue, drawn with another seed.
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import TunedThresholdClassifierCV

from sklearn_imgpair import ImagePairClassifier
from sklearn_imgpair.datasets import make_image_pairs

folder = Path(tempfile.mkdtemp())
train, valid = make_image_pairs(folder / "catalogue", n_products=24, n_views=4, image_size=32,
                                n_pairs=360, test_size=0.35, random_state=0)
_, test = make_image_pairs(folder / "other", n_products=12, n_views=4, image_size=32,
                           n_pairs=200, test_size=0.5, random_state=1)
pairs = ["Image1", "Image2"]
print(f"{len(train)} training, {len(valid)} validation and {len(test)} test pairs")

tiny_swin = dict(pretrained=False, image_size=32,
                 model_kwargs=dict(patch_size=2, window_size=4, embed_dim=16,
                                   depths=(1, 1), num_heads=(1, 2)))
clf = ImagePairClassifier(max_epochs=6, lr=3e-3, random_state=0, **tiny_swin)
clf.fit(train[pairs], train["Label"])

# %%
# Tune the threshold on the validation pairs
# ------------------------------------------
# The balanced accuracy of every candidate threshold, averaged over 5 folds of
# the validation pairs; the best one becomes the tuned classifier's.
tuned = TunedThresholdClassifierCV(FrozenEstimator(clf), scoring="balanced_accuracy", cv=5,
                                   store_cv_results=True)
tuned.fit(valid[pairs], valid["Label"])
print(f"best threshold {tuned.best_threshold_:.3f}, "
      f"validation balanced accuracy {tuned.best_score_:.3f}")

figure, axis = plt.subplots(figsize=(6, 3.8))
axis.plot(tuned.cv_results_["thresholds"], tuned.cv_results_["scores"], color="tab:blue")
axis.axvline(clf.threshold, color="black", linestyle="--", label=f"default {clf.threshold}")
axis.axvline(tuned.best_threshold_, color="tab:red", label=f"tuned {tuned.best_threshold_:.2f}")
axis.set(xlabel="threshold on the match probability", ylabel="balanced accuracy",
         title="Validation pairs, mean of 5 folds")
axis.legend()
figure.tight_layout()

# %%
# Check it on the test pairs
# --------------------------
# ``tuned.predict`` takes pairs as ``clf`` does. A threshold chosen on few
# pairs is itself an estimate: compare both on pairs that chose neither.
for name, model in [("default", clf), ("tuned", tuned)]:
    score = balanced_accuracy_score(test["Label"], model.predict(test[pairs]))
    print(f"{name:8} test balanced accuracy {score:.3f}")

# %%
# With the usual labels (``match_label`` the larger one, as 1 in {0, 1}), the
# tuned threshold can go into the model file for ``sklearn-imgpair predict``:
# ``clf.set_params(threshold=tuned.best_threshold_)`` before ``clf.save``.
plt.show()
