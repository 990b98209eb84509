"""DM: one iteration = one LL step, one multiplier step and one UL step, checked
against the update equations written out below (float64 oracle)."""

import jittor as jt
import numpy as np
import pytest

from jboat.errors import ConfigError
from jboat.gm_ol.dm import DM, dm_schedule
from quadratic import Quadratic, rel_err

UL_LR0 = 2.0                    # λ0: constructor lr of the UL optimizer
ALPHA_INIT = 0.6                # GDA's weight for NGD's look-ahead step
ALPHA_DECAY = 0.5               # GDA's decay of that weight along NGD's steps
DM_OPTIONS = {"tau": 0.5, "p": 4.0, "mu0": 0.95, "eta0": 1.5, "auxiliary_v_lr": 0.02}
FIRST_ITER = 1                  # current_iter of the first call ((k+1) != 1)
POWERS = {"s1": (2, 7), "s2": (1, 5), "s3": (0, 3)}


def reference_step(q, x, y, v, k, *, ngd, gda, line_search, strategy, steps=1):
    """One DM iteration on the quadratic problem, by hand.

    φ = α F + (1 − α) f with α = μ0 (k+1)^{-1/p} under GDA, α = 0 (φ = f) without;
    ỹ = y, or NGD's look-ahead after ``steps`` = K plain LL steps
    ỹ_{t+1} = ỹ_t − s ∇_y h_t(x, ỹ_t) (h_t at GDA's alpha_init · alpha_decay^t).
      ∇_y φ = α Cᵀ(Cỹ − t) + (1 − α)(Aỹ − Bx),  ∇²_yy φ = α CᵀC + (1 − α)A,
      ∇²_xy φ · v = −(1 − α) Bᵀv,  ∇_y F = Cᵀ(Cỹ − t),  ∇_x F = μx.
    y⁺ = y − s ∇_y φ;  r = ∇²_yy φ v − ∇_y F;  v⁺ = v − η r (RAD) or
    v − (‖r‖²/(rᵀ∇²_yy φ r + 1e-12)) r (CG);  x⁺ = x − λ (μx + (1 − α)Bᵀv).
    """
    s, A, B, C, t, mu = q.lr, q.A, q.B, q.C, q.t, q.mu
    o = DM_OPTIONS
    k1 = k + 1.0
    if gda:
        alpha = o["mu0"] * k1 ** (-1.0 / o["p"])
        a, b = POWERS[strategy]
        eta = k1 ** (-o["tau"] / 2) * alpha ** a * s
        lam = k1 ** (-1.5 * o["tau"]) * alpha ** b * s
    else:
        alpha = 0.0
        eta = o["eta0"] * k1 ** (-o["tau"] / 2) * s
        lam = UL_LR0 * k1 ** (-o["tau"]) * s
    y_tilde = y
    for step in range(steps if ngd else 0):
        a0 = ALPHA_INIT * ALPHA_DECAY ** step if gda else 0.0
        y_tilde = y_tilde - s * (a0 * C.T @ (C @ y_tilde - t)
                                 + (1 - a0) * (A @ y_tilde - B @ x))
    hess = alpha * C.T @ C + (1 - alpha) * A
    g_y = alpha * C.T @ (C @ y_tilde - t) + (1 - alpha) * (A @ y_tilde - B @ x)
    r = hess @ v - C.T @ (C @ y_tilde - t)
    if line_search:
        v_new = v - (r @ r) / (r @ hess @ r + 1e-12) * r
    else:
        v_new = v - eta * r
    x_new = x - lam * (mu * x + (1 - alpha) * B.T @ v)
    return x_new, y - s * g_y, v_new, lam


CASES = [(gm, na, strategy)
         for na in ("RAD", "CG")
         for gm, strategies in ((("DM",), ("s1",)), (("DM", "NGD"), ("s1",)),
                                (("DM", "GDA", "NGD"), ("s1", "s2", "s3")))
         for strategy in strategies]


def _build(q, gm, na, strategy="s1", lower_iters=1, **options):
    extra = {"GDA": {"alpha_init": ALPHA_INIT, "alpha_decay": ALPHA_DECAY}} if "GDA" in gm else {}
    extra.update(options)
    return q.build(list(gm), [na], lower_iters=lower_iters,
                   ul_opt=lambda ps: jt.optim.SGD(ps, lr=UL_LR0),
                   DM=dict(DM_OPTIONS, strategy=strategy), track_losses=False, **extra)


@pytest.mark.parametrize("gm,na,strategy", CASES,
                         ids=["+".join(gm) + "-" + na + "-" + st for gm, na, st in CASES])
