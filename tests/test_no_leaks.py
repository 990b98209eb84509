"""No graph or Var kept alive across run_iter calls: Jittor's count of live Vars is flat."""

import jittor as jt
import pytest

from quadratic import Quadratic

FAMILIES = [
    dict(gm_op=["NGD"], na_op=["RAD"]),
    dict(gm_op=["DI", "NGD"], na_op=["RAD", "PTT"]),
    dict(gm_op=["GDA", "NGD"], na_op=["CG"]),
    dict(gm_op=["NGD"], na_op=["FD"], lower_iters=1),
    dict(gm_op=["DM", "NGD"], na_op=["RAD"], lower_iters=1),
    dict(gm_op=None, na_op=None, fo_op="PGDO"),
    dict(gm_op=None, na_op=None, fo_op="MESO"),
]


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: "+".join(
    (f.get("gm_op") or []) + (f.get("na_op") or []) + [f.get("fo_op") or ""]).strip("+"))
def test_live_vars_flat_over_iterations(family):
    q = Quadratic()
    family = dict(family)
    problem = q.build(family.pop("gm_op"), family.pop("na_op"),
                      lower_iters=family.pop("lower_iters", 3), **family)
    counts = []
    for it in range(60):
        problem.run_iter(q.ll_feed(), q.ul_feed(), it)
        if it in (20, 59):
            jt.sync_all()
            jt.gc()
            counts.append(jt.liveness_info()["lived_vars"])
    assert counts[1] <= counts[0], f"live Vars grew from {counts[0]} to {counts[1]}"
    assert len(problem.loss_history) == 60 and len(problem._log_results) <= 10000
