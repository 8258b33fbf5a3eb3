"""
A map of the embeddings
=======================

:class:`~sklearn_imgpair.ImageEmbedder` turns images into unit vectors; a
matcher is trained so that two views of one product get vectors with a high
cosine. This example draws a 2-D map of the embeddings of images of products
that the fit never saw, made with scikit-learn's
:class:`~sklearn.manifold.TSNE` and coloured by product.
"""

# %%
# Fit a tiny matcher and embed the test images
# --------------------------------------------
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sklearn.manifold import TSNE
from sklearn.neighbors import NearestNeighbors

from sklearn_imgpair import ImageEmbedder, ImagePairClassifier
from sklearn_imgpair.datasets import make_image_pairs
from sklearn_imgpair.metrics import recall_at_k

train, test = make_image_pairs(tempfile.mkdtemp(), n_products=32, n_views=6, image_size=32,
                               n_pairs=360, random_state=0)
pairs = ["Image1", "Image2"]
tiny_swin = dict(pretrained=False, image_size=32,
                 model_kwargs=dict(patch_size=2, window_size=4, embed_dim=16,
                                   depths=(1, 1), num_heads=(1, 2)))
clf = ImagePairClassifier(max_epochs=6, lr=3e-3, random_state=0, **tiny_swin)
clf.fit(train[pairs], train["Label"])

images = np.unique(test[pairs].to_numpy().ravel())
products = np.array([Path(path).stem.split("_view")[0] for path in images])
embeddings = ImageEmbedder(classifier=clf).fit().transform(images)
print(f"{len(images)} test images of {len(set(products))} products, "
      f"embeddings of shape {embeddings.shape}")

# %%
# How often is an image's nearest neighbour a view of its product?
# ----------------------------------------------------------------
# :func:`~sklearn_imgpair.metrics.recall_at_k` with ``k=1``, each image
# querying all the others by cosine: a number that does not depend on the map.
nearest = NearestNeighbors(n_neighbors=1, metric="cosine").fit(embeddings).kneighbors(
    return_distance=False)
recall = recall_at_k(products, products, nearest, k=1, exclude_self=True)
print(f"recall@1: {recall:.2f}; test ROC AUC on pairs: "
      f"{clf.score(test[pairs], test['Label']):.2f}")

# %%
# The map
# -------
# t-SNE keeps near neighbours near: views of one product (one colour) that
# the network embeds alike lie together; where colours mix, the tiny model,
# trained for seconds from random weights, confuses those products. A
# pretrained backbone on real photos separates them far better.
codes = np.unique(products, return_inverse=True)[1]
points = TSNE(perplexity=10, init="pca", metric="cosine", random_state=0).fit_transform(
    embeddings)
figure, axis = plt.subplots(figsize=(6, 5))
axis.scatter(points[:, 0], points[:, 1], c=codes, cmap="tab10", s=50)
axis.set_xticks([])
axis.set_yticks([])
axis.set_title(f"t-SNE of test-image embeddings, one colour per product "
               f"(recall@1 {recall:.2f})", fontsize=10)
figure.tight_layout()
plt.show()
