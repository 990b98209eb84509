"""A user-written na operator, defined outside the package, registered and run in a
Problem (the example of docs/user_guide.md, "Writing your own operator")."""

import numpy as np
import pytest

import jboat
from jboat import ConfigError, register_class
from jboat.na_ol import HyperGradient
from jboat.operation_registry import HyperGradientRules, Operation_REGISTRY
from jboat.options import Option
from quadratic import Quadratic, rel_err


def _define():
    class ScaledBackprop(HyperGradient):
        """Terminal: ``scale`` times the reverse-mode derivative of ``F(x, y_sel)``."""

        tracks_trajectory = True          # the inner loop must keep its graph
        options = (Option("scale", "float", 1.0, low=0.0, low_open=True,
                          doc="factor applied to the hyper-gradient"),)

        def __init__(self, solver_config, **kwargs):
            super().__init__(solver_config=solver_config, **kwargs)
            self.scale = solver_config["ScaledBackprop"]["scale"]

        def hypergradient(self, trajectory, ll_feed_dict, ul_feed_dict, wrt=None):
            upper_loss = self.upper_loss_at(ul_feed_dict, trajectory, trajectory.params())
            grads = self.differentiate(upper_loss, trajectory, wrt)
            grads.upper = [g * self.scale for g in grads.upper]
            return grads
    return ScaledBackprop


@pytest.fixture
def custom():
    cls = register_class(_define())
    yield cls
    Operation_REGISTRY.pop(cls.__name__)


def test_custom_terminal_runs_in_a_problem_and_matches_the_closed_form(custom):
    q = Quadratic()
    K = 5
    problem = q.build(["NGD"], ["ScaledBackprop"], lower_iters=K, return_grad=True,
                      ScaledBackprop={"scale": 0.5})
    grads, _ = problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    expected = 0.5 * q.unrolled_hypergradient(q.x0, q.y0, K)
    assert rel_err(grads[0].numpy(), expected) < 1e-4
    assert "ScaledBackprop" in jboat.operators_by_role("na")
    assert "ScaledBackprop" in HyperGradientRules.get_gradient_order()[-2]


def test_custom_terminal_takes_the_built_in_pre_operators(custom):
    # the pre-operator only changes the plan: the custom terminal needs no code for it
    q = Quadratic()
    K, T = 5, 2
    problem = q.build(["NGD"], ["RGT", "ScaledBackprop"], lower_iters=K, return_grad=True,
                      RGT={"truncate_iter": T})
    grads, _ = problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    expected = q.unrolled_hypergradient(q.x0, q.y0, K, start=T)
    assert rel_err(grads[0].numpy(), expected) < 1e-4


def test_custom_terminal_steps_the_upper_level(custom):
    q = Quadratic()
    problem = q.build(["NGD"], ["ScaledBackprop"], lower_iters=3,
                      ScaledBackprop={"scale": 2.0})
    records, _ = problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    step = 0.1 * 2.0 * q.unrolled_hypergradient(q.x0, q.y0, 3)
    assert rel_err(q.upper.value.numpy(), q.x0 - step) < 1e-4
    assert np.isfinite(records[-1]["gradient_operator_results"]["upper_loss"])


def test_custom_operator_options_and_combinations_are_validated(custom):
    q = Quadratic()
    with pytest.raises(ConfigError, match="ScaledBackprop.scale must be > 0.0"):
        q.build(["NGD"], ["ScaledBackprop"], ScaledBackprop={"scale": -1.0})
    with pytest.raises(ConfigError, match="terminal part"):
        q.build(["NGD"], ["ScaledBackprop", "RAD"])


def test_unregistered_operator_is_refused_with_the_known_names():
    q = Quadratic()
    with pytest.raises(jboat.errors.UnknownOperatorError, match="Valid na_op names"):
        q.build(["NGD"], ["ScaledBackprop"])
