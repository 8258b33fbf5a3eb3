"""Catalogue search speed: scikit-learn's brute force against BruteForceIndex and FAISS.

For each gallery size, side by side in one run, on the same synthetic unit
float32 vectors (``--dim`` 768, the length of a Swin-T embedding), the ``--k``
nearest gallery vectors by cosine distance of each of ``--n-queries`` queries,
with:

- ``sklearn``: ``NearestNeighbors(metric="cosine", algorithm="brute")
  .fit(G).kneighbors(Q, k)``;
- ``brute``: ``BruteForceIndex``, the exact search of
  ``ImageNeighbors(algorithm="brute")`` (torch, a chunk of queries at a time);
- ``faiss_flat``, ``faiss_ivf``, ``faiss_hnsw``: ``FaissIndex`` with its
  default parameters (those of ``ImageNeighbors(algorithm="faiss")``).

Each method runs in a fresh subprocess that makes the data itself (the same
seeded vectors every time), so that its memory is its own. Figures:

- build time (``fit``, or building the index) and search time (the median of
  ``--repeats`` searches), and the speed-up of each against scikit-learn's:
  search alone, and build plus search;
- recall@k against exact search: scikit-learn's result, or BruteForceIndex's
  where scikit-learn is skipped;
- agreement with scikit-learn: the fraction of queries whose k indices are
  identical, in the same order;
- memory, from the resident memory of the subprocess (``VmRSS``, and its peak
  ``VmHWM``, reset before building and again before searching; Linux): the
  memory the index holds once built, and the peak during the search, both in
  MB above the resident memory with the gallery and queries made and the
  libraries loaded and warmed up on a small gallery.

Data: ``--distribution clustered`` (the default) has the structure of image
embeddings of products: categories of 1,000 gallery vectors around random unit
centres; in each, identities (a centre plus Gaussian noise as long as the
centre, normalised: cosine about 0.5 between identities of one category); and 5
gallery views per identity (the identity plus noise half as long, normalised:
cosine about 0.8 between views). Each query is one more view of a random
identity. ``--distribution uniform`` draws every vector uniformly on the
sphere, which leaves an approximate index nothing to exploit (its worst
case). ``--seed`` seeds both.

The machine's other users share its cores: timings vary by tens of percent
between runs; compare the methods of one run.

Usage::

    python benchmarks/bench_search.py          # 10,000 and 100,000 vectors
    python benchmarks/bench_search.py --distribution uniform
    python benchmarks/bench_search.py --gallery-sizes 1000000   # see below

On 2 shared cores the first run takes about 8 minutes, 3 of them building the
HNSW graph of 100,000 vectors; the uniform run about 15 (HNSW builds slower on
vectors without structure).

At 1,000,000 vectors scikit-learn is skipped (add ``--sklearn-1m`` to run it)
and the run needs about 8 GB of memory (the 2.9 GB gallery, FAISS's copy of
it, and the search). Building the HNSW graph of 1,000,000 vectors takes about
40 minutes on 2 cores (extrapolated from 100,000), so ``--methods brute
faiss_ivf`` is the 1M run; the default IVF (4,000 lists trained on 256,000
vectors) took 15 minutes to build on 2 shared cores, and ``--faiss-params``
sets fewer lists::

    python benchmarks/bench_search.py --gallery-sizes 1000000 --methods brute faiss_ivf \
        --faiss-params '{"ivf": {"n_lists": 1024}}'
"""

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from _common import describe_machine, format_table, median, memory_mb, reset_peak_memory

METHODS = ("sklearn", "brute", "faiss_flat", "faiss_ivf", "faiss_hnsw")
CATEGORY_SIZE = 1000
VIEWS_PER_IDENTITY = 5
IDENTITY_SPREAD = 1.0
VIEW_NOISE = 0.5
# Rows made at once: bounds the temporaries of making a 1M gallery.
CHUNK_ROWS = 65536


def _unit(X):
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X


def _noisy(rng, centres, scale):
    """Unit vectors: each row of ``centres`` plus Gaussian noise of norm about ``scale``."""
    noise = rng.standard_normal(centres.shape, dtype=np.float32)
    return _unit(centres + noise * np.float32(scale / np.sqrt(centres.shape[1])))


