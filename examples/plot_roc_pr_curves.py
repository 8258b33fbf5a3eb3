"""
ROC and precision-recall curves
===============================

:class:`~sklearn_imgpair.ImagePairClassifier` is a scikit-learn classifier, so
scikit-learn's metrics and displays work on its match probabilities as they
are. Here: the ROC curve and the precision-recall curve of pairs of products
that the fit never saw, and the probabilities of matching and non-matching
pairs. ``sklearn-imgpair evaluate --plot curves.png`` draws the first two from
the command line.
"""

# %%
# Fit a tiny matcher on the synthetic catalogue
# ---------------------------------------------
import tempfile

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

from sklearn_imgpair import ImagePairClassifier
from sklearn_imgpair.datasets import make_image_pairs

train, test = make_image_pairs(tempfile.mkdtemp(), n_products=16, n_views=4, image_size=32,
                               n_pairs=320, random_state=0)
pairs = ["Image1", "Image2"]
tiny_swin = dict(pretrained=False, image_size=32,
                 model_kwargs=dict(patch_size=2, window_size=4, embed_dim=16,
                                   depths=(1, 1), num_heads=(1, 2)))
clf = ImagePairClassifier(max_epochs=6, lr=3e-3, random_state=0, **tiny_swin)
clf.fit(train[pairs], train["Label"])

# %%
# The curves
# ----------
# The match probability is the column of ``predict_proba`` for
# ``clf.match_label``. The dot on each curve is the operating point of
# ``predict``: the classifier's threshold, 0.5.
is_match = (test["Label"] == clf.match_label).to_numpy()
match_proba = clf.predict_proba(test[pairs])[:, list(clf.classes_).index(clf.match_label)]
predicted = match_proba > clf.threshold

figure, (roc, pr) = plt.subplots(1, 2, figsize=(10, 4.2))
RocCurveDisplay.from_predictions(is_match, match_proba, name="ImagePairClassifier", ax=roc,
                                 plot_chance_level=True)
roc.plot(predicted[~is_match].mean(), predicted[is_match].mean(), "o", color="black",
         label=f"threshold {clf.threshold}")
roc.legend(loc="lower right")
PrecisionRecallDisplay.from_predictions(is_match, match_proba, name="ImagePairClassifier",
                                        ax=pr, plot_chance_level=True)
pr.plot(predicted[is_match].mean(), is_match[predicted].mean(), "o", color="black",
        label=f"threshold {clf.threshold}")
pr.legend(loc="lower left")
figure.tight_layout()

# %%
# The probabilities
# -----------------
# Matching pairs should get high probabilities, the others low ones; the head
# is calibrated on the validation pairs, so that 0.5 is a sensible threshold.
bins = np.linspace(0, 1, 21)
figure, axis = plt.subplots(figsize=(5.5, 3.6))
axis.hist(match_proba[is_match], bins=bins, alpha=0.6, label="matching pairs")
axis.hist(match_proba[~is_match], bins=bins, alpha=0.6, label="non-matching pairs")
axis.axvline(clf.threshold, color="black", linestyle="--")
axis.set(xlabel="match probability", ylabel="test pairs")
axis.legend()
figure.tight_layout()
print(f"ROC AUC {clf.score(test[pairs], test['Label']):.3f}, "
      f"accuracy at {clf.threshold}: {(predicted == is_match).mean():.3f}")
plt.show()
