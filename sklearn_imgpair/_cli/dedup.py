"""The ``dedup`` subcommand: exact copies by hash, then duplicates by the model, in groups.

Exact copies (the same bytes, or the same decoded pixels; see ``copies.py``) are found first,
without the network. One file of each set of copies is embedded (none with
``--index``, whose images are embedded already); its copies join its group with probability
(or similarity) 1. Groups come from ``ImageMatchClustering`` over that search. ``--keep``
then lists the files that could go, each with the kept file it duplicates directly;
nothing is ever deleted. Everything that can fail is done before the first file is written.
"""

import os

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.utils import Bunch

from sklearn_imgpair._cli.commands import check_writable, image_columns, progress
from sklearn_imgpair._cli.copies import exact_copies
from sklearn_imgpair._cli.index import build_search, open_index
from sklearn_imgpair._cli.inputs import CommandError, read_images, report_unreadable
from sklearn_imgpair._cli.networks import open_network
from sklearn_imgpair._cli.report import check_report_path, report_dedup
from sklearn_imgpair._duplicates import pair_scores, resolve_threshold, score_name
from sklearn_imgpair._io.atomic import write_atomically

__all__ = ["choose_kept", "remove_list_path", "run_dedup"]

# What reading a file's header or status can raise, for a file gone or corrupt since.
_UNREADABLE = (OSError, ValueError, Image.DecompressionBombError)


def remove_list_path(output):
    """Where ``--keep`` writes the files to remove: ``NAME_remove.csv`` beside ``NAME.csv``."""
    return os.path.splitext(output)[0] + "_remove.csv"


def _measure(path, policy):
    """What ``--keep policy`` maximises: (pixels, bytes) or (modification time,)."""
    if policy == "largest":
        with Image.open(path) as image:  # reads the header only
            return image.width * image.height, os.path.getsize(path)
    return (os.stat(path).st_mtime_ns,)


def choose_kept(paths, members, policy, unreadable=None):
    """The file that ``--keep policy`` keeps among ``members``, indices into ``paths``.

    ``first``: the first in input order; ``largest``: the most pixels, then the
    most bytes; ``newest``: the latest modification time. Ties go to the first.
    A member whose file cannot be read or stat'ed (gone since it was indexed)
    is never kept, unless no member can be; it is added to ``unreadable``
    (a dict: path to description), when given.
    """
    if policy == "first":
        return min(members)
    measured = {}
    for index in members:
        try:
            measured[index] = _measure(paths[index], policy)
        except _UNREADABLE as exc:
            if unreadable is not None:  # the reason without the path again
                reason = getattr(exc, "strerror", None) or type(exc).__name__
                unreadable[paths[index]] = f"{paths[index]!r} ({reason})"
    if not measured:
        return min(members)
    return min(measured, key=lambda index: (tuple(-value for value in measured[index]), index))


def _number_groups(labels):
    """Groups of two images or more, numbered from 0 in input order; -1 for the others."""
    sizes = np.bincount(labels[labels >= 0], minlength=1)
    grouped = (labels >= 0) & (sizes[np.maximum(labels, 0)] > 1)
    _, first_seen, numbered = np.unique(labels[grouped], return_index=True, return_inverse=True)
    group = np.full(len(labels), -1, dtype=np.int64)
    group[grouped] = np.argsort(np.argsort(first_seen))[numbered]
    return group


def _pair_scores(search, paths, original, first, second):
    """Scores of pairs of files: 1 for copies, else their originals' probability or cosine."""
    row = {path: index for index, path in enumerate(search.gallery_)}
    a = np.array([row[paths[i]] for i in original[first]], dtype=np.int64)
    b = np.array([row[paths[i]] for i in original[second]], dtype=np.int64)
    cosines = np.einsum("ij,ij->i", search.embeddings_[a], search.embeddings_[b])
    scores = pair_scores(search, 1.0 - cosines.astype(np.float64))
    return np.where(original[first] == original[second], 1.0, scores)