def make_vectors(n_gallery, n_queries, dim, distribution="clustered", seed=0):
    """Gallery and queries: float32 unit rows, the same for the same arguments.

    Returns
    -------
    gallery : ndarray of shape (n_gallery, dim)
    queries : ndarray of shape (n_queries, dim)
    """
    rng = np.random.default_rng(seed)
    gallery = np.empty((n_gallery, dim), dtype=np.float32)
    if distribution == "uniform":
        for start in range(0, n_gallery, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, n_gallery)
            gallery[start:stop] = _unit(rng.standard_normal((stop - start, dim),
                                                            dtype=np.float32))
        return gallery, _unit(rng.standard_normal((n_queries, dim), dtype=np.float32))
    n_categories = -(-n_gallery // CATEGORY_SIZE)
    n_identities = -(-n_gallery // VIEWS_PER_IDENTITY)
    centres = _unit(rng.standard_normal((n_categories, dim), dtype=np.float32))
    identity_category = np.arange(n_identities) // (CATEGORY_SIZE // VIEWS_PER_IDENTITY)
    identities = _noisy(rng, centres[identity_category], IDENTITY_SPREAD)
    for start in range(0, n_gallery, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, n_gallery)
        gallery[start:stop] = _noisy(
            rng, identities[np.arange(start, stop) // VIEWS_PER_IDENTITY], VIEW_NOISE)
    queries = _noisy(rng, identities[rng.integers(0, n_identities, n_queries)], VIEW_NOISE)
    return gallery, queries


def _method(name, args):
    """``(build, search)`` functions of a method: ``build(G)``, ``search(built, Q, k)``."""
    if name == "sklearn":
        from sklearn.neighbors import NearestNeighbors

        return (lambda G: NearestNeighbors(metric="cosine", algorithm="brute").fit(G),
                lambda nn, Q, k: nn.kneighbors(Q, k))
    if name == "brute":
        from sklearn_imgpair._search.vector_index import BruteForceIndex

        return (lambda G: BruteForceIndex(G, chunk_size=args.chunk_size, device=args.device),
                lambda index, Q, k: index.kneighbors(Q, k))
    from sklearn_imgpair._search.faiss_index import FaissIndex

    kind = name.split("_", 1)[1]
    params = (args.faiss_params or {}).get(kind)
    return (lambda G: FaissIndex(G, index=kind, params=params, random_state=0),
            lambda index, Q, k: index.kneighbors(Q, k))


def run_child(args):
    """In a fresh subprocess: make the data, build, search; print one JSON line."""
    build, search = _method(args.child, args)
    gallery, queries = make_vectors(args.child_size, args.n_queries, args.dim,
                                    args.distribution, args.seed)
    # Warm up on a small gallery: lazily loaded libraries, thread pools and
    # BLAS buffers belong to the baseline, not to the measured search.
    small = gallery[:min(len(gallery), 2000)]
    search(build(small), queries[:10], min(args.k, len(small)))
    del small
    gc.collect()
    before, _ = memory_mb()
    reset = reset_peak_memory()
    start = time.perf_counter()
    built = build(gallery)
    build_s = time.perf_counter() - start
    held, build_peak = memory_mb()
    reset_peak_memory()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        _, indices = search(built, queries, args.k)
        times.append(time.perf_counter() - start)
    _, search_peak = memory_mb()
    np.save(args.child_out, np.asarray(indices, dtype=np.int64))
    print(json.dumps(dict(
        method=args.child, size=args.child_size, build_s=build_s, search_s=median(times),
        params=getattr(built, "params", None),
        data_mb=(gallery.nbytes + queries.nbytes) / 2**20, rss_before_mb=before,
        index_mb=held - before, build_peak_mb=build_peak - before,
        search_peak_mb=search_peak - before, search_working_mb=search_peak - held,
        peak_reset=reset)))


def _run_method(name, size, args, folder):
    out = os.path.join(folder, f"{name}_{size}.npy")
    command = [sys.executable, os.path.abspath(__file__), "--child", name,
               "--child-size", str(size), "--child-out", out,
               "--n-queries", str(args.n_queries), "--dim", str(args.dim), "--k", str(args.k),
               "--distribution", args.distribution, "--seed", str(args.seed),
               "--repeats", str(args.repeats), "--device", args.device]
    if args.chunk_size is not None:
        command += ["--chunk-size", str(args.chunk_size)]
    if args.faiss_params:
        command += ["--faiss-params", json.dumps(args.faiss_params)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{name} on {size} vectors failed:\n{result.stderr[-3000:]}")
    row = json.loads(result.stdout.strip().splitlines()[-1])
    return row, np.load(out)


def _recall(found, exact):
    return float(np.mean([len(np.intersect1d(a, b)) / len(b) for a, b in zip(found, exact)]))


def bench_size(size, args, folder):
    methods = [name for name in args.methods
               if name != "sklearn" or size < 1_000_000 or args.sklearn_1m]
    rows, indices = [], {}
    for name in methods:
        row, indices[name] = _run_method(name, size, args, folder)
        rows.append(row)
        print(f"... {name} on {size} vectors: build {row['build_s']:.2f} s, "
              f"search {row['search_s']:.2f} s", flush=True)
    reference = next((name for name in ("sklearn", "brute", "faiss_flat") if name in indices),
                     None)
    sklearn_row = next((row for row in rows if row["method"] == "sklearn"), None)
    for row in rows:
        found = indices[row["method"]]
        row["reference"] = reference
        row["recall"] = _recall(found, indices[reference]) if reference else None
        row["agreement"] = (float(np.mean((found == indices["sklearn"]).all(axis=1)))
                            if sklearn_row else None)
        row["speedup_search"] = (sklearn_row["search_s"] / row["search_s"]
                                 if sklearn_row else None)
        row["speedup_total"] = ((sklearn_row["build_s"] + sklearn_row["search_s"])
                                / (row["build_s"] + row["search_s"]) if sklearn_row else None)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gallery-sizes", default="10000,100000",
                        type=lambda text: [int(size) for size in text.split(",")],
                        help="comma-separated gallery sizes (default: 10000,100000)")
    parser.add_argument("--n-queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--distribution", choices=["clustered", "uniform"],
                        default="clustered")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--sklearn-1m", action="store_true",
                        help="run scikit-learn on galleries of 1,000,000 vectors and more too")
    parser.add_argument("--repeats", type=int, default=1, help="searches timed per method")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="BruteForceIndex's chunk_size (default: its own)")
    parser.add_argument("--device", default="cpu", help="BruteForceIndex's device")
    parser.add_argument("--faiss-params", type=json.loads, default=None,
                        help='FAISS settings per kind, as JSON, e.g. \'{"ivf": {"n_lists": '
                             '1024}}\' (default: those of ImageNeighbors)')
    parser.add_argument("--child", choices=METHODS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-size", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        return run_child(args)

    print(f"Machine: {describe_machine(args.device)}")
    print(f"Data: {args.distribution}, d={args.dim}, {args.n_queries} queries, k={args.k}, "
          f"seed {args.seed}")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for size in args.gallery_sizes:
            rows += bench_size(size, args, folder)
    columns = [("method", "method", ""), ("build_s", "build (s)", ".3f"),
               ("search_s", "search (s)", ".3f"), ("speedup_search", "search speed-up", ".2f"),
               ("speedup_total", "build+search speed-up", ".2f"),
               ("recall", f"recall@{args.k}", ".4f"), ("agreement", "= sklearn", ".4f"),
               ("index_mb", "index held (MB)", ".0f"),
               ("search_working_mb", "search peak extra (MB)", ".0f")]
    for size in args.gallery_sizes:
        size_rows = [row for row in rows if row["size"] == size]
        shown = [{key: ("" if value is None else value) for key, value in row.items()}
                 for row in size_rows]
        print(f"\n## {size} gallery vectors ({size_rows[0]['data_mb']:.0f} MB with the "
              f"queries; recall against {size_rows[0]['reference']})\n")
        print(format_table(shown, columns))
        for row in size_rows:
            if row["params"]:
                print(f"{row['method']} params: {row['params']}")
    if rows and not rows[0]["peak_reset"]:
        print("\n(The peak could not be reset: peaks are those of the whole process.)")
    print("\nSpeed-ups are scikit-learn's time divided by the method's. 'index held': "
          "resident memory the built index adds; 'search peak extra': the peak during the "
          "search above that.")
    summary = dict(distribution=args.distribution, dim=args.dim, n_queries=args.n_queries,
                   k=args.k, device=args.device, results=rows)
    print("\n" + json.dumps(summary))


if __name__ == "__main__":
    main()