def test_iterations_match_update_equations(gm, na, strategy):
    q = Quadratic()
    problem = _build(q, gm, na, strategy)
    assert problem._ul_solver is None and not problem._copy_last_param
    dm = problem._ll_solver.gradient_instances[-1]
    assert isinstance(dm, DM)
    x, y, v = q.x0.copy(), q.y0.copy(), np.zeros(q.m)
    for k in range(FIRST_ITER, FIRST_ITER + 3):   # v = 0 at first; later calls use v_k
        x_new, y_new, v_new, lam = reference_step(q, x, y, v, k, ngd="NGD" in gm,
                                                  gda="GDA" in gm, line_search=na == "CG",
                                                  strategy=strategy)
        problem.run_iter(q.ll_feed(), q.ul_feed(), k)
        x_obs, y_obs = q.upper.value.numpy(), q.lower.value.numpy()
        v_obs = dm.auxiliary_v[0].numpy()
        assert rel_err(y_obs - y, y_new - y) < 1e-4
        assert rel_err(v_obs - v, v_new - v) < 1e-4
        if k > FIRST_ITER or "GDA" in gm:          # without GDA the first x-step is λμx
            assert rel_err(x_obs - x, x_new - x) < 1e-3
        assert rel_err(x_obs, x_new) < 1e-5
        assert problem._upper_opt.param_groups[0]["lr"] == pytest.approx(lam, rel=1e-12)
        x, y, v = x_new, y_new, v_new
    # DM reads y_K only: the inner loop keeps no differentiable history of the K steps
    assert not problem._plan.record and not problem._track_opt_traj
    assert np.abs(v).sum() > 1e-3                  # the multiplier entered the x-steps


def test_schedule_function():
    # GDA, s2: α = μ0 (k+1)^{-1/p}, η = (k+1)^{-τ/2} α s, λ = (k+1)^{-3τ/2} α⁵ s
    sched = dm_schedule(3, 0.1, 5.0, 2.0, 0.5, 2.0, 0.8, "s2", True)
    alpha = 0.8 * 4 ** -0.5
    assert sched.alpha == pytest.approx(alpha)
    assert sched.eta == pytest.approx(4 ** -0.25 * alpha * 0.1)
    assert sched.lam == pytest.approx(4 ** -0.75 * alpha ** 5 * 0.1)
    sched = dm_schedule(3, 0.1, 5.0, 2.0, 0.5, 2.0, 0.8, "s1", False)
    assert sched.alpha is None
    assert sched.eta == pytest.approx(2.0 * 4 ** -0.25 * 0.1)
    assert sched.lam == pytest.approx(5.0 * 4 ** -0.5 * 0.1)


def test_strategy_is_reread_at_every_call():
    q = Quadratic()
    problem = _build(q, ("DM", "GDA", "NGD"), "RAD", "s1")
    problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    problem._ll_solver.gradient_instances[-1].strategy = "s3"
    problem.run_iter(q.ll_feed(), q.ul_feed(), 1)
    alpha = DM_OPTIONS["mu0"] * 2 ** (-1 / DM_OPTIONS["p"])
    expected = 2 ** (-1.5 * DM_OPTIONS["tau"]) * alpha ** 3 * q.lr
    assert problem._upper_opt.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12)
    problem._ll_solver.gradient_instances[-1].strategy = "s4"
    with pytest.raises(ConfigError, match="s1, s2, s3"):
        problem.run_iter(q.ll_feed(), q.ul_feed(), 2)


def test_strategy_other_than_s1_needs_gda():
    q = Quadratic()
    problem = _build(q, ("DM", "NGD"), "RAD", "s1")
    problem._ll_solver.gradient_instances[-1].strategy = "s2"
    x0 = q.upper.value.numpy().copy()
    with pytest.raises(ConfigError, match="strategy: s1"):
        problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    np.testing.assert_array_equal(q.upper.value.numpy(), x0)   # nothing was stepped


def test_strategy_is_checked_when_used_not_at_build():
    """Upstream's L2 script: the config says s3 without GDA, the script sets s1 on
    the instance before the first run_iter. That works; keeping s3 fails at the first
    step, with the fix in the message."""
    q = Quadratic()
    problem = _build(q, ("DM", "NGD"), "RAD", "s3")
    problem._ll_solver.gradient_instances[-1].strategy = "s1"
    x, y, v = q.x0.copy(), q.y0.copy(), np.zeros(q.m)
    x_new, y_new, _, lam = reference_step(q, x, y, v, 0, ngd=True, gda=False,
                                          line_search=False, strategy="s1")
    problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    assert rel_err(q.lower.value.numpy(), y_new) < 1e-5
    assert rel_err(q.upper.value.numpy(), x_new) < 1e-5
    assert problem._upper_opt.param_groups[0]["lr"] == pytest.approx(lam, rel=1e-12)

    q = Quadratic()
    problem = _build(q, ("DM", "NGD"), "RAD", "s3")
    with pytest.raises(ConfigError, match=r"strategy 's3'.*strategy: s1.*strategy = 's1'"):
        problem.run_iter(q.ll_feed(), q.ul_feed(), 0)


LONG_CASES = [(("DM", "NGD"), "RAD", "s1", 5), (("DM", "GDA", "NGD"), "CG", "s3", 3)]


@pytest.mark.parametrize("gm,na,strategy,K", LONG_CASES,
                         ids=["+".join(c[0]) + "-" + c[1] + "-K" + str(c[3]) for c in LONG_CASES])
