"""A catalogue's everyday loop: a saved search, a growing one, a mapped one, dedup by hash.

Side by side in one run, each variant in a fresh subprocess (its time and
memory its own), on images the package draws itself
(:func:`~sklearn_imgpair.datasets.make_image_pairs`, 64 px PNGs) and a
random-weight Swin (``--model-kwargs``, by default patch 4, window 4, embed
dimension 48, depths 2-2-2: 192-d embeddings; its classifier is fitted for one
epoch on 40 pairs, so its weights are as good as random):

``saved``
    Searching ``--n-queries`` images against a gallery of ``--gallery-size``:
    ``ImageNeighbors(classifier=clf).fit(gallery)`` then ``kneighbors`` (what
    ``search --gallery`` does: the gallery is embedded on every call), against
    ``ImageNeighbors.load(file)`` then ``kneighbors`` (what ``search
    --index`` does). Wall time of each subprocess (Python, torch and the
    model loaded included) and the time of the calls in it. Where the command
    line has the ``index`` command, ``search --gallery`` and ``index`` then
    ``search --index`` are timed too.
``grow``
    ``partial_fit`` of ``--grow-images`` images on a search of
    ``--grow-size`` vectors (clustered unit vectors as in ``bench_search.py``,
    of the network's dimension, with made-up paths, built with
    ``fit(paths, embeddings=...)``): the time the embedder spends on the new
    images, against the rest of ``partial_fit`` (the index update and the
    gallery's arrays), for the exact index and FAISS flat, IVF and HNSW.
``mapped``
    ``ImageNeighbors.load`` of a saved search of ``--load-size`` vectors of
    dimension 768 (a random-weight Swin of 768-d embeddings, no training),
    then one query image: time to the first result, and resident memory
    (``VmRSS``, split into anonymous and file-backed pages, and the peak
    ``VmHWM``), with ``mmap_mode="r"`` (the default: vectors memory-mapped,
    the checksum verified by reading the file in blocks) against
    ``mmap_mode=None`` (the vectors read into memory).
``dedup``
    A folder of ``--dedup-size`` images and as many byte copies of them:
    ``sklearn-imgpair dedup`` (exact copies found by hash first, not decoded
    for the network) against ``ImageMatchClustering(clf).fit`` on every file
    (the same search without the hash pass); images decoded, counted.

The 1,000,000-vector search row (build, queries, recall, memory) is
``bench_search.py --gallery-sizes 1000000``.

``--quick`` took 5.5 minutes on 2 cores shared with other jobs (load 6 to
8), most of it starting the 12 Python processes (about 15 s each there);
the full sizes took 11.5 minutes (``saved`` and ``dedup``) and 13 minutes
(``grow`` and ``mapped``), run at the same time.

The machine's other users share its cores: timings vary by tens of percent
between runs; compare the variants of one run.

Usage::

    python benchmarks/bench_catalogue.py --quick      # tiny sizes: a smoke run of every part
    python benchmarks/bench_catalogue.py              # 5,000 / 100,000 / 1,000,000 / 1,000
    python benchmarks/bench_catalogue.py --parts saved dedup --gallery-size 2000
"""

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from _common import describe_machine, format_table, memory_mb, reset_peak_memory
from bench_search import make_vectors

PARTS = ("saved", "grow", "mapped", "dedup")
GROW_INDEXES = ("brute", "flat", "ivf", "hnsw")
SMALL_SWIN = dict(patch_size=4, window_size=4, embed_dim=48, depths=[2, 2, 2],
                  num_heads=[2, 4, 8])
# A network of 768-d embeddings, as long as a Swin-T's, for the mapped file.
WIDE_SWIN = dict(patch_size=4, window_size=4, embed_dim=192, depths=[1, 1, 1],
                 num_heads=[4, 8, 16])
MODEL_NAME = "swin_tiny_patch4_window7_224"
IMAGE_SIZE = 64


# ----------------------------------------------------------------------
# in the subprocesses
# ----------------------------------------------------------------------


def _images(folder):
    return sorted(os.path.join(folder, name) for name in os.listdir(folder)
                  if name.endswith(".png"))


