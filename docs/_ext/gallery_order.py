"""The order of the gallery's examples: from the tutorial flow to its refinements."""

ORDER = (
    "plot_tutorial.py",
    "plot_roc_pr_curves.py",
    "plot_search_grid.py",
    "plot_embedding_tsne.py",
    "plot_grouped_cv.py",
    "plot_threshold.py",
)


class ExampleOrder:
    """sphinx-gallery's ``within_subsection_order``: examples in :data:`ORDER`, then the rest.

    Parameters
    ----------
    src_dir : str
        The gallery's folder (sphinx-gallery passes it; the order does not need it).
    """

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename):
        """Return the sort key of an example's file name."""
        return (ORDER.index(filename), "") if filename in ORDER else (len(ORDER), filename)
