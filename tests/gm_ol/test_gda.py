"""GDA: the LL steps follow the aggregated objective with a decaying weight, and
RAD differentiates that aggregated trajectory exactly."""

import numpy as np

from quadratic import (Quadratic, gda_alphas, gda_trajectory, gda_unrolled_hypergradient,
                       rel_err)

K, ALPHA_INIT, ALPHA_DECAY = 5, 0.6, 0.7


def _build(q, **options):
    return q.build(["GDA", "NGD"], ["RAD"], lower_iters=K,
                   GDA={"alpha_init": ALPHA_INIT, "alpha_decay": ALPHA_DECAY}, **options)


def test_oracle_alphas_decay_geometrically():
    np.testing.assert_allclose(gda_alphas(3, 0.6, 0.7), [0.6, 0.42, 0.294])


def test_lower_trajectory_is_the_aggregated_iteration():
    q = Quadratic()
    problem = _build(q, return_grad=True)          # no UL step; y_K copied into the LL model
    ll_feed = q.ll_feed()
    problem.run_iter(ll_feed, q.ul_feed(), 0)
    expected = gda_trajectory(q, q.x0, q.y0, K, ALPHA_INIT, ALPHA_DECAY)[-1]
    plain = q.trajectory(q.x0, q.y0, K)[-1]
    y_K = q.lower.value.numpy()
    assert rel_err(y_K, expected) < 1e-5
    assert rel_err(y_K, plain) > 1e-2               # the aggregation is visible
    assert "alpha" not in ll_feed                   # the caller's feed is not modified


def test_lower_trajectory_with_constant_weight():
    q = Quadratic()
    problem = q.build(["GDA", "NGD"], ["RAD"], lower_iters=3, return_grad=True,
                      GDA={"alpha_init": 0.3, "alpha_decay": 1.0})
    problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    expected = gda_trajectory(q, q.x0, q.y0, 3, 0.3, 1.0)[-1]
    assert rel_err(q.lower.value.numpy(), expected) < 1e-5


def test_rad_hypergradient_through_aggregated_steps():
    q = Quadratic()
    problem = _build(q, return_grad=True)
    grads, _ = problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    expected = gda_unrolled_hypergradient(q, q.x0, q.y0, K, ALPHA_INIT, ALPHA_DECAY)
    assert rel_err(grads[0].numpy(), expected) < 1e-4
    assert rel_err(grads[0].numpy(), q.unrolled_hypergradient(q.x0, q.y0, K)) > 1e-2


def test_oracle_hypergradient_matches_finite_differences():
    """The hand-derived dy_K/dx of the aggregated iteration, checked in float64."""
    q = Quadratic()

    def value(x):
        return q.F(x, gda_trajectory(q, x, q.y0, K, ALPHA_INIT, ALPHA_DECAY)[-1])

    eps = 1e-6
    fd = np.array([(value(q.x0 + eps * e) - value(q.x0 - eps * e)) / (2 * eps)
                   for e in np.eye(q.n)])
    analytic = gda_unrolled_hypergradient(q, q.x0, q.y0, K, ALPHA_INIT, ALPHA_DECAY)
    assert rel_err(analytic, fd) < 1e-7
