"""Operators never name each other: no module under jboat/gm_ol, jboat/na_ol or
jboat/fo_ol contains the name of an operator it does not define (code, strings,
comments and docstrings alike). Package ``__init__`` files, which only export the
names, are exempt."""

import pathlib
import re

import pytest

import jboat
from jboat.operation_registry import Operation_REGISTRY

PACKAGE = pathlib.Path(jboat.__file__).resolve().parent
MODULES = sorted(p for sub in ("gm_ol", "na_ol", "fo_ol") for p in (PACKAGE / sub).glob("*.py")
                 if p.name != "__init__.py")


def _builtin_operators():
    return {name: cls for name, cls in Operation_REGISTRY.items()
            if getattr(cls, "role", None) is not None and cls.__module__.startswith("jboat.")}


def _foreign_names(path, text):
    module = "jboat." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    found = []
    for name, cls in _builtin_operators().items():
        if cls.__module__ == module:
            continue
        if re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", text):
            found.append(name)
    return found


def test_the_scan_sees_every_operator_module():
    assert len(MODULES) >= 20
    assert {"NGD", "RAD", "CG", "DM", "VSO", "PTT"} <= set(_builtin_operators())


@pytest.mark.parametrize("path", MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_module_names_no_other_operator(path):
    text = path.read_text(encoding="utf-8")
    assert _foreign_names(path, text) == []


def test_the_scan_would_catch_a_name():
    path = PACKAGE / "gm_ol" / "ngd.py"
    assert _foreign_names(path, 'if "PTT" in na_op:') == ["PTT"]
    assert _foreign_names(path, "see RAD's docstring") == ["RAD"]
    assert _foreign_names(path, "NGD runs the loop; RADIUS, CG_EPSILON") == []
