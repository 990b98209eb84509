"""docs/second_order.md lists every audited case, all passing; the substituted cases
pass when re-measured (the full re-measurement: python -m jboat.tools.second_order_audit
--check, a few minutes)."""

import os

import pytest

from jboat.tools import second_order_audit as audit

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                   "second_order.md")


def _documented():
    with open(DOC, encoding="utf-8") as handle:
        return handle.read()


def test_table_lists_every_case_and_every_case_passes():
    rows = audit.table_keys(_documented())
    assert [(layer, config) for layer, config, _ in rows] == [
        (c.layer, c.config) for c in audit.cases()], (
        "docs/second_order.md is stale: run python -m jboat.tools.second_order_audit")
    assert all(result == "pass" for _, _, result in rows)


def test_render_table_round_trips():
    rows = [audit.Row("jt.nn.X", "cfg", 1.0, 1e-10, "a fix"),
            audit.Row("jt.nn.Y", "", 1e-9, None, "none needed")]
    assert audit.table_keys(audit.render_table(rows)) == [("jt.nn.X", "cfg", "pass"),
                                                          ("jt.nn.Y", "", "pass")]
    assert not audit.Row("jt.nn.Z", "", 1e-9, 1e-3, "fix").passed


SUBSTITUTED = [("jt.nn.MaxPool2d", "k 3, stride 1, padding 1 (DARTS)"),
               ("jt.nn.MaxPool2d", "k 3, stride 2, ceil_mode"),
               ("jt.nn.AvgPool2d", "k 3, stride 2, padding 1, ceil_mode, count_include_pad=False"),
               ("jt.nn.MaxPool3d", "k 2"),
               ("jt.nn.AdaptiveMaxPool2d", "output 2, return_indices (values)")]


@pytest.mark.parametrize("layer,config", SUBSTITUTED)
def test_substituted_layers_have_right_hessian_vector_products(layer, config):
    case = next(c for c in audit.cases() if (c.layer, c.config) == (layer, config))
    error, fd_norm, _ = audit.hvp_error(case, substitute=True)
    assert fd_norm > 1e-3 and error < audit.TOLERANCE
