"""Checkpointed reverse mode equals plain unrolled reverse mode (and the closed form)."""

# Python scalars (step sizes) enter Jittor graphs as float32 constants, so float64
# results match the float64 closed forms to about 1e-8, not to machine precision.

import jittor as jt
import numpy as np
import pytest

from jboat.higher_jit.optim import DifferentiableAdam, DifferentiableSGD
from jboat.utils import checkpoint as ck
from quadratic import Quadratic, initial_point_gradient, rel_err

K = 10
INTERVALS = [1, 3, K]


@pytest.fixture(autouse=True)
def float64():
    previous = jt.flags.auto_convert_64_to_32
    jt.flags.auto_convert_64_to_32 = 0
    yield
    jt.sync_all()
    jt.gc()
    jt.flags.auto_convert_64_to_32 = previous


def var(a):
    return jt.array(np.asarray(a, dtype=np.float64))


def plain_grads(step, s0, hyper, terminal, stop):
    """Reference: jt.grad through the whole unrolled graph."""
    state = list(s0)
    for j in range(stop):
        state = step(state, j)
    grads = jt.grad(terminal(state), list(hyper) + list(s0))
    return [g.numpy() for g in grads[:len(hyper)]], [g.numpy() for g in grads[len(hyper):]]


def assert_close(got, expected, tol=1e-5):
    for g, e in zip(got, expected):
        assert rel_err(g.numpy() if isinstance(g, jt.Var) else g, e) < tol


# -- the quadratic: y_{j+1} = y_j - s (A y_j - B x), F = ½‖Cy - t‖² + ½μ‖x‖² ----------------


def quadratic_setup(q):
    x = var(q.x0)
    A, B, C, t = var(q.A), var(q.B), var(q.C), var(q.t)

    def ll_loss(params, j):
        y = params[0]
        return 0.5 * (y * jt.matmul(A, y)).sum() - (y * jt.matmul(B, x)).sum()

    def terminal(state):
        r = jt.matmul(C, state[0]) - t
        return 0.5 * (r * r).sum() + 0.5 * q.mu * (x * x).sum()

    step = ck.make_step(ll_loss, ck.sgd(q.lr), 1)
    return x, step, terminal


@pytest.mark.parametrize("every", INTERVALS + ["auto"])
def test_quadratic_equals_plain_and_closed_form(every):
    q = Quadratic()
    x, step, terminal = quadratic_setup(q)
    s0 = [var(q.y0)]
    gx, gs0, traj = ck.checkpointed_grad(step, s0, [x], K, terminal, every=every)
    px, ps0 = plain_grads(step, s0, [x], terminal, K)
    assert_close(gx, px)
    assert_close(gs0, ps0)
    assert rel_err(gx[0].numpy(), q.unrolled_hypergradient(q.x0, q.y0, K)) < 1e-6
    assert rel_err(gs0[0].numpy(), initial_point_gradient(q, q.x0, q.y0, K)) < 1e-6
    c = ck.checkpoint_interval(K, every)
    assert sorted(traj.checkpoints) == list(range(0, K, c))
    # the forward pass reached y_K
    assert rel_err(traj.final[0].numpy(), q.trajectory(q.x0, q.y0, K)[-1]) < 1e-6


@pytest.mark.parametrize("every", INTERVALS)
def test_ptt_selected_step(every):
    """PTT: the step k* = 1 + argmax_j F(y_j) is chosen after the forward pass."""
    q = Quadratic()
    x, step, terminal = quadratic_setup(q)
    s0 = [var(q.y0)]
    gx, _, traj = ck.checkpointed_grad(
        step, s0, [x], K, terminal, every=every,
        monitor=lambda state, j: float(terminal(state).item()),
        select=lambda tr: 1 + int(np.argmax(tr.monitored)))
    ys = q.trajectory(q.x0, q.y0, K)
    k_star = 1 + int(np.argmax([q.F(q.x0, y) for y in ys[1:]]))
    assert len(traj.monitored) == K
    px, _ = plain_grads(step, s0, [x], terminal, k_star)
    assert_close(gx, px)
    assert rel_err(gx[0].numpy(), q.unrolled_hypergradient(q.x0, q.y0, K, select=k_star)) < 1e-6


