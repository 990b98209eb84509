"""Generated reference documents are current."""

import os

from jboat.tools.yaml_reference import yaml_reference

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


def test_committed_yaml_reference_is_current():
    with open(os.path.join(DOCS, "yaml_reference.md"), encoding="utf-8") as handle:
        committed = handle.read()
    assert committed == yaml_reference(), (
        "docs/yaml_reference.md is stale: run python -m jboat.tools.yaml_reference "
        "> docs/yaml_reference.md")


def test_every_option_is_documented():
    text = yaml_reference()
    import jboat
    for cls in jboat.Operation_REGISTRY.values():
        for option in cls.options:
            assert f"`{option.name}`" in text
