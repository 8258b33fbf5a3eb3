"""Check every internal link and anchor of the built HTML site, offline.

Sphinx's ``linkcheck`` builder needs the network and skips most internal links.
This check reads the pages that the HTML builder wrote: every ``href`` and ``src``
that is not an external URL must name a file of the site, and every ``#anchor``
an ``id`` (or ``<a name>``) of the page it points to. It runs at the end of an
HTML build and reports each broken link as a warning, so that
``sphinx-build -W`` fails; run as a script, it checks a built site::

    python docs/_ext/internal_links.py docs/_build/html
"""

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sphinx.util import logging

logger = logging.getLogger(__name__)

_LINK_ATTRIBUTES = {"a": "href", "link": "href", "img": "src", "script": "src",
                    "iframe": "src", "source": "src"}


class _PageParser(HTMLParser):
    """Collect a page's anchors (``id`` and ``<a name>``) and its links."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.anchors = set()
        self.links = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.anchors.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.anchors.add(attrs["name"])
        target = attrs.get(_LINK_ATTRIBUTES.get(tag, ""))
        if target is not None:
            self.links.append((self.getpos()[0], target))


def _parse(path):
    parser = _PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def broken_links(site):
    """Return the internal links of a built HTML site that lead nowhere.

    Parameters
    ----------
    site : path-like
        The folder the HTML builder wrote (``docs/_build/html``).

    Returns
    -------
    broken : list of str
        One ``"page:line: link (reason)"`` line per broken link, in page order.
    """
    site = Path(site).resolve()
    # The pages of the site; the theme's HTML templates in _static are no pages.
    pages = {path: _parse(path) for path in sorted(site.rglob("*.html"))
             if "_static" not in path.relative_to(site).parts}
    broken = []
    for page, parsed in list(pages.items()):
        for line, link in parsed.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("mailto:", "javascript:")):
                continue  # external: not ours to check offline
            if parts.path:
                target = (page.parent / unquote(parts.path)).resolve()
                if target.is_dir():
                    target = target / "index.html"
            else:
                target = page
            where = f"{page.relative_to(site)}:{line}: {link}"
            if not target.is_relative_to(site) or not target.is_file():
                broken.append(f"{where} (no such file)")
                continue
            anchor = unquote(parts.fragment)
            if not anchor or target.suffix != ".html":
                continue
            if target not in pages:
                pages[target] = _parse(target)
            if anchor not in pages[target].anchors:
                broken.append(f"{where} (no anchor #{anchor} in "
                              f"{target.relative_to(site)})")
    return broken


def _check(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    for problem in broken_links(app.outdir):
        logger.warning("broken internal link: %s", problem, type="imgpair", subtype="link")


def setup(app):
    """Run the check at the end of every HTML build."""
    app.connect("build-finished", _check, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    problems = broken_links(sys.argv[1] if len(sys.argv) > 1 else "docs/_build/html")
    print("\n".join(problems) or "no broken internal link")
    sys.exit(1 if problems else 0)