@pytest.mark.parametrize("stop", [0, 1, 4, 7, 9])
def test_any_stop_inside_segments(stop):
    q = Quadratic()
    x, step, terminal = quadratic_setup(q)
    s0 = [var(q.y0)]
    traj = ck.run_checkpointed(step, s0, K, every=3)
    gx, gs0 = ck.reverse_checkpointed(step, traj, [x], terminal, stop=stop)
    assert rel_err(gx[0].numpy(), q.unrolled_hypergradient(q.x0, q.y0, K, select=stop)) < 1e-6
    expected_s0 = np.linalg.matrix_power(q.M(), stop).T @ q.dF_dy(q.trajectory(q.x0, q.y0, K)[stop])
    assert rel_err(gs0[0].numpy(), expected_s0) < 1e-6


def test_cotangent_equals_terminal():
    q = Quadratic()
    x, step, terminal = quadratic_setup(q)
    s0 = [var(q.y0)]
    traj = ck.run_checkpointed(step, s0, K, every=3)
    cot = [var(q.dF_dy(traj.final[0].numpy()))]
    gx, _ = ck.reverse_checkpointed(step, traj, [x], cotangent=cot)
    # without the direct μx term of F
    expected = q.unrolled_hypergradient(q.x0, q.y0, K) - q.mu * q.x0
    assert rel_err(gx[0].numpy(), expected) < 1e-6


def test_bad_arguments_raise():
    q = Quadratic()
    x, step, terminal = quadratic_setup(q)
    traj = ck.run_checkpointed(step, [var(q.y0)], 3, every=2)
    with pytest.raises(ValueError, match="exactly one"):
        ck.reverse_checkpointed(step, traj, [x])
    with pytest.raises(ValueError, match="stop must be"):
        ck.reverse_checkpointed(step, traj, [x], terminal, stop=4)
    for bad in (0, -1, 2.5, True, "sqrt"):
        with pytest.raises(ValueError, match="positive int or 'auto'"):
            ck.checkpoint_interval(10, bad)
    assert ck.checkpoint_interval(1000) == 32
    assert ck.checkpoint_interval(0) == 1


# -- a small MLP: hyperparameters are per-weight log weight decays and an input scale ---------


def mlp_setup(optimizer, seed=0):
    rng = np.random.RandomState(seed)
    X, Xv = var(rng.randn(8, 3)), var(rng.randn(8, 3))
    T, Tv = var(rng.randn(8, 1)), var(rng.randn(8, 1))
    params = [var(rng.randn(3, 4) * 0.5), var(rng.randn(4) * 0.1), var(rng.randn(4, 1) * 0.5)]
    x = [var(rng.randn(3, 4) * 0.3 - 2.0), var(rng.randn(3) * 0.3)]

    def net(p, inputs):
        h = jt.tanh(jt.matmul(inputs * x[1], p[0]) + p[1])
        return jt.matmul(h, p[2])

    def ll_loss(p, j):
        r = net(p, X) - T
        return (r * r).mean() + 0.5 * (jt.exp(x[0]) * p[0] * p[0]).sum()

    def terminal(state):
        r = net(state[:3], Xv) - Tv
        return (r * r).mean()

    step = ck.make_step(ll_loss, optimizer, 3)
    s0 = params + optimizer.init(params)
    return x, s0, step, terminal


# Cold-cache cost: every distinct unrolled graph compiles new Jittor kernels, and Python
# scalars (step sizes, betas, Adam's bias corrections) are compiled into them as
# constants. So the MLP tests share these optimizer instances (the same constants, hence
# the same kernels for the plain reference gradients), and the momentum variants, whose
# state is carried through the checkpoints the way Adam's is, run at the interval with
# ragged segments (3 of K = 10: boundaries at 3, 6, 9) rather than at all three; SGD
# (no state) and Adam (two moment buffers and a step count) run at every interval.
SGD = ck.sgd(0.1)
MOMENTUM = ck.sgd(0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)
NESTEROV = ck.sgd(0.05, momentum=0.8, nesterov=True)
ADAM = ck.adam(0.02, betas=(0.8, 0.9), weight_decay=0.01)


@pytest.mark.parametrize("name,optimizer,every", [
    *[("sgd", SGD, every) for every in INTERVALS],
    ("momentum", MOMENTUM, 3),
    ("nesterov", NESTEROV, 3),
    *[("adam", ADAM, every) for every in INTERVALS],
])
def test_mlp_equals_plain(every, name, optimizer):
    x, s0, step, terminal = mlp_setup(optimizer)
    gx, gs0, _ = ck.checkpointed_grad(step, s0, x, K, terminal, every=every)
    px, ps0 = plain_grads(step, s0, x, terminal, K)
    assert_close(gx, px)
    assert_close(gs0[:3], ps0[:3])          # MAML: d/d(initial weights)
    assert max(np.abs(g).max() for g in px) > 1e-4     # a gradient that is not trivially 0