def _remove_list(search, paths, original, group, policy, column, threshold):
    """The ``--keep`` list, and how many group members it leaves out.

    One row a file to remove: ``Image1`` (it), ``Image2`` (the kept file of its
    group), their score and the group. A member is listed only if it is a copy
    of the kept file or its own score with it is above ``threshold``: in a
    group chained by single linkage, a member may match the kept file only
    through others; it is kept and counted, never listed.
    """
    removed, kept, unreadable = [], [], {}
    grouped = np.flatnonzero(group >= 0)
    grouped = grouped[np.argsort(group[grouped], kind="stable")]  # input order in a group
    for members in np.split(grouped, np.flatnonzero(np.diff(group[grouped])) + 1):
        members = members.tolist()
        if not members:
            continue
        keep = choose_kept(paths, members, policy, unreadable)
        removed += [index for index in members if index != keep]
        kept += [keep] * (len(members) - 1)
    report_unreadable(unreadable, f"they cannot be measured and are never the file that "
                                  f"--keep {policy} keeps")
    removed, kept = np.array(removed, dtype=np.int64), np.array(kept, dtype=np.int64)
    scores = _pair_scores(search, paths, original, removed, kept)
    direct = (original[removed] == original[kept]) | (scores > threshold)
    table = pd.DataFrame({
        "Image1": paths[removed[direct]], "Image2": paths[kept[direct]],
        column: scores[direct], "group": group[removed[direct]]})
    return table, int((~direct).sum())


def _duplicate_pairs(clustering, paths, original, group, column):
    """Exact copies (score 1) and the network's pairs inside one group, most likely first."""
    copies = np.flatnonzero(original != np.arange(len(paths)))
    copies = copies[group[copies] >= 0]  # not the copies of an unreadable file
    position = {path: index for index, path in enumerate(paths)}
    matched = clustering.duplicates_
    first = matched["Image1"].map(position).to_numpy(dtype=np.int64)
    second = matched["Image2"].map(position).to_numpy(dtype=np.int64)
    inside = group[first] == group[second]  # complete linkage may keep a pair's images apart
    table = pd.DataFrame({
        "Image1": np.concatenate([paths[original[copies]], paths[first[inside]]]),
        "Image2": np.concatenate([paths[copies], paths[second[inside]]]),
        column: np.concatenate([np.ones(len(copies)), matched[column].to_numpy()[inside]]),
        "group": np.concatenate([group[copies], group[first[inside]]])})
    table = table.sort_values(column, ascending=False, kind="stable")
    return table.reset_index(drop=True), int((~inside).sum())


def _cluster(search, X, threshold, args):
    """``ImageMatchClustering`` of the images ``X`` of the fitted ``search``: nothing embedded."""
    from sklearn_imgpair import ImageMatchClustering

    return ImageMatchClustering(
        search=search, threshold=threshold, linkage=args.linkage, n_neighbors=args.n_neighbors,
        on_error=args.on_error).fit(X)  # the search's own verbose shows its bars


def _catalogue(args):
    """The search of ``--index`` or None, the images to dedup, the network, and their name."""
    if args.index is not None:
        search = open_index(args.index, args)
        return search, np.asarray(search.gallery_, dtype=object), None, args.index
    images = read_images(args.images, image_columns(args), "--images",
                         check_files=args.on_error == "raise")
    network = open_network(args)
    if network is None:
        raise CommandError("dedup --images needs the network that embeds the images: "
                           "--model PATH or --backbone NAME.")
    return images, np.asarray(images.paths, dtype=object), network, args.images


def _check_threshold(threshold, has_head):
    """Fail unless ``--threshold`` is a probability (0 to 1) where the network has a head."""
    if has_head and threshold is not None and threshold < 0:
        raise CommandError(f"--threshold {threshold:g}: with a model the threshold is a match "
                           "probability, from 0 to 1 (a cosine similarity, from -1 to 1, is "
                           "for a --backbone).")


