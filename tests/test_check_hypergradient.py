"""jboat.check_hypergradient: the finite-difference check users run on their own model.

On the closed-form quadratic (float32: the map is quadratic in x, so the central
difference is exact up to round-off) it must agree with exact operators, report the
error of approximate ones, fail loudly on a wrong hyper-gradient, leave the problem
untouched, and refuse what it cannot check with a message that says what to do.
"""

import logging

import jittor as jt
import numpy as np
import pytest

import jboat
from jboat.utils.modules import unregistered_modules
from quadratic import Quadratic, upper_adam_state


def _check(problem, q, **kwargs):
    return jboat.check_hypergradient(problem, q.ll_feed(), q.ul_feed(), **kwargs)


def test_exact_operator_agrees_and_the_value_is_the_unrolled_map():
    q = Quadratic()
    problem = q.build(["NGD"], ["RAD"], lower_iters=4,
                      ll_opt=lambda ps: jt.optim.SGD(ps, lr=q.lr, momentum=0.5))
    result = _check(problem, q, directions=3)
    assert result.passed(1e-3), str(result)
    assert len(result.relative_errors) == 3
    # Φ(x) at the current point: 4 SGD steps with momentum, fresh buffers
    y, v, x = q.y0.copy(), np.zeros(q.m), q.x0
    for _ in range(4):
        v = 0.5 * v + (q.A @ y - q.B @ x)
        y = y - q.lr * v
    np.testing.assert_allclose(result.value, q.F(x, y), rtol=1e-5)


def test_a_wrong_hypergradient_fails_the_check():
    """FOA drops the second-order terms: the check must see it."""
    q = Quadratic()
    result = _check(q.build(["NGD"], ["FOA", "RAD"], lower_iters=5), q, directions=3)
    assert result.max_relative_error > 0.05, str(result)
    assert not result.passed(1e-3)


def test_approximate_operator_reports_its_error():
    """Truncated CG solves approximate the implicit derivative: finite, non-zero error,
    smaller as the lower level converges."""
    q = Quadratic()
    errors = []
    for steps in (3, 60):
        problem = q.build(["NGD"], ["CG"], lower_iters=steps, CG={"k": 20, "tolerance": 1e-10})
        errors.append(_check(problem, q, directions=2).max_relative_error)
    assert errors[1] < 1e-2 < errors[0] and errors[1] < errors[0] / 100, errors


def test_the_check_leaves_the_problem_untouched():
    q = Quadratic()
    problem = q.build(["NGD"], ["RAD"], lower_iters=3,
                      ul_opt=lambda ps: jt.optim.Adam(ps, lr=0.1))
    problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    before = upper_adam_state(problem)
    history = len(problem.loss_history)
    _check(problem, q, directions=2)
    after = upper_adam_state(problem)
    for a, b in zip(before[0], after[0]):
        np.testing.assert_array_equal(a, b)
    assert before[1] == after[1]
    for a, b in zip(before[2] + before[3], after[2] + after[3]):
        np.testing.assert_array_equal(a, b)
    assert len(problem.loss_history) == history
    assert problem.boat_configs["return_grad"] is False


def test_meta_batches_sum_over_tasks():
    q = Quadratic()
    problem = q.build(["NGD"], ["RAD"], lower_iters=3, accumulate_grad=True)
    feeds = [q.ll_feed(), q.ll_feed()], [q.ul_feed(), q.ul_feed()]
    result = jboat.check_hypergradient(problem, *feeds, directions=2)
    assert result.passed(1e-3), str(result)
    with pytest.raises(jboat.ConfigTypeError, match="lists of task feeds"):
        jboat.check_hypergradient(problem, q.ll_feed(), q.ul_feed())


def test_what_cannot_be_checked_is_refused_with_the_fix():
    q = Quadratic()
    with pytest.raises(jboat.ConfigError, match="NGD"):
        _check(q.build(["GDA", "NGD"], ["RAD"]), q)
    with pytest.raises(jboat.ConfigError, match="first-order"):
        _check(q.build(None, None, fo_op="VSO"), q)
    with pytest.raises(jboat.ConfigTypeError, match="directions"):
        _check(q.build(), q, directions=0)


# -- unregistered sub-modules -----------------------------------------------------------------
class Listed(jt.Module):
    """PyTorch habits: sub-modules in a plain list and a dict, one registered layer."""

    def __init__(self):
        self.cells = [jt.nn.Linear(2, 2), jt.nn.Linear(2, 2)]
        self.heads = {"a": jt.nn.Linear(2, 1)}
        self.stem = jt.nn.Linear(2, 2)
        self.names = ["not", "modules"]

    def execute(self, x):
        for cell in self.cells:
            x = cell(x)
        return self.heads["a"](self.stem(x))


def test_modules_in_plain_containers_are_found():
    found = {path: (kind, len(mods)) for path, kind, mods in unregistered_modules(Listed())}
    assert found == {"cells": ("list", 2), "heads": ("dict", 1)}
    registered = jt.nn.Sequential(jt.nn.Linear(2, 2), jt.nn.ModuleList([jt.nn.Linear(2, 2)]))
    assert unregistered_modules(registered) == []


def test_problem_warns_once_naming_the_attribute_and_the_fix(caplog):
    from jboat.utils import modules

    q = Quadratic()
    model = Listed()
    modules._warned.clear()
    caplog.set_level(logging.WARNING, logger="jboat")
    for _ in range(2):
        q.build(lower_level_model=model, lower_level_var=list(model.parameters()),
                lower_level_opt=jt.optim.SGD(model.parameters(), lr=0.1))
    messages = [r.getMessage() for r in caplog.records if "does not" in r.getMessage()]
    assert len(messages) == 2                      # once per attribute, not per Problem
    cells = next(m for m in messages if "Listed.cells" in m)
    assert "plain list" in cells and "4 trainable tensors" in cells
    assert "jt.nn.ModuleList" in cells and "lower_level_var" in cells
    # passing the variables yourself silences it
    modules._warned.clear()
    caplog.clear()
    every = list(model.parameters()) + [p for c in model.cells for p in c.parameters()] + \
        list(model.heads["a"].parameters())
    q.build(lower_level_model=model, lower_level_var=every,
            lower_level_opt=jt.optim.SGD(every, lr=0.1))
    assert not [r for r in caplog.records if "does not" in r.getMessage()]
