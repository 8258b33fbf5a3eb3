"""The examples of the README and of the user guide run as written."""

import re
from pathlib import Path

import pytest

from conftest import go_offline

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GUIDE = sorted((ROOT / "docs" / "user_guide").glob("*.md"))


def _blocks(path, marker):
    """The Python blocks of a Markdown file that follow ``<!-- marker -->``, with an id."""
    blocks = re.findall(rf"<!-- {marker} -->\n```python\n(.*?)```", path.read_text(), re.S)
    return [(path, code) for code in blocks]


README_BLOCKS = _blocks(README, "readme-test")
GUIDE_BLOCKS = [block for page in GUIDE for block in _blocks(page, "docs-test")]
BLOCKS = README_BLOCKS + GUIDE_BLOCKS
IDS = [f"{path.stem}-block{i}" for i, (path, _) in enumerate(BLOCKS)]


def test_readme_and_guide_have_runnable_examples():
    assert README_BLOCKS
    # The guide's pages that show scikit-learn, reliability and scaling-out code keep it tested.
    tested = {path.stem for path, _ in GUIDE_BLOCKS}
    assert {"sklearn", "search", "speed"} <= tested, tested


# Modules of the optional `distributed` extra, by the name a block imports them under.
OPTIONAL = {"dask": "dask.distributed", "accelerate": "accelerate"}


@pytest.mark.parametrize("path, code", BLOCKS, ids=IDS)
def test_example_runs(path, code, tmp_path, monkeypatch):
    for name, module in OPTIONAL.items():
        if re.search(rf"^(from|import) {name}\b", code, re.M):
            pytest.importorskip(module, reason='this example needs the distributed extra: '
                                'pip install "sklearn-imgpair[distributed]"')
    monkeypatch.chdir(tmp_path)
    go_offline(monkeypatch)
    namespace = {"__name__": "__main__"}  # run as a script
    exec(compile(code, str(path), "exec"), namespace)
    if "embeddings" in namespace:  # the blocks that end by embedding the test images
        assert namespace["embeddings"].shape[0] == len(namespace["test"])
