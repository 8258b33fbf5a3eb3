"""The documentation's sources are complete and consistent; the full build runs in CI."""

import ast
import configparser
import importlib
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
GALLERY = ROOT / "examples"
PUBLIC_MODULES = ("sklearn_imgpair", "sklearn_imgpair.datasets", "sklearn_imgpair.metrics",
                  "sklearn_imgpair.onnx")
EXAMPLES = ("plot_tutorial.py", "plot_roc_pr_curves.py", "plot_search_grid.py",
            "plot_embedding_tsne.py", "plot_grouped_cv.py", "plot_threshold.py")


def _autosummary_entries(text):
    """``module.name`` of every entry of the autosummary tables of an rst file."""
    entries, module, in_table = [], None, False
    for line in text.splitlines():
        if match := re.fullmatch(r"\.\. currentmodule:: (\S+)", line):
            module = match[1]
        elif line.startswith(".. autosummary::"):
            in_table = True
        elif in_table and re.fullmatch(r"   \w+", line):
            entries.append(f"{module}.{line.strip()}")
        elif in_table and line and not line.startswith("   "):
            in_table = False
    return entries


def test_every_public_name_has_exactly_one_api_entry():
    expected = {f"{module}.{name}" for module in PUBLIC_MODULES
                for name in importlib.import_module(module).__all__ if name != "__version__"}
    entries = _autosummary_entries((DOCS / "api.rst").read_text())
    assert len(entries) == len(set(entries)), "a name listed twice in docs/api.rst"
    assert set(entries) == expected


def test_autosummary_entries_parse_what_the_api_page_holds():
    text = ".. currentmodule:: pkg\n\n.. autosummary::\n   :toctree: x\n\n   One\n   two\n\nText\n"
    assert _autosummary_entries(text) == ["pkg.One", "pkg.two"]


@pytest.fixture
def docs_ext(monkeypatch):
    """Import the build's own extensions, which need Sphinx (the docs extra)."""
    pytest.importorskip("sphinx", reason='the documentation build needs pip install ".[docs]"')
    monkeypatch.syspath_prepend(str(DOCS / "_ext"))
    yield lambda name: importlib.import_module(name)
    for name in ("completeness", "gallery_order", "internal_links", "offline_intersphinx"):
        sys.modules.pop(name, None)


def test_build_check_names_the_public_names_without_a_page(docs_ext, tmp_path):
    completeness = docs_ext("completeness")
    names = completeness.public_names()
    assert "sklearn_imgpair.ImagePairClassifier" in names
    assert "sklearn_imgpair.onnx.OnnxImageMatcher" in names
    pages = tmp_path / completeness.API_PAGES
    pages.mkdir(parents=True)
    for name in names[1:]:
        (pages / f"{name}.rst").write_text(name)
    assert completeness.missing_pages(tmp_path) == [names[0]]


def test_build_check_names_gallery_examples_without_a_figure(docs_ext, tmp_path):
    completeness = docs_ext("completeness")
    examples = tmp_path / "examples"
    images = tmp_path / "docs" / "auto_examples" / "images"
    examples.mkdir()
    images.mkdir(parents=True)
    for name in ("plot_a.py", "plot_b.py", "helper.py"):
        (examples / name).write_text("")
    (images / "sphx_glr_plot_a_001.png").write_bytes(b"")
    (images / "thumb" / "sphx_glr_plot_b_thumb.png").parent.mkdir()
    conf = {"examples_dirs": str(examples), "gallery_dirs": "auto_examples"}
    assert completeness.examples_without_figure(tmp_path / "docs", conf) == ["plot_b.py"]


def test_build_check_names_notebooks_that_show_no_figure(docs_ext, tmp_path):
    completeness = docs_ext("completeness")
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "drawn.html").write_text('<p>out</p><img src="a.png">')
    (tmp_path / "notebooks" / "blank.html").write_text("<p>no figure</p>")
    names = ["notebooks/drawn", "notebooks/blank"]
    assert completeness.notebooks_without_figure(tmp_path, names) == ["notebooks/blank"]


def _write_site(folder, pages):
    for name, body in pages.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"<html><body>{body}</body></html>\n")


def test_link_check_passes_a_site_whose_links_all_resolve(docs_ext, tmp_path):
    internal_links = docs_ext("internal_links")
    _write_site(tmp_path, {
        "index.html": '<a href="api/page.html#fit">fit</a> <a href="#top" id="top">top</a>'
                      '<a href="https://example.org/missing.html#x">out</a>'
                      '<img src="_images/plot.png"> <a href="api/">folder</a>',
        "api/page.html": '<dt id="fit">fit</dt><a href="../index.html">back</a>',
        "api/index.html": "",
        "_static/theme.html": '<a href="{{ pathto(\'x\') }}">template</a>',
    })
    (tmp_path / "_images").mkdir()
    (tmp_path / "_images" / "plot.png").write_bytes(b"")
    assert internal_links.broken_links(tmp_path) == []


def test_link_check_fails_on_a_missing_page_or_anchor(docs_ext, tmp_path):
    internal_links = docs_ext("internal_links")
    _write_site(tmp_path, {
        "index.html": '<a href="api/page.html#predict">predict</a>\n'
                      '<a href="api/gone.html">gone</a>\n<a href="#nowhere">self</a>',
        "api/page.html": '<dt id="fit">fit</dt>',
    })
    assert internal_links.broken_links(tmp_path) == [
        "index.html:1: api/page.html#predict (no anchor #predict in api/page.html)",
        "index.html:2: api/gone.html (no such file)",
        "index.html:3: #nowhere (no anchor #nowhere in index.html)",
    ]


