"""
Catalogue search: queries and their best matches
================================================

:class:`~sklearn_imgpair.ImageNeighbors` searches a catalogue with the
embeddings of a fitted :class:`~sklearn_imgpair.ImagePairClassifier`: ``fit``
embeds every catalogue image once, ``kneighbors_proba`` returns each query's
nearest images with the classifier's match probability of each pair. Here the
catalogue is the test images, products the fit never saw, and each image in
turn queries all the others. ``sklearn-imgpair search --plot`` draws the same
picture from the command line.
"""

# %%
# Fit a tiny matcher and index the catalogue
# ------------------------------------------
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from sklearn_imgpair import ImageNeighbors, ImagePairClassifier
from sklearn_imgpair.datasets import make_image_pairs
from sklearn_imgpair.metrics import mean_average_precision_at_r, recall_at_k

train, test = make_image_pairs(tempfile.mkdtemp(), n_products=20, n_views=4, image_size=32,
                               n_pairs=320, random_state=0)
pairs = ["Image1", "Image2"]
tiny_swin = dict(pretrained=False, image_size=32,
                 model_kwargs=dict(patch_size=2, window_size=4, embed_dim=16,
                                   depths=(1, 1), num_heads=(1, 2)))
clf = ImagePairClassifier(max_epochs=6, lr=3e-3, random_state=0, **tiny_swin)
clf.fit(train[pairs], train["Label"])

catalogue = np.unique(test[pairs].to_numpy().ravel())
products = np.array([Path(path).stem.split("_view")[0] for path in catalogue])
search = ImageNeighbors(classifier=clf, n_neighbors=3).fit(catalogue)
# Without X, each image queries the catalogue and is left out of its own list.
probabilities, neighbors = search.kneighbors_proba()
print(f"{len(catalogue)} images of {len(set(products))} products")
print("recall@1:", recall_at_k(products, products, neighbors, k=1, exclude_self=True))
print("MAP@R:", round(mean_average_precision_at_r(products, products, neighbors,
                                                  exclude_self=True), 3))

# %%
# Queries and their three best matches
# ------------------------------------
# Each match is titled with its match probability and framed in green when it
# shows the query's product, red otherwise.
queries = np.linspace(0, len(catalogue) - 1, 5).astype(int)
figure, axes = plt.subplots(len(queries), 4, figsize=(6.4, 8.4))
for row, query in zip(axes, queries):
    images = [(catalogue[query], "query", "tab:blue")]
    for probability, match in zip(probabilities[query], neighbors[query]):
        colour = "tab:green" if products[match] == products[query] else "tab:red"
        images.append((catalogue[match], f"p = {probability:.2f}", colour))
    for axis, (path, title, colour) in zip(row, images):
        axis.imshow(Image.open(path))
        axis.set_title(title, fontsize=9, color=colour)
        axis.set_xticks([])
        axis.set_yticks([])
        for spine in axis.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(3)
figure.suptitle("Nearest catalogue images (green: the same product)")
figure.tight_layout()
plt.show()
