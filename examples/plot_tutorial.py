"""
Matching pairs: the tutorial flow
=================================

The steps of AutoMM's image-to-image matching tutorial with
:class:`~sklearn_imgpair.ImagePairClassifier`: prepare pairs of images, look at
them, fit, evaluate, predict, predict probabilities, extract embeddings, save
and load.
"""

# %%
# Prepare the data
# ----------------
# :func:`~sklearn_imgpair.datasets.make_image_pairs` draws a synthetic
# catalogue: each "product" is seen in several views (pose, scale, position,
# lighting, background). Two views of one product make a matching pair
# (``Label`` 1), two products a non-matching one. Train and test tables hold
# disjoint products.
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
from PIL import Image

from sklearn_imgpair import ImageEmbedder, ImagePairClassifier
from sklearn_imgpair.datasets import make_image_pairs

folder = Path(tempfile.mkdtemp())
train, test = make_image_pairs(folder / "images", n_products=16, n_views=4, image_size=32,
                               n_pairs=240, random_state=0)
pairs = ["Image1", "Image2"]
print(f"{len(train)} training pairs, {len(test)} test pairs")
train.head()

# %%
# A matching and a non-matching pair:
figure, axes = plt.subplots(2, 2, figsize=(4, 4.4))
for row, label in zip(axes, (1, 0)):
    pair = train[train["Label"] == label].iloc[0]
    for axis, column in zip(row, pairs):
        axis.imshow(Image.open(pair[column]))
        axis.set_title(Path(pair[column]).stem, fontsize=8)
        axis.axis("off")
    row[0].text(-4, 16, "match" if label == 1 else "no match", rotation=90,
                ha="right", va="center")
figure.tight_layout()

# %%
# Fit
# ---
# A tiny Swin Transformer from random weights, small enough to train in
# seconds on a CPU. With the defaults (``pretrained=True``) the classifier
# starts from the pretrained ``swin_tiny_patch4_window7_224`` instead.
tiny_swin = dict(pretrained=False, image_size=32,
                 model_kwargs=dict(patch_size=2, window_size=4, embed_dim=16,
                                   depths=(1, 1), num_heads=(1, 2)))
clf = ImagePairClassifier(max_epochs=6, lr=3e-3, random_state=0, **tiny_swin)
clf.fit(train[pairs], train["Label"])

# %%
# skorch records every epoch in ``clf.history``: the training and validation
# losses, and the validation ROC AUC that early stopping watches (the best
# epoch's weights are restored at the end). The training loss adds the
# identity-mining loss (``pair_mining="graph"``, the default) to the pairs'
# binary cross-entropy, hence its higher level.
figure, (left, right) = plt.subplots(1, 2, figsize=(8, 3))
epochs = clf.history[:, "epoch"]
left.plot(epochs, clf.history[:, "train_loss"], "o-", label="training")
left.plot(epochs, clf.history[:, "valid_loss"], "o-", label="validation")
left.set(xlabel="epoch", ylabel="loss")
left.legend()
right.plot(epochs, clf.history[:, "valid_auc"], "o-", color="tab:green")
right.set(xlabel="epoch", ylabel="validation ROC AUC")
figure.tight_layout()

# %%
# Evaluate, predict and predict probabilities
# -------------------------------------------
# ``score`` is the ROC AUC of the match probability on pairs of products that
# the fit never saw; ``predict`` calls a pair a match above ``threshold``
# (0.5); ``predict_proba`` has one column per label, in ``clf.classes_`` order.
print("test ROC AUC:", round(clf.score(test[pairs], test["Label"]), 3))
print("predictions:", clf.predict(test[pairs].head(3)))
print("probabilities:\n", clf.predict_proba(test[pairs].head(3)).round(3))

# %%
# Extract embeddings
# ------------------
# :class:`~sklearn_imgpair.ImageEmbedder` reuses the fitted network: image
# paths in, unit vectors out, the vectors whose cosine the classifier scores.
embedder = ImageEmbedder(classifier=clf).fit()
embeddings_1 = embedder.transform(test["Image1"].head(5))
embeddings_2 = embedder.transform(test["Image2"].head(5))
print(embeddings_1.shape, "cosines:", (embeddings_1 * embeddings_2).sum(axis=1).round(3))

# %%
# Save and load
# -------------
# One ``.safetensors`` file: the weights, and the parameters, labels and
# preprocessing as JSON, with a checksum and no pickle.
path = clf.save(folder / "matcher.safetensors")
loaded = ImagePairClassifier.load(path)
print("same probabilities after loading:",
      (loaded.predict_proba(test[pairs]) == clf.predict_proba(test[pairs])).all())

plt.show()