def _rss():
    """VmRSS, RssAnon, RssFile and VmHWM in MB (Linux), from /proc/self/status."""
    try:
        with open("/proc/self/status") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
        return {name: int(fields[name].split()[0]) / 1024
                for name in ("VmRSS", "RssAnon", "RssFile", "VmHWM")}
    except (OSError, KeyError, ValueError):
        rss, peak = memory_mb()
        return {"VmRSS": rss, "RssAnon": None, "RssFile": None, "VmHWM": peak}


def _count_decodes():
    """Count every image decoded in this process (the network's reading of files)."""
    from sklearn_imgpair._images import datasets, decode

    counts = collections.Counter()
    original = decode.load_image

    def counting(path, image_size):
        counts[path] += 1
        return original(path, image_size)

    decode.load_image = datasets.load_image = counting
    return counts


def child_saved(args):
    from sklearn_imgpair import ImageNeighbors, ImagePairClassifier

    queries = _images(args["queries"])
    start = time.perf_counter()
    if args["variant"] == "fit":
        clf = ImagePairClassifier.load(args["model"])
        search = ImageNeighbors(classifier=clf).fit(_images(args["gallery"]))
    else:
        search = ImageNeighbors.load(args["index"])
    ready = time.perf_counter()
    search.kneighbors(queries)
    done = time.perf_counter()
    row = dict(prepare_s=ready - start, query_s=done - ready, calls_s=done - start)
    if args["variant"] == "fit":
        search.save(args["index"])
        row["save_s"] = time.perf_counter() - done
    return row


def child_grow(args):
    from sklearn_imgpair import ImageNeighbors, ImagePairClassifier

    clf = ImagePairClassifier.load(args["model"])
    kind = args["index"]
    params = {} if kind == "brute" else dict(algorithm="faiss", faiss_index=kind)
    search = ImageNeighbors(classifier=clf, random_state=0, **params)
    probe = ImageNeighbors(classifier=clf).fit(_images(args["images"])[:2])
    vectors, _ = make_vectors(args["size"], 0, probe.embedding_dim_, seed=0)
    paths = [f"/catalogue/item{row:07d}.png" for row in range(args["size"])]
    start = time.perf_counter()
    search.fit(paths, embeddings=vectors)
    build_s = time.perf_counter() - start
    del vectors
    embedding = []
    transform = search.embedder_.transform

    def timed_transform(X):
        begin = time.perf_counter()
        result = transform(X)
        embedding.append(time.perf_counter() - begin)
        return result

    search.embedder_.transform = timed_transform
    images = _images(args["images"])[:args["n_images"]]
    start = time.perf_counter()
    search.partial_fit(images)
    total_s = time.perf_counter() - start
    assert search.n_samples_fit_ == args["size"] + len(images)
    return dict(index=kind, build_s=build_s, partial_fit_s=total_s, embed_s=sum(embedding),
                update_s=total_s - sum(embedding), n_images=len(images))


def child_make_file(args):
    from sklearn_imgpair import ImageEmbedder, ImageNeighbors

    embedder = ImageEmbedder(model_name=MODEL_NAME, pretrained=False, image_size=IMAGE_SIZE,
                             model_kwargs=WIDE_SWIN, num_workers=0)
    vectors, _ = make_vectors(args["size"], 0, 768, seed=0)
    paths = [f"/catalogue/item{row:07d}.png" for row in range(args["size"])]
    search = ImageNeighbors(embedder).fit(paths, embeddings=vectors)
    del vectors
    start = time.perf_counter()
    search.save(args["file"])
    return dict(save_s=time.perf_counter() - start, file_mb=os.path.getsize(args["file"]) / 2**20)


def child_mapped(args):
    import torch  # noqa: F401 (the libraries belong to the baseline)

    import sklearn_imgpair  # noqa: F401
    from sklearn_imgpair import ImageNeighbors

    baseline = _rss()
    reset_peak_memory()
    start = time.perf_counter()
    search = ImageNeighbors.load(args["file"], mmap_mode=args["mmap_mode"])
    loaded = time.perf_counter()
    after_load = _rss()
    search.kneighbors([args["query"]], n_neighbors=10)
    done = time.perf_counter()
    after_query = _rss()
    return dict(mmap_mode=args["mmap_mode"], load_s=loaded - start, first_query_s=done - loaded,
                to_first_result_s=done - start, baseline=baseline, after_load=after_load,
                after_query=after_query, mapped=type(search.embeddings_).__name__)