def test_offline_intersphinx_leaves_out_libraries_without_an_inventory(docs_ext, tmp_path,
                                                                       monkeypatch):
    offline_intersphinx = docs_ext("offline_intersphinx")
    monkeypatch.setattr(offline_intersphinx, "INVENTORY_DIR", tmp_path)
    (tmp_path / "numpy.inv").write_bytes(b"cached")
    mapping, ignored = offline_intersphinx.offline_mapping()
    assert mapping == {"numpy": ("https://numpy.org/doc/stable/", str(tmp_path / "numpy.inv"))}

    def ignored_target(target):
        return any(re.fullmatch(pattern, target) for pattern in ignored)

    for target in ("sklearn.base.BaseEstimator", "torch.Tensor", "skorch.NeuralNet",
                   "pandas.DataFrame", "str", "pathlib.Path", "time.monotonic"):
        assert ignored_target(target), target
    for target in ("sklearn_imgpair.ImagePairClassifier", "ImageNeighbors.kneighbors",
                   "numpy.ndarray", "find_duplicates", "torchmetrics.X"):
        assert not ignored_target(target), target


def test_every_inventory_in_the_repository_is_a_known_library(docs_ext):
    offline_intersphinx = docs_ext("offline_intersphinx")
    for path in offline_intersphinx.INVENTORY_DIR.glob("*.inv"):
        assert path.stem in offline_intersphinx.LIBRARIES, path.name


@pytest.mark.parametrize("name", EXAMPLES)
def test_gallery_example_is_a_titled_script_in_cells(name):
    path = GALLERY / name
    source = path.read_text()
    tree = ast.parse(source, filename=str(path))  # compiles
    compile(tree, str(path), "exec")
    title = ast.get_docstring(tree).strip().splitlines()
    assert len(title) >= 2 and set(title[1]) == {"="} and len(title[1]) >= len(title[0])
    assert source.count("\n# %%\n") >= 2
    assert "plt.show()" in source and "pretrained=False" in source


def test_gallery_has_a_header_and_only_listed_examples(docs_ext):
    assert (GALLERY / "GALLERY_HEADER.rst").is_file()
    assert sorted(path.name for path in GALLERY.glob("plot_*.py")) == sorted(EXAMPLES)
    order = docs_ext("gallery_order")
    assert sorted(EXAMPLES, key=order.ExampleOrder(str(GALLERY))) == list(order.ORDER)
    assert set(order.ORDER) == set(EXAMPLES)


def _slug(heading):
    """The anchor GitHub and MyST give a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(path):
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {_slug(match) for match in re.findall(r"^#+ (.+)$", text, re.M)}


def _relative_links(path):
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return [link for link in re.findall(r"\]\(([^)\s]+)\)", text)
            if not re.match(r"[a-z]+:", link)]


@pytest.mark.parametrize("page", [README, DOCS / "index.md", DOCS / "install.md",
                                  *sorted((DOCS / "user_guide").glob("*.md"))],
                         ids=lambda path: path.name)
def test_markdown_links_lead_to_existing_files_and_headings(page):
    for link in _relative_links(page):
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if path.parent == (DOCS / "notebooks").resolve():
            # docs/notebooks/ is the build's copy of notebooks/ (conf.py; git-ignored).
            path = ROOT / "notebooks" / path.name
        assert path.exists(), f"{page.name}: {link}"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{page.name}: {link}"


def test_readme_is_a_landing_page_that_links_every_guide_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    links = {(README.parent / link.partition("#")[0]).resolve()
             for link in _relative_links(README)}
    guide = set((DOCS / "user_guide").glob("*.md")) - {DOCS / "user_guide" / "index.md"}
    assert {path.resolve() for path in guide} <= links
    for path in (DOCS / "install.md", DOCS / "api.rst", GALLERY,
                 ROOT / "notebooks" / "image_to_image_matching.ipynb"):
        assert path.resolve() in links, path
    assert 'sphinx-build -W --keep-going -b html docs docs/_build/html' in text


def test_readme_and_installation_page_start_with_the_same_two_commands():
    def commands(path):
        return re.search(r"```bash\n(.*?)```", path.read_text(), re.S)[1].splitlines()[:2]

    readme = commands(README)
    assert readme[0].endswith("-m sklearn_imgpair demo")
    assert readme[1].endswith("-m pytest")
    assert commands(DOCS / "install.md") == readme


def test_every_guide_page_is_in_the_guide_table_of_contents():
    index = (DOCS / "user_guide" / "index.md").read_text()
    toctree = re.search(r":::\{toctree\}\n(.*?):::", index, re.S)[1]
    listed = {line.strip() for line in toctree.splitlines()
              if line.strip() and not line.startswith(":")}
    pages = {path.stem for path in (DOCS / "user_guide").glob("*.md")} - {"index"}
    assert listed == pages


def test_docs_extra_installs_the_build_tools():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    requirements = config["options.extras_require"]["docs"].split()
    names = {re.split(r"[<>=\[]", requirement)[0] for requirement in requirements}
    assert {"sphinx", "pydata-sphinx-theme", "numpydoc", "sphinx-gallery", "myst-nb",
            "ipykernel", "matplotlib"} <= names


def test_ci_builds_the_site_with_warnings_as_errors():
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"sphinx-build -W --keep-going -b html docs \S+", ci)
