"""Every valid combination (docs/combinations.md) builds and runs; invalid ones are refused
when the Problem is constructed; docs/combinations.md is the generated table."""

import pathlib

import jittor as jt
import numpy as np
import pytest

import jboat
from jboat import ConfigError
from jboat.tools.combination_table import check_pair, combination_table
from na_problems import MetaRegression
from quadratic import Quadratic, Vector, gda_loss, lower_loss, upper_loss

# upstream conformance lists (upstream BOAT); DM combinations are tested with DM
HYPER_CLEANING_GM = [["NGD"], ["DI", "NGD"], ["GDA", "NGD"], ["GDA", "NGD", "DI"],
                     ["DI", "NGD", "GDA"]]
HYPER_CLEANING_NA = [["CG"], ["CG", "PTT"], ["RAD"], ["RAD", "PTT"], ["RAD", "RGT"],
                     ["PTT", "RAD", "RGT"], ["FD"], ["FD", "PTT"], ["NS"], ["NS", "PTT"],
                     ["IGA"], ["IGA", "PTT"]]
META_GM = [["NGD"], ["NGD", "GDA"]]
META_NA = [["IAD"], ["IAD", "PTT"], ["CG", "IAD"], ["CG", "IAD", "PTT"], ["NS", "IAD"],
           ["NS", "IAD", "PTT"], ["FOA", "IAD"], ["FOA", "IAD", "PTT"]]


@pytest.mark.parametrize("na_op", HYPER_CLEANING_NA, ids="+".join)
@pytest.mark.parametrize("gm_op", HYPER_CLEANING_GM, ids="+".join)
def test_single_task_combination_runs(gm_op, na_op):
    q = Quadratic()
    problem = q.build(gm_op, na_op, lower_iters=3, RGT={"truncate_iter": 1},
                      GDA={"alpha_init": 0.5, "alpha_decay": 0.9}, DI={"lr": 0.05})
    for it in range(2):
        records, _ = problem.run_iter(q.ll_feed(), q.ul_feed(), it)
        result = records[-1]["gradient_operator_results"]
        assert result["hyper_gradient_finished"] and np.isfinite(result["upper_loss"])
    x, y = q.upper.value.numpy(), q.lower.value.numpy()
    assert np.all(np.isfinite(x)) and np.all(np.isfinite(y))
    assert not np.allclose(x, q.x0)            # two UL steps were taken


@pytest.mark.parametrize("na_op", META_NA, ids="+".join)
@pytest.mark.parametrize("gm_op", META_GM, ids="+".join)
def test_meta_learning_combination_runs(gm_op, na_op):
    meta = MetaRegression()
    problem = meta.build(gm_op, na_op, lower_iters=3, return_grad=False)
    records, _ = problem.run_iter(*meta.feeds(), 0)
    assert len([r for r in records if "gradient_operator_results" in r]) == 2   # two tasks
    theta = meta.model.value.numpy()
    assert np.all(np.isfinite(theta)) and not np.allclose(theta, meta.theta)


def _construct(gm_op, na_op, lower_iters=3, **options):
    q = Quadratic()
    upper, lower = Vector(q.x0), Vector(q.y0)
    config = {"gm_op": gm_op, "na_op": na_op, "lower_iters": lower_iters,
              "lower_level_model": lower, "upper_level_model": upper,
              "lower_level_var": list(lower.parameters()),
              "upper_level_var": list(upper.parameters()),
              "lower_level_opt": jt.optim.SGD(list(lower.parameters()), lr=0.1),
              "upper_level_opt": jt.optim.SGD(list(upper.parameters()), lr=0.1), **options}
    return jboat.Problem(config, {"lower_level_loss": lower_loss,
                                  "upper_level_loss": upper_loss, "gda_loss": gda_loss})


INVALID = [
    (["NGD"], ["RAD", "CG"], {}, "terminal part"),
    (["NGD"], ["CG", "NS"], {}, "terminal part"),
    (["NGD"], ["IAD", "RAD"], {}, "terminal part"),
    (["NGD"], ["PTT"], {}, "only pre-operators"),
    (["NGD"], ["FOA"], {}, "only pre-operators"),
    (["NGD"], ["FD", "RGT"], {"RGT": {"truncate_iter": 1}}, "FD and RGT"),
    (["DI", "NGD"], ["IAD"], {}, "DI and IAD"),
    (["GDA"], ["PTT", "RAD"], {}, "runs the lower-level loop"),
    (["NGD"], ["RGT", "RAD"], {"RGT": {"truncate_iter": 3}}, "smaller than lower_iters"),
    (["NGD"], ["NGD"], {}, "gm_op operator"),
]


@pytest.mark.parametrize("gm_op, na_op, options, message", INVALID,
                         ids=[f"{'+'.join(g)}|{'+'.join(n)}" for g, n, _, _ in INVALID])
def test_invalid_combination_is_refused_at_construction(gm_op, na_op, options, message):
    with pytest.raises(ConfigError, match=message):
        _construct(gm_op, na_op, **options)
    if not options:  # a refused pair, not a bad option value: the table says so too
        assert check_pair(gm_op, na_op)[1] is not None


def test_ptt_with_a_single_loop_solver_is_refused_naming_it():
    # PTT selects a step of the inner loop that NGD runs; a single-loop gm terminal
    # (DM) runs none: the error names PTT, the gm_op and the fix
    with pytest.raises(ConfigError, match=r"PTT .*gm_op \['DM'\].*NGD"):
        _construct(["DM"], ["PTT", "RAD"], lower_iters=1)


@pytest.mark.parametrize("gm_op, na_op", [(g, n) for g in HYPER_CLEANING_GM
                                          for n in HYPER_CLEANING_NA]
                         + [(g, n) for g in META_GM for n in META_NA])
def test_table_accepts_the_conformance_lists(gm_op, na_op):
    assert check_pair(gm_op, na_op) == (10, None)


def test_committed_combination_table_is_current():
    path = pathlib.Path(__file__).resolve().parents[2] / "docs" / "combinations.md"
    assert path.read_text(encoding="utf-8") == combination_table(), (
        "docs/combinations.md is stale; regenerate it with "
        "`python -m jboat.tools.combination_table > docs/combinations.md`")
