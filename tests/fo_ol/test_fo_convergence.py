"""Each FO operator drives the upper variable to the bilevel optimum of the closed-form
quadratic problem, or to the biased point it provably converges to (computed here).

Problem: tests/quadratic.py with μ = 1 (the UL Hessian's eigenvalues are 1.0, 1.02,
3.9, so a few hundred UL steps suffice); plain SGD at both levels; relative
distances ``||x − x_ref|| / ||x_ref||``. Options not listed take their declared
defaults; the listed ones are problem-scale step sizes or the method's accuracy
knob, with the reason next to them.
"""

import jittor as jt
import numpy as np

from fo_reference import (build, feeds, gaffo_fixed_point, penalty_point, square_quadratic,
                          vso_fixed_point)
from quadratic import Quadratic, rel_err

ITERS = 300


def sgd(lr):
    return lambda params: jt.optim.SGD(params, lr=lr)


def run(problem, q, iters=ITERS, offset=0.0, schedule=None):
    ll, ul = feeds(q, offset)
    for k in range(iters):
        if schedule is not None:
            schedule(problem, k)
        problem.run_iter(ll, ul, k)
    return q.upper.value.numpy().astype(float), q.lower.value.numpy().astype(float)


def build_fo(q, fo_op, ul_lr, lower_iters=5, **options):
    return build(q, fo_op, lower_iters=lower_iters, ul_opt=sgd(ul_lr), nan_guard=False,
                 **options)


def test_pgdo_converges_to_its_penalty_point_near_the_optimum():
    # γ ramps 0 → gamma_max = 20 over 100 calls and stays there: PGDO's limit is the
    # minimiser of F + 20·(f − min f), 2.8% from x* (O(1/γ) bias, Shen & Chen).
    q = Quadratic(mu=1.0, lr=0.2)
    x_gamma = penalty_point(q, 20.0)
    assert 0.02 < rel_err(x_gamma, q.optimum()) < 0.03
    problem = build_fo(q, "PGDO", ul_lr=1.0, PGDO={"gamma_max": 20.0})
    x, _ = run(problem, q)
    assert rel_err(x, x_gamma) < 1e-2
    assert rel_err(x, q.optimum()) < 5e-2


def test_meso_converges_near_the_optimum():
    # c_k = c0 (k+1)^(1/4) weights LL feasibility against F: the bias is O(1/c_k), so
    # c0 = 20 (upstream's 0.2 leaves a bias of order one after 300 steps). The UL
    # gradient of F is scaled by 1/c_k, hence the large UL step.
    q = Quadratic(mu=1.0)
    problem = build_fo(q, "MESO", ul_lr=2.0, MESO={"c0": 20.0})
    x, _ = run(problem, q)
    assert rel_err(x, q.optimum()) < 2e-2


def test_vfo_converges_near_the_optimum_with_decaying_steps():
    # With constant steps BOME's iterates settle on a 2-cycle whose size scales with the
    # step sizes (the multiplier grows like |∇F|/|∇_y f| near y*(x), making the y-step
    # stiff); the method is proved to reach an ε-KKT point. Steps decaying like
    # 1/(1 + k/200) shrink the cycle. ŷ takes K = 10 steps of 0.4 (< 2/λ_max(A)).
    q = Quadratic(mu=1.0, lr=0.05)
    problem = build_fo(q, "VFO", ul_lr=0.1, lower_iters=10, VFO={"y_hat_lr": 0.4})
    ul_opt, ll_opt = problem._upper_opt, problem._lower_opt

    def decay(_, k):
        ul_opt.lr = 0.1 / (1.0 + k / 200.0)
        ll_opt.lr = 0.05 / (1.0 + k / 200.0)

    x, _ = run(problem, q, schedule=decay)
    assert rel_err(x, q.optimum()) < 5e-2


def test_vso_converges_to_its_barrier_fixed_point_near_the_optimum():
    # For fixed coefficients (reg_decay = 0) VSO is a penalty method with weight
    # ρ = μ_b/V ≈ 200/10 on f(x,y) − f(x,z); its limit (computed in closed form for
    # fixed ρ, iterated on ρ) is 2.8% from x*. The LL loss is shifted by +10 so that the
    # barrier's V is positive; z_lr·ρ·λ_max(A) < 2 keeps the y-loop stable.
    q = Quadratic(mu=1.0)
    opts = {"z_loop": 20, "z_lr": 0.01, "ll_l2_reg": 0.0, "ul_l2_reg": 0.0,
            "ul_ln_reg": 200.0, "reg_decay": 0.0}
    offset, K = 10.0, 20
    x_bar = vso_fixed_point(q, opts, K, offset)
    assert 0.02 < rel_err(x_bar, q.optimum()) < 0.035
    problem = build_fo(q, "VSO", ul_lr=0.1, lower_iters=K, VSO=opts)
    x, _ = run(problem, q, offset=offset)
    assert rel_err(x, x_bar) < 1e-4
    assert rel_err(x, q.optimum()) < 5e-2


def test_alto_converges_to_its_own_fixed_point_not_the_optimum():
    # ALTO's UL step uses only ∂_x F = μx: it ignores how y*(x) moves, so it converges
    # to x = 0, y = y*(0) = 0, while x* ≠ 0 (ALTO is not a consistent bilevel method).
    q = Quadratic(mu=1.0)
    problem = build_fo(q, "ALTO", ul_lr=0.5)
    x, y = run(problem, q)
    assert np.abs(x).max() < 1e-5 and np.abs(y).max() < 1e-4
    assert rel_err(x, q.optimum()) > 0.99


def test_gaffo_converges_to_its_gap_fixed_point():
    # x and y share a shape (4 = 4). With sync, y = Sx, S = I − s(A − B), and the UL
    # direction is linear: a(x) = Cᵀ(CSx − t)/λ − σA(ASx − Bx); its zero x̄ is GAFFO's
    # limit (every eigenvalue of a's Jacobian has a positive real part, so SGD with a
    # small step converges). GAFFO ignores ∂_x F and the bilevel coupling: x̄ is far
    # from this problem's x* (relative distance ≈ 2.3).
    q = square_quadratic(mu=1.0)
    opts = {"lambda": 1.0, "sigma": 0.01}
    x_bar, G = gaffo_fixed_point(q, opts, q.lr)
    assert np.linalg.eigvals(G).real.min() > 0.5
    assert rel_err(x_bar, q.optimum()) > 1.0
    problem = build_fo(q, "GAFFO", ul_lr=0.15)
    x, _ = run(problem, q)
    assert rel_err(x, x_bar) < 1e-5