def child_dedup(args):
    counts = _count_decodes()
    start = time.perf_counter()
    if args["variant"] == "hash":
        from sklearn_imgpair._cli.main import main

        status = main(["dedup", "--images", args["folder"], "--model", args["model"],
                       "--output", args["output"]])
        assert status in (0, None), status
    else:
        from sklearn_imgpair import ImageMatchClustering, ImagePairClassifier

        clf = ImagePairClassifier.load(args["model"])
        clustering = ImageMatchClustering(clf, threshold=clf.threshold).fit(
            _images(args["folder"]))
        n_groups = int(clustering.labels_.max(initial=-1) + 1)
        print(f"{n_groups} groups", file=sys.stderr)
    return dict(variant=args["variant"], calls_s=time.perf_counter() - start,
                decoded=sum(counts.values()), decoded_files=len(counts))


CHILDREN = {"saved": child_saved, "grow": child_grow, "make_file": child_make_file,
            "mapped": child_mapped, "dedup": child_dedup}


# ----------------------------------------------------------------------
# the parent
# ----------------------------------------------------------------------


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The subprocesses import the package this script belongs to.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    [ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])}


def _child(name, **args):
    """Run a child in a fresh interpreter: ``(its JSON row, wall seconds)``."""
    command = [sys.executable, os.path.abspath(__file__), "--child", name,
               "--child-args", json.dumps(args)]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=ENV)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{name} {args} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1]), wall


def _cli(*argv):
    """Run ``sklearn-imgpair ARGV`` in a subprocess: its wall seconds; fails if it fails."""
    command = [sys.executable, "-m", "sklearn_imgpair", *argv]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=ENV)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"sklearn-imgpair {argv[0]} failed: {result.stderr.strip()[-300:]}")
    return wall


