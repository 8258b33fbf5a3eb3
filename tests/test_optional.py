"""The core package works without the distributed extra, and says how to install it."""

import subprocess
import sys

import pytest

from sklearn_imgpair._optional import import_optional


def test_import_optional_returns_the_module():
    import json

    assert import_optional("json", "a feature") is json


def test_import_optional_says_how_to_install_the_extra():
    with pytest.raises(ImportError, match=r'embed_dask needs .*not_a_module_8.* pip install '
                                          r'"sklearn-imgpair\[distributed\]"'):
        import_optional("not_a_module_8", "embed_dask")


def test_package_imports_without_dask_and_accelerate():
    # A fresh interpreter in which dask, distributed and accelerate cannot be imported.
    code = (
        "import sys\n"
        "for name in ('dask', 'distributed', 'accelerate'):\n"
        "    sys.modules[name] = None\n"
        "import sklearn_imgpair\n"
        "try:\n"
        "    sklearn_imgpair.embed_dask(None, None)\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert 'pip install "sklearn-imgpair[distributed]"' in result.stdout
