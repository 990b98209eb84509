import os
import sys

# jboat must be imported before Jittor so that its environment defaults apply.
import jboat  # noqa: F401
import pytest

sys.path.insert(0, os.path.dirname(__file__))


def pytest_collection_modifyitems(config, items):
    import jittor as jt

    if jt.has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (Jittor found none)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