def _find(args):
    """Everything ``dedup`` writes, computed before any file is: a Bunch of the results."""
    catalogue, paths, network, source = _catalogue(args)
    _check_threshold(args.threshold, catalogue.match_threshold_ is not None
                     if network is None else network.classifier is not None)
    check_writable(args.output, "--output")
    if args.keep is not None:
        check_writable(remove_list_path(args.output), "--keep")
    original, same_bytes = exact_copies(
        paths, return_same_bytes=True,
        bar=lambda total, what: progress(total, what, unit="file", args=args))
    distinct = np.flatnonzero(original == np.arange(len(paths)))
    n_copies, n_byte_copies = len(paths) - len(distinct), int(same_bytes.sum())
    to_embed = "none to embed (the index holds them)" if network is None else (
        f"{len(distinct)} images to embed")
    print(f"Looking for duplicates among the {len(paths)} images of {source}: "
          f"{n_copies} exact copies found by hash ({n_byte_copies} byte-identical files, "
          f"{n_copies - n_byte_copies} with identical pixels), {to_embed}", flush=True)
    if network is None:
        search, X = catalogue, paths[distinct]
    else:
        embedded = Bunch(paths=paths[distinct], source=source, option="--images",
                         where=lambda index: catalogue.where(distinct[index]))
        search = build_search(network, embedded, args)
        X = search.gallery_  # the readable images
    column, threshold = score_name(search), resolve_threshold(args.threshold, search)
    clustering = _cluster(search, X, threshold, args)
    position = {path: index for index, path in enumerate(paths)}
    labels = np.full(len(paths), -1, dtype=np.int64)
    labels[[position[path] for path in X]] = clustering.labels_
    group = _number_groups(labels[original])
    duplicates, n_apart = _duplicate_pairs(clustering, paths, original, group, column)
    remove, n_indirect = None, 0
    if args.keep is not None:
        remove, n_indirect = _remove_list(search, paths, original, group, args.keep, column,
                                          threshold)
    return Bunch(paths=paths, original=original, group=group, duplicates=duplicates,
                 n_apart=n_apart, n_copies=n_copies, remove=remove, n_indirect=n_indirect,
                 column=column, threshold=threshold)


def run_dedup(args):
    """``dedup``: exact copies, then the pairs the network calls a match, grouped."""
    if os.path.splitext(args.output)[1].lower() != ".csv":
        raise CommandError(f"--output must end in .csv; got {args.output!r}.")
    if args.report is not None:
        check_report_path(args.report)
    found = _find(args)
    duplicates, group, remove = found.duplicates, found.group, found.remove
    path = write_atomically(args.output,
                            lambda partial: duplicates.to_csv(partial, index=False))
    n_groups, n_grouped = int(group.max(initial=-1) + 1), int((group >= 0).sum())
    similarity = " cosine similarity" if found.column == "similarity" else ""
    print(f"Found {len(duplicates)} duplicate pairs in {n_groups} groups ({n_grouped} images) "
          f"at{similarity} threshold {found.threshold:g}, {found.n_copies} of them exact "
          f"copies; wrote them to {path}")
    if found.n_apart:
        print(f"{found.n_apart} pairs above the threshold join images that complete linkage "
              "keeps in different groups; they are left out")
    if remove is not None:
        remove_path = write_atomically(remove_list_path(args.output),
                                       lambda partial: remove.to_csv(partial, index=False))
        print(f"Listed {len(remove)} files to remove, keeping the {args.keep} of each group, "
              f"in {remove_path}; nothing was deleted")
        if found.n_indirect:
            print(f"{found.n_indirect} members of chained groups do not match the kept file "
                  "directly and are not listed")
    if args.report is not None:
        report_dedup(args, duplicates, remove, found.paths, found.original, found.threshold,
                     found.column)
    return 0
