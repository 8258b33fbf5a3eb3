"""
Grouped cross-validation against leaky cross-validation
=======================================================

Pairs share images: a product's views appear in several matching pairs and in
non-matching ones. A plain :class:`~sklearn.model_selection.KFold` then puts
pairs that share an image on both sides of a split, and a model that
remembers images is rewarded for it: the cross-validated score is measured on
images seen in training, not on new products. :func:`~sklearn_imgpair.pair_groups`
gives each pair the group of the images it is linked to (directly or through
other pairs), and :class:`~sklearn.model_selection.GroupKFold` keeps each
group on one side.

The model here is a scikit-learn pipeline: :class:`~sklearn_imgpair.PairFeatures`
of a frozen :class:`~sklearn_imgpair.ImageEmbedder` (a tiny Swin with random
weights) and a random forest, which can remember images well. Each image is
embedded once for all the fits.
"""

# %%
# Pairs in independent groups
# ---------------------------
# With ``n_categories``, non-matching pairs join products of one category
# only, so the pairs fall into one group per category.
import tempfile

import matplotlib.pyplot as plt
import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, KFold, cross_val_score
from sklearn.pipeline import make_pipeline

from sklearn_imgpair import ImageEmbedder, PairFeatures, pair_groups
from sklearn_imgpair.datasets import make_image_pairs

train, test = make_image_pairs(tempfile.mkdtemp(), n_products=24, n_views=4, image_size=32,
                               n_pairs=320, n_categories=6, random_state=0)
X, y = train[["Image1", "Image2"]], train["Label"]
groups = pair_groups(X)
print(f"{len(X)} training pairs in {len(np.unique(groups))} groups; "
      f"{len(test)} test pairs of other products")

# %%
# Three estimates of the same model
# ---------------------------------
# Leaky 3-fold cross-validation, grouped 3-fold cross-validation, and the
# score on the held-out test products, the number that cross-validation is
# meant to estimate.
tiny_swin = dict(pretrained=False, image_size=32,
                 model_kwargs=dict(patch_size=2, window_size=4, embed_dim=16,
                                   depths=(1, 1), num_heads=(1, 2)))
model = make_pipeline(PairFeatures(ImageEmbedder(random_state=0, **tiny_swin)),
                      RandomForestClassifier(n_estimators=200, random_state=0))
leaky = cross_val_score(model, X, y, cv=KFold(3, shuffle=True, random_state=0),
                        scoring="roc_auc")
grouped = cross_val_score(model, X, y, groups=groups, cv=GroupKFold(3), scoring="roc_auc")
model.fit(X, y)
held_out = roc_auc_score(test["Label"], model.predict_proba(test[["Image1", "Image2"]])[:, 1])
for name, scores in [("leaky KFold", leaky), ("GroupKFold", grouped)]:
    print(f"{name:12} ROC AUC {scores.mean():.3f} (folds: {np.round(scores, 3)})")
print(f"{'held out':12} ROC AUC {held_out:.3f}")

# %%
# The leaky estimate is measured on pairs whose images the forest has seen;
# the grouped one on images it has not, as the held-out products are. The
# dashed line is the held-out score.
figure, axis = plt.subplots(figsize=(5.5, 3.8))
for position, scores in enumerate([leaky, grouped]):
    axis.bar(position, scores.mean(), color=["tab:red", "tab:green"][position], alpha=0.7)
    axis.plot(np.full(len(scores), position), scores, "o", color="black")
axis.axhline(held_out, color="black", linestyle="--", label="held-out test products")
axis.set_xticks([0, 1], ["KFold (leaky)", "GroupKFold(pair_groups)"])
axis.set(ylabel="ROC AUC", ylim=(0.4, 1.0), title="Cross-validated ROC AUC, 3 folds")
axis.legend(loc="upper right")
figure.tight_layout()
plt.show()
