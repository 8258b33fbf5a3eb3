"""``--report``: one self-contained HTML page of a ``search`` or ``dedup`` result.

The page needs nothing but itself: a few lines of inline CSS, no script, and every thumbnail
inlined as a ``data:`` URI (a JPEG at most 160 pixels a side). Every path is escaped. An image
that cannot be read anymore (moved, deleted or corrupt since the run) is drawn as a named
placeholder, and the rest of the page is written.
"""

import base64
import datetime
import html
import io
import os

import numpy as np
from PIL import Image

from sklearn_imgpair._cli.commands import check_writable
from sklearn_imgpair._cli.inputs import CommandError, report_unreadable
from sklearn_imgpair._images.pixels import read_pixels
from sklearn_imgpair._io.atomic import write_atomically

__all__ = ["REPORT_SUFFIXES", "THUMBNAIL_SIZE", "check_report_path", "dedup_report",
           "report_dedup", "report_search", "search_report", "thumbnail"]

#: The file name endings ``--report`` accepts.
REPORT_SUFFIXES = (".html", ".htm")
#: Largest side in pixels of a thumbnail, in a report or a ``search --plot`` picture.
THUMBNAIL_SIZE = 160
# The JPEG quality of a report's thumbnails.
_JPEG_QUALITY = 85

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table.summary td { padding: 0 1em 0 0; }
section { border-top: 1px solid #ccc; margin-top: 1em; }
.row { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; width: 172px; padding: 4px; border: 2px solid #ddd; border-radius: 4px; }
figure img { display: block; max-width: 160px; max-height: 160px; margin: auto; }
figcaption { font-size: 11px; overflow-wrap: anywhere; }
.query, .kept { border-color: #1f77b4; }
.above { border-color: #2ca02c; background: #eef8ee; }
.score { font-weight: bold; }
.mark { color: #2ca02c; font-weight: bold; }
.remove { color: #b22; font-weight: bold; }
.missing { width: 160px; height: 100px; background: #fde; color: #a00; font-size: 11px;
           overflow-wrap: anywhere; display: flex; align-items: center; }
"""


def thumbnail(path, size=THUMBNAIL_SIZE):
    """An image as the network sees it (upright by EXIF, RGB), at most ``size`` a side.

    The one thumbnail of ``--report`` pages and ``search --plot`` pictures.

    Parameters
    ----------
    path : str or path-like
        The image file.
    size : int, default=THUMBNAIL_SIZE
        Largest side in pixels.

    Returns
    -------
    image : PIL.Image.Image or None
        None when the file cannot be read anymore (moved, deleted, corrupt).
    """
    try:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))  # JPEG: decode less
            # The network's view: upright (EXIF), RGB, transparency onto white.
            image = Image.fromarray(read_pixels(image, None))
        image.thumbnail((size, size))
        return image
    except Exception:  # noqa: BLE001 - vanished, corrupt: any failure is a placeholder
        return None


def check_report_path(path):
    """Fail before any work unless ``path`` ends in .html or .htm and can be written."""
    if os.path.splitext(path)[1].lower() not in REPORT_SUFFIXES:
        raise CommandError(f"--report must end in .html or .htm; got {path!r}.")
    check_writable(path, "--report")


class _Page:
    """The parts of a page, and the images that could not be drawn."""

    def __init__(self, title):
        self.parts = []
        self.missing = []
        self._thumbnails = {}
        self.title = title

    def add(self, *parts):
        self.parts.extend(parts)

    def _thumbnail(self, path):
        if path not in self._thumbnails:
            image = thumbnail(path)
            if image is None:
                self._thumbnails[path] = None
                self.missing.append(path)
            else:
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=_JPEG_QUALITY)
                data = base64.b64encode(buffer.getvalue()).decode("ascii")
                self._thumbnails[path] = f"data:image/jpeg;base64,{data}"
        return self._thumbnails[path]

    def figure(self, path, caption, css_class=""):
        """A thumbnail (or a placeholder) above its caption and escaped path."""
        uri, name = self._thumbnail(path), html.escape(path)
        picture = (f'<img src="{uri}" alt="{name}" title="{name}">' if uri else
                   f'<div class="missing">missing: {name}</div>')
        css_class = f' class="{css_class}"' if css_class else ""
        return (f"<figure{css_class}>{picture}<figcaption>{caption}<br>{name}</figcaption>"
                "</figure>")

    def write(self, path, summary):
        """Write the page atomically; the images that could not be drawn, in order."""
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        rows = "".join(f"<tr><td>{html.escape(str(key))}</td><td>{html.escape(str(value))}"
                       "</td></tr>" for key, value in [*summary, ("date", stamp)])
        title = html.escape(self.title)
        text = "\n".join([
            "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
            f"<title>{title}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>",
            f"<h1>{title}</h1>", f'<table class="summary">{rows}</table>', *self.parts,
            "</body>", "</html>", ""])

        def write_page(partial):
            with open(partial, "w", encoding="utf-8") as file:
                file.write(text)

        return write_atomically(path, write_page), list(self.missing)


def _score(value, score_column, threshold):
    """The caption of a score, with a mark when it is above the threshold (None: no mark)."""
    above = threshold is not None and value > threshold
    mark = ' <span class="mark">&#10003; above threshold</span>' if above else ""
    return f'<span class="score">{score_column} {value:.3f}</span>{mark}', above


def _threshold_text(threshold):
    return "-" if threshold is None else f"{threshold:g}"


def search_report(path, table, *, score_column="probability", threshold, title, model=None,
                  queries=None):
    """Write a ``search`` result as an HTML page: each query, then its matches by rank.

    Parameters
    ----------
    path : str or path-like
        The ``.html`` file to write (atomically).
    table : DataFrame
        The pairs table ``search`` writes: ``Image1`` (the query), ``Image2``
        (the gallery image), ``rank`` and ``score_column``.
    score_column : str, default="probability"
        The score shown: ``"probability"``, or ``"similarity"`` (cosine) for a
        run without a match model.
    threshold : float or None
        Matches scored above it are marked; None marks none (a search
        without a match model has no threshold).
    title : str
        The page's title.
    model : str, default=None
        The model's name, for the summary.
    queries : sequence of str, default=None
        Every query to show, in order, also those left without a match (by
        ``--min-proba``); None: the queries of ``table``.

    Returns
    -------
    path : str
        The absolute path written.
    missing : list of str
        The images that could not be read, drawn as placeholders.
    """
    queries = list(dict.fromkeys(table["Image1"] if queries is None else queries))
    by_query = {query: rows.sort_values("rank", kind="stable")
                for query, rows in table.groupby("Image1", sort=False)}
    page, n_above = _Page(title), 0
    for number, query in enumerate(queries, start=1):
        rows = by_query.get(query, table.iloc[:0])
        figures = [page.figure(query, "<b>query</b>", "query")]
        for rank, match, value in zip(rows["rank"], rows["Image2"], rows[score_column]):
            caption, above = _score(float(value), score_column, threshold)
            n_above += above
            figures.append(page.figure(match, f"{int(rank)}. {caption}",
                                       "above" if above else ""))
        empty = "" if len(rows) else "<p>No match left.</p>"
        page.add(f'<section id="query-{number}"><h2>Query {number}: {html.escape(query)} '
                 f'({len(rows)} matches)</h2>{empty}<div class="row">{"".join(figures)}</div>'
                 "</section>")
    return page.write(path, [
        ("queries", len(queries)), ("matches", len(table)),
        ("matches above the threshold", n_above),
        (f"threshold ({score_column})", _threshold_text(threshold)), ("model", model or "-")])


def _members(rows, images, keep):
    """The files of one group: the kept one first (with ``keep``), then in input order."""
    members = list(dict.fromkeys(np.ravel(rows[["Image1", "Image2"]].to_numpy()).tolist()))
    order = {image: index for index, image in enumerate(images)} if images is not None else {}
    members.sort(key=lambda member: (member not in keep, order.get(member, len(order))))
    return members


def _name(path):
    """A file's name, its whole path shown on hover."""
    return f'<span title="{html.escape(path)}">{html.escape(os.path.basename(path))}</span>'


def _pair_caption(member, earlier, scores, copies, score_column, threshold):
    """How ``member`` joined its group: a copy of a file, or its best pair with an earlier one."""
    if member in copies:
        return f'<span class="score">{score_column} 1</span> exact copy of {_name(copies[member])}'
    partners = [(scores[frozenset((member, other))], other) for other in earlier
                if frozenset((member, other)) in scores]
    if not partners:  # joined through a later member only
        partners = [(value, next(iter(pair - {member}))) for pair, value in scores.items()
                    if member in pair and len(pair) == 2]
    value, other = max(partners, key=lambda partner: partner[0])
    return f"{_score(value, score_column, threshold)[0]} with {_name(other)}"


def dedup_report(path, table, *, score_column="probability", threshold, title, model=None,
                 keep=None, copies=None, images=None):
    """Write a ``dedup`` result as an HTML page: each group and its members.

    Each member but the first shows its score: 1 for an exact copy (same
    bytes or same pixels), else its best pair with an earlier member.

    Parameters
    ----------
    path : str or path-like
        The ``.html`` file to write (atomically).
    table : DataFrame
        The pairs table ``dedup`` writes: ``Image1``, ``Image2``,
        ``score_column`` and ``group``.
    score_column : str, default="probability"
        The score shown: ``"probability"``, or ``"similarity"`` (cosine) for a
        run without a match model.
    threshold : float
        The run's threshold, for the summary.
    title : str
        The page's title.
    model : str, default=None
        The model's name, for the summary.
    keep : DataFrame, default=None
        The ``--keep`` list: ``Image1`` (a file to remove), ``Image2`` (the
        kept file). The kept file comes first in its group; a member in
        neither column (it matches the kept file only through others) is
        shown as kept, not listed; None: no ``--keep``.
    copies : mapping of str to str, default=None
        Each exact copy's path and the file it copies.
    images : sequence of str, default=None
        Every image in input order, which orders each group's members; None:
        the order of ``table``.

    Returns
    -------
    path : str
        The absolute path written.
    missing : list of str
        The images that could not be read, drawn as placeholders.
    """
    copies = dict(copies or {})
    kept = set() if keep is None else set(keep["Image2"])
    removed = set() if keep is None else set(keep["Image1"])
    page, n_members, n_copies = _Page(title), 0, 0
    for number, rows in table.groupby("group", sort=True):
        members = _members(rows, images, kept)
        scores = {}
        for first, second, value in zip(rows["Image1"], rows["Image2"], rows[score_column]):
            pair = frozenset((first, second))
            scores[pair] = max(float(value), scores.get(pair, -np.inf))
        figures = []
        for index, member in enumerate(members):
            caption = ("<b>first</b>" if index == 0 else _pair_caption(
                member, members[:index], scores, copies, score_column, threshold))
            if keep is not None:
                caption += (' <span class="remove">remove</span>' if member in removed else
                            ' <span class="mark">kept</span>' if member in kept else
                            ' <span class="mark">not listed</span> (no direct match with the '
                            'kept file)')
            figures.append(page.figure(member, caption, "kept" if member in kept else ""))
        n_members += len(members)
        n_copies += sum(member in copies for member in members)
        page.add(f'<section id="group-{number}"><h2>Group {number} ({len(members)} '
                 f'members)</h2><div class="row">{"".join(figures)}</div></section>')
    summary = [("groups", table["group"].nunique()), ("images in groups", n_members),
               ("pairs", len(table)), ("exact copies", n_copies),
               (f"threshold ({score_column})", _threshold_text(threshold)),
               ("model", model or "-")]
    if keep is not None:
        summary.insert(4, ("files to remove (--keep)", len(keep)))
    return page.write(path, summary)


# ----------------------------------------------------------------------
# the commands' side: options in, one line out
# ----------------------------------------------------------------------


def _model_name(args):
    name = (getattr(args, "model", None) or getattr(args, "backbone", None)
            or getattr(args, "index", None))
    return os.path.basename(name) if name else None


def _written(kind, path, missing):
    print(f"Wrote the {kind} report to {path}")
    report_unreadable({image: repr(image) for image in missing},
                      "they are drawn as placeholders in the report")


def report_search(args, table, queries, threshold, score_column):
    """``search --report``: write the page of ``table`` and say where, and what is missing."""
    source = getattr(args, "gallery", None) or getattr(args, "index", None)
    path, missing = search_report(
        args.report, table, score_column=score_column, threshold=threshold,
        title=f"sklearn-imgpair search: nearest images of {source}", model=_model_name(args),
        queries=queries)
    _written("search", path, missing)


def report_dedup(args, table, keep, paths, original, threshold, score_column):
    """``dedup --report``: write the page of ``table`` and say where, and what is missing."""
    copies = np.flatnonzero(original != np.arange(len(paths)))
    path, missing = dedup_report(
        args.report, table, score_column=score_column, threshold=threshold,
        title=f"sklearn-imgpair dedup: duplicates among {args.images or args.index}",
        model=_model_name(args),
        keep=keep, copies=dict(zip(paths[copies], paths[original[copies]])), images=paths)
    _written("dedup", path, missing)