def make_data(args, folder):
    """Draw the images and fit the model once; return their paths."""
    from sklearn_imgpair import ImagePairClassifier
    from sklearn_imgpair.datasets import make_image_pairs

    start = time.perf_counter()
    data = {name: os.path.join(folder, name) for name in ("gallery", "queries", "pairs")}
    n_gallery = max(args.gallery_size, args.grow_images, args.dedup_size)
    make_image_pairs(data["gallery"], n_products=max(4, -(-n_gallery // 5)), n_views=5,
                     image_size=IMAGE_SIZE, n_pairs=40, random_state=0)
    make_image_pairs(data["queries"], n_products=max(4, -(-args.n_queries // 5)), n_views=5,
                     image_size=IMAGE_SIZE, n_pairs=40, random_state=1)
    for name in _images(data["queries"])[args.n_queries:]:
        os.remove(name)
    train, _ = make_image_pairs(data["pairs"], n_products=8, n_views=3, image_size=IMAGE_SIZE,
                                n_pairs=40, random_state=2)
    clf = ImagePairClassifier(model_name=MODEL_NAME, pretrained=False,
                              image_size=args.network_size, model_kwargs=args.model_kwargs,
                              max_epochs=1, batch_size=32, num_workers=0, random_state=0)
    clf.fit(train[["Image1", "Image2"]], train["Label"])
    data["model"] = clf.save(os.path.join(folder, "model.safetensors"))
    # The gallery of the saved search: the first --gallery-size images.
    data["search_gallery"] = os.path.join(folder, "search_gallery")
    os.makedirs(data["search_gallery"])
    for path in _images(data["gallery"])[:args.gallery_size]:
        os.link(path, os.path.join(data["search_gallery"], os.path.basename(path)))
    print(f"Data: {n_gallery} + {args.n_queries} images of {IMAGE_SIZE} px and the model "
          f"in {time.perf_counter() - start:.0f} s", flush=True)
    return data


def bench_saved(args, data, folder):
    result = bench_saved_api(args, data, folder) if args.saved_api else {}
    out = os.path.join(folder, "out.csv")
    gallery_wall = _cli("search", "--gallery", data["search_gallery"], "--query",
                        data["queries"], "--model", data["model"], "--output", out)
    cli_index = os.path.join(folder, "cli_index.safetensors")
    index_wall = _cli("index", "--images", data["search_gallery"], "--output", cli_index,
                      "--model", data["model"])
    search_wall = _cli("search", "--index", cli_index, "--query", data["queries"],
                       "--output", out)
    print(f"\n## The command line: {args.gallery_size} gallery images, {args.n_queries} "
          f"queries\n\nsearch --gallery {gallery_wall:.1f} s; index {index_wall:.1f} s once, "
          f"then search --index {search_wall:.1f} s; ratio {gallery_wall / search_wall:.1f}x")
    result.update(cli_gallery_s=gallery_wall, cli_index_s=index_wall,
                  cli_search_index_s=search_wall, cli_ratio=gallery_wall / search_wall)
    return result


def bench_saved_api(args, data, folder):
    index = os.path.join(folder, "search.safetensors")
    fitted, fit_wall = _child("saved", variant="fit", model=data["model"],
                              gallery=data["search_gallery"], queries=data["queries"],
                              index=index)
    loaded, load_wall = _child("saved", variant="load", index=index, queries=data["queries"])
    rows = [dict(run="fit(gallery) + kneighbors", wall_s=fit_wall, **fitted),
            dict(run="load(file) + kneighbors", wall_s=load_wall, **loaded)]
    print(f"\n## A saved search: {args.gallery_size} gallery images, {args.n_queries} queries "
          "(Python API, each in a fresh subprocess)\n")
    print(format_table(rows, [("run", "run", ""), ("wall_s", "subprocess wall (s)", ".1f"),
                              ("prepare_s", "fit or load (s)", ".2f"),
                              ("query_s", "kneighbors (s)", ".2f"),
                              ("calls_s", "calls (s)", ".2f")]))
    print(f"ratio, subprocess wall: {fit_wall / load_wall:.1f}x; calls only: "
          f"{fitted['calls_s'] / loaded['calls_s']:.1f}x (saving the search took "
          f"{fitted['save_s']:.2f} s once)")
    return dict(api=rows, ratio_wall=fit_wall / load_wall,
                ratio_calls=fitted["calls_s"] / loaded["calls_s"])


def bench_grow(args, data):
    rows = []
    for kind in args.grow_indexes:
        row, wall = _child("grow", model=data["model"], index=kind, size=args.grow_size,
                           images=data["gallery"], n_images=args.grow_images)
        row["ratio"] = row["update_s"] / row["embed_s"]
        rows.append(row)
        print(f"... grow {kind}: embed {row['embed_s']:.2f} s, update {row['update_s']:.3f} s",
              flush=True)
    print(f"\n## partial_fit of {args.grow_images} images on a search of {args.grow_size} "
          "vectors\n")
    print(format_table(rows, [("index", "index", ""), ("build_s", "build from vectors (s)", ".2f"),
                              ("partial_fit_s", "partial_fit (s)", ".2f"),
                              ("embed_s", "embedding (s)", ".2f"),
                              ("update_s", "index update (s)", ".3f"),
                              ("ratio", "update / embedding", ".2%")]))
    return rows


def bench_mapped(args, data, folder):
    path = os.path.join(folder, "large.safetensors")
    made, wall = _child("make_file", size=args.load_size, file=path)
    print(f"... wrote {args.load_size} vectors ({made['file_mb']:.0f} MB) in {wall:.0f} s",
          flush=True)
    query = _images(data["queries"])[0]
    rows = []
    for mode in ("r", None):
        row, row_wall = _child("mapped", file=path, mmap_mode=mode, query=query)
        row["wall_s"] = row_wall
        for stage in ("after_load", "after_query"):
            for field, value in row[stage].items():
                base = row["baseline"][field] if field != "VmHWM" else row["baseline"]["VmRSS"]
                row[f"{stage}_{field}"] = None if value is None else value - base
        rows.append(row)
    os.remove(path)
    print(f"\n## Opening a saved search of {args.load_size} vectors of dimension 768 "
          f"({made['file_mb']:.0f} MB), then one query (MB above the process with the "
          "libraries loaded)\n")
    shown = [{key: ("" if value is None else value) for key, value in row.items()}
             for row in rows]
    print(format_table(shown, [
        ("mmap_mode", "mmap_mode", ""), ("load_s", "load (s)", ".2f"),
        ("first_query_s", "first query (s)", ".2f"),
        ("to_first_result_s", "to first result (s)", ".2f"),
        ("after_load_VmRSS", "RSS after load", ".0f"),
        ("after_query_VmRSS", "RSS after query", ".0f"),
        ("after_query_RssAnon", "of it anonymous", ".0f"),
        ("after_query_RssFile", "of it file pages", ".0f"),
        ("after_query_VmHWM", "peak", ".0f")]))
    mapped, read = rows
    print(f"ratio (mapped / read): time to first result "
          f"{mapped['to_first_result_s'] / read['to_first_result_s']:.2f}, RSS after load "
          f"{mapped['after_load_VmRSS'] / read['after_load_VmRSS']:.3f}, peak "
          f"{mapped['after_query_VmHWM'] / read['after_query_VmHWM']:.2f}")
    return rows


def bench_dedup(args, data, folder):
    images = os.path.join(folder, "dedup")
    os.makedirs(images)
    for path in _images(data["gallery"])[:args.dedup_size]:
        name = os.path.basename(path)
        shutil.copyfile(path, os.path.join(images, name))
        shutil.copyfile(path, os.path.join(images, "copy_" + name))
    output = os.path.join(folder, "dedup.csv")
    rows = []
    for variant in ("hash", "all"):
        row, wall = _child("dedup", variant=variant, folder=images, model=data["model"],
                           output=output)
        rows.append(dict(row, wall_s=wall))
    hashed, every = rows
    print(f"\n## dedup of {2 * args.dedup_size} files, half of them byte copies\n")
    print(format_table(rows, [("variant", "run", ""), ("wall_s", "subprocess wall (s)", ".1f"),
                              ("calls_s", "dedup (s)", ".2f"),
                              ("decoded", "images decoded", "d")]))
    print(f"ratio (hash pass / without): wall {hashed['wall_s'] / every['wall_s']:.2f}, "
          f"dedup {hashed['calls_s'] / every['calls_s']:.2f}; copies not decoded: "
          f"{every['decoded'] - hashed['decoded']}")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes: a smoke run of every part")
    parser.add_argument("--gallery-size", type=int, default=5000)
    parser.add_argument("--n-queries", type=int, default=100)
    parser.add_argument("--grow-size", type=int, default=100_000)
    parser.add_argument("--grow-images", type=int, default=1000)
    parser.add_argument("--grow-indexes", nargs="+", choices=GROW_INDEXES,
                        default=list(GROW_INDEXES))
    parser.add_argument("--load-size", type=int, default=1_000_000)
    parser.add_argument("--dedup-size", type=int, default=1000,
                        help="distinct images of the dedup folder (as many copies are added)")
    parser.add_argument("--model-kwargs", type=json.loads, default=SMALL_SWIN,
                        help="the Swin's settings, as JSON (default: %(default)s)")
    parser.add_argument("--network-size", type=int, default=IMAGE_SIZE,
                        help="the network's input size (the images stay 64 px); 224 with "
                             "--model-kwargs '{}' is the default swin_tiny")
    parser.add_argument("--saved-api", action=argparse.BooleanOptionalAction, default=True,
                        help="'saved' also times the Python API pair, not only the CLI's")
    parser.add_argument("--child", choices=list(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--child-args", type=json.loads, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(CHILDREN[args.child](args.child_args)))
        return
    if args.quick:
        args.gallery_size, args.n_queries, args.grow_size = 40, 5, 2000
        args.grow_images, args.load_size, args.dedup_size = 20, 20_000, 20
        args.model_kwargs = dict(patch_size=2, window_size=4, embed_dim=16, depths=[1, 1],
                                 num_heads=[1, 2])
    print(f"Machine: {describe_machine('cpu')}")
    print(f"Network: {MODEL_NAME}, random weights, {args.network_size} px, "
          f"{args.model_kwargs or 'its default architecture'}")
    summary = {}
    with tempfile.TemporaryDirectory() as folder:
        data = make_data(args, folder)
        if "saved" in args.parts:
            summary["saved"] = bench_saved(args, data, folder)
        if "grow" in args.parts:
            summary["grow"] = bench_grow(args, data)
        if "mapped" in args.parts:
            summary["mapped"] = bench_mapped(args, data, folder)
        if "dedup" in args.parts:
            summary["dedup"] = bench_dedup(args, data, folder)
    print("\n" + json.dumps(summary))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
