"""NaN guard (roll back + named stage) and checkpoint/resume equal to an uninterrupted run."""

import os
import subprocess
import sys

import jittor as jt
import numpy as np
import pytest

from quadratic import Quadratic, lower_loss, upper_adam_state, upper_loss

HERE = os.path.dirname(os.path.abspath(__file__))


class PoisonedLoss:
    """The quadratic LL loss, returning NaN at one chosen call once armed."""

    def __init__(self):
        self.calls, self.at = 0, None

    def __call__(self, feed, upper_model, lower_model, **kwargs):
        value = lower_loss(feed, upper_model, lower_model, **kwargs)
        self.calls += 1
        return value * float("nan") if self.calls == self.at else value


def test_nan_in_lower_loss_at_step_3_rolls_back():
    q = Quadratic()
    loss = PoisonedLoss()
    problem = q.build(["NGD"], ["RAD"], lower_iters=5,
                      ul_opt=lambda ps: jt.optim.Adam(ps, lr=0.05),
                      losses={"lower_level_loss": loss, "upper_level_loss": upper_loss})
    problem.run_iter(q.ll_feed(), q.ul_feed(), 0)        # a healthy iteration first
    before = upper_adam_state(problem)
    loss.calls, loss.at = 0, 4                           # steps are 0-based: call 4 = step 3
    with pytest.raises(FloatingPointError, match=r"LL step 3 \(lower-level loss\).*rolled back"):
        problem.run_iter(q.ll_feed(), q.ul_feed(), 1)
    after = upper_adam_state(problem)
    for a, b in zip(before[0], after[0]):
        np.testing.assert_array_equal(a, b)
    assert before[1] == after[1] == 1
    for a, b in zip(before[2] + before[3], after[2] + after[3]):
        np.testing.assert_array_equal(a, b)
    assert [r["iter"] for r in problem.loss_history] == [0]
    loss.at = None
    problem.run_iter(q.ll_feed(), q.ul_feed(), 1)        # and the run can go on


def test_nan_in_upper_gradient_is_named():
    q = Quadratic()

    def bad_upper(feed, upper_model, lower_model, **kwargs):
        return upper_loss(feed, upper_model, lower_model, **kwargs) + jt.log(upper_model().sum() * 0 - 1)
    problem = q.build(["NGD"], ["RAD"], lower_iters=2,
                      losses={"lower_level_loss": lower_loss, "upper_level_loss": bad_upper})
    x0 = q.upper.value.numpy().copy()
    with pytest.raises(FloatingPointError, match="hyper-gradient operator NGD\\+RAD"):
        problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    np.testing.assert_array_equal(q.upper.value.numpy(), x0)


RESUME = r"""
import json, sys, numpy as np
sys.path.insert(0, {here!r}); sys.path.insert(0, {here!r} + "/fo_ol")
import jboat, jittor as jt
from quadratic import Quadratic
from fo_reference import build, feeds, square_quadratic
start, stop, prefix = {start}, {stop}, {prefix!r}
out = {{}}
for name, spec in json.loads({families!r}).items():
    fo = spec.pop("fo_op", None)
    adam = lambda ps: jt.optim.Adam(ps, lr=0.05)
    if fo:
        q = square_quadratic() if fo == "GAFFO" else Quadratic()
        problem = build(q, fo, lower_iters=3, ul_opt=adam)
        ll, ul = feeds(q, offset=10.0)
    else:
        q = Quadratic()
        problem = q.build(spec.pop("gm_op"), spec.pop("na_op"), ul_opt=adam, **spec)
        ll, ul = q.ll_feed(), q.ul_feed()
    path = prefix + name + ".pkl"
    if start:
        problem.load_state_dict(jt.load(path))
    for it in range(start, stop):
        problem.run_iter(ll, ul, it)
    if not start:
        jt.save(problem.state_dict(), path)
    out[name] = np.concatenate([v.numpy().ravel() for v in problem._tracked_vars()]).tolist()
json.dump(out, open(prefix + "out.json", "w"))
"""

FAMILIES = {
    "NGD+RAD": {"gm_op": ["NGD"], "na_op": ["RAD"], "lower_iters": 4},
    "DI+NGD+RAD+PTT": {"gm_op": ["DI", "NGD"], "na_op": ["RAD", "PTT"], "lower_iters": 4,
                       "DI": {"lr": 0.05}},
    "DM+NGD+RAD": {"gm_op": ["DM", "NGD"], "na_op": ["RAD"], "lower_iters": 1,
                   "DM": {"tau": 0.5}},
    "DM+GDA+NGD+CG": {"gm_op": ["DM", "GDA", "NGD"], "na_op": ["CG"], "lower_iters": 1,
                      "DM": {"strategy": "s2"}},
    **{op: {"fo_op": op} for op in ["VSO", "VFO", "MESO", "PGDO", "ALTO", "GAFFO"]},
}


def _run(start, stop, prefix):
    import json

    code = RESUME.format(here=HERE, start=start, stop=stop, prefix=str(prefix),
                         families=json.dumps(FAMILIES))
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    with open(str(prefix) + "out.json") as handle:
        return {k: np.array(v) for k, v in json.load(handle).items()}


def test_resume_in_new_process_equals_uninterrupted(tmp_path):
    """Stop after 3 iterations, resume in a new process: the same numbers as 6 straight,
    for each family with state (Adam moments, DI's optimizer, DM's multiplier and
    schedules, MESO's θ, PGDO's ŷ and γ)."""
    straight = _run(0, 6, tmp_path / "straight_")
    _run(0, 3, tmp_path / "ckpt_")
    resumed = _run(3, 6, tmp_path / "ckpt_")
    halfway = _run(0, 3, tmp_path / "other_")
    for name in FAMILIES:
        np.testing.assert_allclose(resumed[name], straight[name], rtol=1e-6, atol=1e-7,
                                   err_msg=name)
        assert not np.allclose(halfway[name], straight[name]), name


def test_same_seed_same_results():
    runs = []
    for _ in range(2):
        jt.set_global_seed(7)
        q = Quadratic(seed=7)
        problem = q.build(["GDA", "NGD"], ["CG"], lower_iters=3)
        for it in range(3):
            problem.run_iter(q.ll_feed(), q.ul_feed(), it)
        runs.append(np.concatenate([q.upper.value.numpy(), q.lower.value.numpy()]))
    np.testing.assert_array_equal(runs[0], runs[1])


def test_load_state_dict_rejects_other_solver():
    q = Quadratic()
    state = q.build(["NGD"], ["RAD"]).state_dict()
    other = Quadratic().build(["GDA", "NGD"], ["RAD"])
    with pytest.raises(ValueError, match="operators"):
        other.load_state_dict(state)