def test_lower_iters_above_one_runs_k_steps_then_dm(gm, na, strategy, K, caplog):
    """lower_iters K > 1 (upstream JBOAT's L2 config has 5): K plain LL steps on the
    fast weights, then DM's update with every derivative at y_K, applied to the real
    y, v and x (float64 oracle); one warning names the method's setting."""
    q = Quadratic()
    with caplog.at_level("WARNING", logger="jboat"):
        problem = _build(q, gm, na, strategy, lower_iters=K)
    warnings = [r for r in caplog.records if "lower_iters: 1" in r.getMessage()]
    assert len(warnings) == 1 and f"lower_iters: {K}" in warnings[0].getMessage()
    dm = problem._ll_solver.gradient_instances[-1]
    x, y, v = q.x0.copy(), q.y0.copy(), np.zeros(q.m)
    for k in range(FIRST_ITER, FIRST_ITER + 2):
        x_new, y_new, v_new, lam = reference_step(q, x, y, v, k, ngd=True, gda="GDA" in gm,
                                                  line_search=na == "CG", strategy=strategy,
                                                  steps=K)
        one_step = reference_step(q, x, y, v, k, ngd=True, gda="GDA" in gm,
                                  line_search=na == "CG", strategy=strategy, steps=1)
        assert rel_err(y_new, one_step[1]) > 1e-3    # K steps differ from one here
        problem.run_iter(q.ll_feed(), q.ul_feed(), k)
        x_obs, y_obs = q.upper.value.numpy(), q.lower.value.numpy()
        assert rel_err(y_obs - y, y_new - y) < 1e-4
        assert rel_err(dm.auxiliary_v[0].numpy() - v, v_new - v) < 1e-4
        assert rel_err(x_obs - x, x_new - x) < 1e-3
        assert problem._upper_opt.param_groups[0]["lr"] == pytest.approx(lam, rel=1e-12)
        x, y, v = x_new, y_new, v_new
    # DM reads y_K only: the inner loop keeps no differentiable history of the K steps
    assert not problem._plan.record and not problem._track_opt_traj


def test_return_grad_gives_the_dm_upper_gradient():
    q = Quadratic()
    problem = _build(q, ("DM",), "RAD", return_grad=True)
    problem.run_iter(q.ll_feed(), q.ul_feed(), 0)        # v_1 != 0, x unchanged
    v1 = problem._ll_solver.gradient_instances[-1].auxiliary_v[0].numpy()
    grads, _ = problem.run_iter(q.ll_feed(), q.ul_feed(), 1)
    expected = q.mu * q.x0 + q.B.T @ v1                   # ∇_x F − ∇²_xy f v
    assert rel_err(grads[0].numpy(), expected) < 1e-5
    np.testing.assert_allclose(q.upper.value.numpy(), q.x0, rtol=1e-6)


def test_invalid_combinations_are_refused():
    q = Quadratic()
    with pytest.raises(ConfigError, match="DI"):
        q.build(["DI", "DM", "NGD"], ["RAD"], lower_iters=1)
    for na in (["FD"], ["RAD", "PTT"], ["IAD", "CG"], ["NS"]):
        with pytest.raises(ConfigError, match=r"exactly \[RAD\].*\[CG\]"):
            DM.check_combination({"na_op": na, "gm_op": ["DM"], "lower_iters": 1})
    DM.check_combination({"na_op": ["CG"], "gm_op": ["DM"], "lower_iters": 1,
                          "DM": {"strategy": "s1"}})


def test_state_dict_round_trip_restores_the_multiplier():
    q = Quadratic()
    problem = _build(q, ("DM", "NGD"), "RAD")
    problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    state = problem.state_dict()
    problem.run_iter(q.ll_feed(), q.ul_feed(), 1)
    first = (q.upper.value.numpy(), problem._ll_solver.gradient_instances[-1]
             .auxiliary_v[0].numpy())
    problem.load_state_dict(state)
    problem.run_iter(q.ll_feed(), q.ul_feed(), 1)
    second = (q.upper.value.numpy(), problem._ll_solver.gradient_instances[-1]
              .auxiliary_v[0].numpy())
    for a, b in zip(first, second):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_nan_guard_rolls_back_the_dm_step():
    q = Quadratic()
    problem = _build(q, ("DM", "NGD"), "RAD", nan_guard=True)
    problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    dm = problem._ll_solver.gradient_instances[-1]
    before = (q.upper.value.numpy(), q.lower.value.numpy(), dm.auxiliary_v[0].numpy(),
              problem._upper_opt.param_groups[0]["lr"])
    bad = q.ll_feed()
    bad["A"] = bad["A"] * float("nan")
    with pytest.raises(FloatingPointError):
        problem.run_iter(bad, q.ul_feed(), 1)
    after = (q.upper.value.numpy(), q.lower.value.numpy(), dm.auxiliary_v[0].numpy(),
             problem._upper_opt.param_groups[0]["lr"])
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