def test_mlp_ptt_with_adam():
    x, s0, step, terminal = mlp_setup(ADAM)
    for every in INTERVALS:
        gx, gs0, traj = ck.checkpointed_grad(
            step, s0, x, K, terminal, every=every,
            monitor=lambda state, j: float(terminal(state).item()),
            select=lambda tr: 1 + int(np.argmin(tr.monitored[:6])))
        k_star = 1 + int(np.argmin(traj.monitored[:6]))
        px, ps0 = plain_grads(step, s0, x, terminal, k_star)
        assert_close(gx, px)
        assert_close(gs0[:3], ps0[:3])


# -- the pure optimizers take jboat's differentiable optimizers' steps ---------------------------


def var32(a):
    return jt.array(np.asarray(a, dtype=np.float32))


class _Params(jt.Module):
    def __init__(self, values):
        self.w = var32(values[0])
        self.b = var32(values[1])


@pytest.mark.parametrize("kind", ["momentum", "nesterov", "adam"])
def test_pure_optimizers_equal_differentiable_twins(kind):
    # float32: after other float64 tests in the same process, Jittor 1.3.11 returned
    # zero float64 gradients of this loss here (a Jittor issue, see docs/checkpointing.md)
    rng = np.random.RandomState(1)
    values = [rng.randn(3, 2), rng.randn(2)]
    target = var32(rng.randn(3, 2))
    ref = list(_Params(values).parameters())
    if kind == "adam":
        settings = dict(lr=0.07, betas=(0.8, 0.95), eps=1e-8, weight_decay=0.01)
        real, pure = jt.optim.Adam(ref, **settings), ck.adam(**settings)
        twin = DifferentiableAdam(real, ref)
    else:
        settings = dict(lr=0.07, momentum=0.85, weight_decay=0.01, dampening=0.15,
                        nesterov=kind == "nesterov")
        if kind == "nesterov":
            settings["dampening"] = 0.0
        real, pure = jt.optim.SGD(ref, **settings), ck.sgd(**settings)
        twin = DifferentiableSGD(real, ref)

    def loss(p, j=0):
        r = p[0] - target
        return (r * r).sum() + (p[1] * p[1] * p[1]).sum()

    step = ck.make_step(loss, pure, 2)
    params = [var32(v) for v in values]
    state = params + pure.init(params)
    twin_params = [var32(v) for v in values]
    for j in range(3):
        state = step(state, j)
        twin_params = twin.step(loss(twin_params), params=twin_params)
        for a, b in zip(state[:2], twin_params):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
    # the parameters moved by more than the weight decay alone would move them
    assert np.abs(state[0].numpy() - values[0]).max() > 0.1


# -- replay="step": one single-step VJP per step ------------------------------------------------


@pytest.mark.parametrize("every", INTERVALS)
def test_step_replay_quadratic_any_stop(every):
    q = Quadratic()
    x, step, terminal = quadratic_setup(q)
    traj = ck.run_checkpointed(step, [var(q.y0)], K, every=every)
    for stop in (K, 7, 0):
        gx, gs0 = ck.reverse_checkpointed(step, traj, [x], terminal, stop=stop, replay="step")
        assert rel_err(gx[0].numpy(),
                       q.unrolled_hypergradient(q.x0, q.y0, K, select=stop)) < 1e-6
        expected_s0 = (np.linalg.matrix_power(q.M(), stop).T
                       @ q.dF_dy(q.trajectory(q.x0, q.y0, K)[stop]))
        assert rel_err(gs0[0].numpy(), expected_s0) < 1e-6
    with pytest.raises(ValueError, match="replay must be"):
        ck.reverse_checkpointed(step, traj, [x], terminal, replay="steps")


@pytest.mark.parametrize("every", INTERVALS)
@pytest.mark.parametrize("optimizer", [MOMENTUM, ADAM], ids=["momentum", "adam"])
def test_step_replay_mlp_equals_plain(every, optimizer):
    x, s0, step, terminal = mlp_setup(optimizer)
    gx, gs0, _ = ck.checkpointed_grad(step, s0, x, K, terminal, every=every, replay="step")
    px, ps0 = plain_grads(step, s0, x, terminal, K)
    assert_close(gx, px)
    assert_close(gs0[:3], ps0[:3])
