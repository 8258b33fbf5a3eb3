"""The README's examples run as written."""

import re
from pathlib import Path

import pytest

from conftest import go_offline

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"<!-- readme-test -->\n```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_runnable_examples():
    assert BLOCKS


# Modules of the optional `distributed` extra, by the name a block imports them under.
OPTIONAL = {"dask": "dask.distributed", "accelerate": "accelerate"}


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code, tmp_path, monkeypatch):
    for name, module in OPTIONAL.items():
        if re.search(rf"^(from|import) {name}\b", code, re.M):
            pytest.importorskip(module, reason='this README example needs the distributed '
                                'extra: pip install "sklearn-imgpair[distributed]"')
    monkeypatch.chdir(tmp_path)
    go_offline(monkeypatch)
    namespace = {"__name__": "__main__"}  # run as a script
    exec(compile(code, str(README), "exec"), namespace)
    if "embeddings" in namespace:  # the blocks that end by embedding the test images
        assert namespace["embeddings"].shape[0] == len(namespace["test"])
