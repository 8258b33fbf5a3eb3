"""embed_dask(): embed a large collection of images on a Dask cluster, partition by partition."""

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from sklearn_imgpair._optional import import_optional

__all__ = ["embed_dask"]


def _embed_partition(paths, embedder, columns):
    """Embed one partition of paths; the result keeps the partition's index."""
    if len(paths) == 0:
        return pd.DataFrame(np.empty((0, len(columns)), dtype=np.float32), index=paths.index,
                            columns=columns)
    vectors = embedder.transform(paths.to_numpy(dtype=object))
    return pd.DataFrame(vectors, index=paths.index, columns=columns)


def embed_dask(embedder, paths, *, client=None):
    """Embed image paths held in a Dask collection, on the workers of a Dask cluster.

    The fitted embedder is sent to every worker once, before any work
    starts (``client.scatter(..., broadcast=True)``), and each partition of
    ``paths`` is embedded with ``map_partitions`` by the copy on its worker:
    the network is serialised once per worker, not once per partition.
    Within a worker, each distinct image is embedded once and cached as
    :meth:`ImageEmbedder.transform` does.

    Parameters
    ----------
    embedder : ImageEmbedder
        A fitted embedder (``ImageEmbedder(...).fit()``, or
        ``ImageEmbedder(classifier=clf).fit()`` for a fitted matcher's
        vectors). It runs on the device it was fitted on (with the default
        ``device="auto"``, the client's GPU if it has one), so fit it with
        ``device="cpu"`` for workers without a GPU.
    paths : dask Series or one-column dask DataFrame
        Image paths readable by the workers, e.g.
        ``dask.dataframe.read_csv("images.csv")["path"]``.
    client : distributed.Client, default=None
        The cluster's client; None uses the current default client.

    Returns
    -------
    embeddings : dask DataFrame
        Lazy: one row of ``embedder.embedding_dim_`` float32 columns (named
        by ``embedder.get_feature_names_out()``) per path, with the
        partitions and index of ``paths``, so rows stay in the order of
        ``paths``. ``.compute().to_numpy()`` gives the same array as
        ``embedder.transform(paths.compute())``; ``.to_parquet(...)`` writes
        a collection too large for memory.

    Raises
    ------
    ImportError
        If dask's dataframe or distributed packages are missing.
    NotFittedError
        If ``embedder`` is not fitted.
    TypeError
        If ``paths`` is not a dask Series or DataFrame.
    ValueError
        If ``paths`` has more than one column, or no client is running.

    See Also
    --------
    ImageEmbedder : The transformer that embeds the images.

    Examples
    --------
    A sketch (it needs a cluster)::

        import dask.dataframe as dd
        from dask.distributed import Client
        from sklearn_imgpair import ImageEmbedder, embed_dask

        client = Client("scheduler-address:8786")
        paths = dd.read_csv("images-*.csv")["path"]
        embedder = ImageEmbedder(weights_path="swin_tiny.safetensors").fit()
        embed_dask(embedder, paths).to_parquet("embeddings/")
    """
    dd = import_optional("dask.dataframe", "embed_dask")
    distributed = import_optional("distributed", "embed_dask")
    check_is_fitted(embedder)
    if isinstance(paths, dd.DataFrame):
        if len(paths.columns) != 1:
            raise ValueError(
                f"paths must have one column of image paths; got {len(paths.columns)} "
                f"columns {list(paths.columns)}."
            )
        paths = paths[paths.columns[0]]
    if not isinstance(paths, dd.Series):
        raise TypeError(
            "paths must be a dask Series or a one-column dask DataFrame of image paths "
            f"(e.g. dask.dataframe.read_csv(...)['path']); got {type(paths).__name__}."
        )
    if client is None:
        try:
            client = distributed.default_client()
        except ValueError:
            raise ValueError(
                "embed_dask needs a running dask.distributed Client: create one "
                "(Client(cluster) or Client('scheduler-address')) or pass client=."
            ) from None
    columns = [str(name) for name in embedder.get_feature_names_out()]
    # One copy of the network per worker; every partition task depends on it.
    [embedder_on_workers] = client.scatter([embedder], broadcast=True, hash=False)
    meta = pd.DataFrame(np.empty((0, len(columns)), dtype=np.float32), columns=columns)
    return paths.map_partitions(_embed_partition, embedder_on_workers, columns, meta=meta)
