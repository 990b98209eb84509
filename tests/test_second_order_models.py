"""Hyper-gradients through stock jt.nn conv nets equal float64 finite differences.

The models use stock layers only (Conv2d, BatchNorm2d in training mode, ReLU,
MaxPool2d, AvgPool2d, Linear). MaxPool2d's code op has no second derivative; these
hyper-gradients need it, so they are right only because jboat substitutes a
twice-differentiable pool while a second-order operator runs
(``test_maml_is_wrong_without_the_substitute`` shows the difference).

Oracle: the meta/hyper objective Φ evaluated by plain first-order code (K SGD
steps with ``jt.grad``, stock kernels) and differentiated by central differences
along random directions, all in float64.
"""

import os

import jittor as jt
import numpy as np
import pytest

import jboat
from jboat.higher_jit import monkeypatch
from jboat.higher_jit import second_order
from jboat.tools.second_order_audit import to_float64
from quadratic import rel_err

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LR = 0.1
EPS = 1e-7   # the ReLU/max-pool kinks lie close: keep the stencil inside one smooth piece
TOL = 1e-5


pytestmark = pytest.mark.usefixtures("float64")


def conv_net(seed=0):
    """1×8×8 → Conv 3×3 (2 ch) → BN → ReLU → MaxPool 2 → Conv 3×3 (3 ch) → AvgPool 2 → Linear."""
    jt.set_global_seed(seed)
    net = jt.nn.Sequential(
        jt.nn.Conv2d(1, 2, 3, padding=1), jt.nn.BatchNorm2d(2), jt.nn.ReLU(),
        jt.nn.MaxPool2d(2), jt.nn.Conv2d(2, 3, 3, padding=1), jt.nn.AvgPool2d(2),
        jt.nn.Flatten(), jt.nn.Linear(12, 3))
    net.train()
    return to_float64(net)


def batch(rng, n=4):
    return {"x": jt.array(rng.randn(n, 1, 8, 8)), "y": jt.array(rng.randint(0, 3, n).astype("int32"))}


def cross_entropy(feed, upper_model, lower_model, **kwargs):
    return jt.nn.cross_entropy_loss(lower_model(feed["x"], **kwargs), feed["y"])


def trainable_positions(module):
    return [i for i, p in enumerate(module.parameters()) if not p.is_stop_grad()]


def unrolled(module, start, ll_loss, K):
    """Fast weights after K plain SGD steps on ``ll_loss(fmodel, params)`` from
    ``start`` (first-order code only: each step's gradient is detached)."""
    fmodel = monkeypatch(module, copy_initial_weights=True, track_higher_grads=False)
    positions = trainable_positions(module)
    params = list(fmodel.parameters())
    for i, value in zip(positions, start):
        params[i] = value
    for _ in range(K):
        trainable = [params[i] for i in positions]
        grads = jt.grad(ll_loss(fmodel, params), trainable)
        for i, g in zip(positions, grads):
            params[i] = (params[i] - LR * g).detach()
    return fmodel, params


def directional_fd(objective, point, directions):
    """Central differences of ``objective(list of arrays)`` along each direction."""
    out = []
    for v in directions:
        plus = objective([p + EPS * d for p, d in zip(point, v)])
        minus = objective([p - EPS * d for p, d in zip(point, v)])
        out.append((plus - minus) / (2 * EPS))
    return np.array(out)


def directional(grads, directions):
    return np.array([sum(float(np.sum(g * d)) for g, d in zip(grads, v)) for v in directions])


def random_directions(rng, point, n=2):
    return [[rng.randn(*np.shape(p)) for p in point] for _ in range(n)]


def along_random_directions(objective, point, grads, seed):
    """``(got, expected)``: ``grads`` and central differences of ``objective`` at
    ``point``, both projected on two random directions."""
    directions = random_directions(np.random.RandomState(seed), point)
    return directional(grads, directions), directional_fd(objective, point, directions)


def solver_config(recipe, **runtime):
    cfg = jboat.load_config(os.path.join(ROOT, "configs", recipe))
    cfg.update(runtime)
    cfg["return_grad"] = True
    return cfg


# -- MAML (IAD) ---------------------------------------------------------------------------------
def maml_setup(K, seed=0):
    rng = np.random.RandomState(seed)
    net = conv_net(seed)
    tasks = [(batch(rng), batch(rng)) for _ in range(2)]
    params = list(net.parameters())
    cfg = solver_config("maml.yaml", lower_iters=K, lower_level_model=net,
                        upper_level_model=net, lower_level_var=params, upper_level_var=params,
                        lower_level_opt=jt.optim.SGD(params, lr=LR),
                        upper_level_opt=jt.optim.Adam(params, lr=1e-3))
    problem = jboat.Problem(cfg, {"lower_level_loss": cross_entropy,
                                  "upper_level_loss": cross_entropy})
    problem.build_ll_solver().build_ul_solver()
    return net, tasks, problem


def maml_objective(net, tasks, K):
    def objective(theta):
        total = 0.0
        for support, query in tasks:
            start = [jt.array(t) for t in theta]
            fmodel, params = unrolled(
                net, start, lambda fm, p: cross_entropy(support, None, fm, params=p), K)
            total += float(cross_entropy(query, None, fmodel, params=params).numpy().reshape(-1)[0])
        return total
    return objective


def maml_meta_gradient(net, tasks, problem):
    grads, _ = problem.run_iter([s for s, _ in tasks], [q for _, q in tasks], 0)
    return [g.numpy() for g in grads]


@pytest.mark.parametrize("K", [1, 3])
def test_maml_meta_gradient_through_conv_bn_pools(K):
    net, tasks, problem = maml_setup(K)
    buffers_before = [p.numpy().copy() for p in net.parameters() if p.is_stop_grad()]
    grads = maml_meta_gradient(net, tasks, problem)
    positions = trainable_positions(net)
    theta = [list(net.parameters())[i].numpy() for i in positions]
    got, expected = along_random_directions(maml_objective(net, tasks, K), theta,
                                            [grads[i] for i in positions], seed=1)
    assert rel_err(got, expected) < TOL, (got, expected)
    # BatchNorm: the inner loop used batch statistics; the running statistics of the
    # real module are untouched, and their entries of the returned gradient are zero
    buffers = [p for p in net.parameters() if p.is_stop_grad()]
    assert len(buffers) == 2
    for before, after in zip(buffers_before, buffers):
        np.testing.assert_array_equal(before, after.numpy())
    for i, p in enumerate(net.parameters()):
        if p.is_stop_grad():
            assert not np.any(grads[i]) and grads[i].shape == tuple(p.shape)


def test_maml_is_wrong_without_the_substitute(monkeypatch):
    # the same check with jboat's substitutes switched off: stock MaxPool2d has no
    # second derivative and the meta-gradient is far off
    monkeypatch.setattr(second_order, "_substitutes", lambda: [])
    net, tasks, problem = maml_setup(1)
    grads = maml_meta_gradient(net, tasks, problem)
    positions = trainable_positions(net)
    theta = [list(net.parameters())[i].numpy() for i in positions]
    got, expected = along_random_directions(maml_objective(net, tasks, 1), theta,
                                            [grads[i] for i in positions], seed=1)
    assert rel_err(got, expected) > 1e-2


# -- RAD: per-tensor L2 strengths of a conv LL model --------------------------------------------
class Strengths(jt.Module):
    def __init__(self, n):
        self.log_lam = jt.array(np.random.RandomState(5).randn(n) * 0.3 - 1.0)

    def execute(self):
        return self.log_lam


def test_rad_hypergradient_of_l2_strengths_through_a_conv_net():
    K = 2
    rng = np.random.RandomState(2)
    net = conv_net(1)
    positions = trainable_positions(net)
    strengths = Strengths(len(positions))
    train, val = batch(rng, 6), batch(rng, 6)

    def penalised(feed, upper_model, lower_model, **kwargs):
        params = kwargs.get("params")
        if params is None:
            params = list(lower_model.parameters())
        lam = upper_model().exp()
        penalty = sum((lam[j] * (params[i] * params[i]).sum() for j, i in enumerate(positions)),
                      jt.zeros(1, dtype="float64"))
        return cross_entropy(feed, upper_model, lower_model, **kwargs) + 0.5 * penalty

    params = list(net.parameters())
    cfg = solver_config("rhg.yaml", lower_iters=K, lower_level_model=net,
                        upper_level_model=strengths, lower_level_var=params,
                        upper_level_var=[strengths.log_lam],
                        lower_level_opt=jt.optim.SGD(params, lr=LR),
                        upper_level_opt=jt.optim.Adam([strengths.log_lam], lr=1e-2))
    problem = jboat.Problem(cfg, {"lower_level_loss": penalised,
                                  "upper_level_loss": cross_entropy})
    problem.build_ll_solver().build_ul_solver()
    start = [params[i].numpy() for i in positions]   # run_iter warm-starts the net at y_K
    grads, _ = problem.run_iter(train, val, 0)

    def objective(point):
        upper = Strengths(len(positions))
        upper.log_lam = jt.array(point[0])
        fmodel, weights = unrolled(
            net, [jt.array(s) for s in start],
            lambda fm, p: penalised(train, upper, fm, params=p), K)
        return float(cross_entropy(val, upper, fmodel, params=weights).numpy().reshape(-1)[0])

    point = [strengths.log_lam.numpy()]
    got, expected = along_random_directions(objective, point, [grads[0].numpy()], seed=3)
    assert rel_err(got, expected) < TOL, (got, expected)


# -- DARTS through a conv cell ----------------------------------------------------------------
OPERATIONS = ("conv_3x3", "max_pool_3x3", "avg_pool_3x3", "skip")


class Cell(jt.Module):
    """stem conv → Σ softmax(α)_o · o(z) over OPERATIONS → MaxPool 2 → Linear."""

    def __init__(self):
        self.stem = jt.nn.Conv2d(1, 2, 3, padding=1)
        self.conv = jt.nn.Conv2d(2, 2, 3, padding=1)
        self.max_pool = jt.nn.MaxPool2d(3, 1, 1)
        self.avg_pool = jt.nn.AvgPool2d(3, 1, 1)
        self.reduce = jt.nn.MaxPool2d(2)
        self.head = jt.nn.Linear(32, 3)

    def execute(self, x, alphas):
        z = jt.nn.relu(self.stem(x))
        w = jt.nn.softmax(alphas, dim=0)
        mixed = (w[0] * self.conv(z) + w[1] * self.max_pool(z) + w[2] * self.avg_pool(z)
                 + w[3] * z)
        return self.head(self.reduce(mixed).reshape((x.shape[0], -1)))


class Architecture(jt.Module):
    def __init__(self):
        self.alphas = jt.array(np.random.RandomState(7).randn(len(OPERATIONS)) * 0.5)

    def execute(self):
        return self.alphas


def darts_loss(feed, upper_model, lower_model, **kwargs):
    return jt.nn.cross_entropy_loss(lower_model(feed["x"], upper_model(), **kwargs), feed["y"])


def test_darts_exact_second_order_hypergradient_through_a_conv_cell():
    # DARTS' second-order hyper-gradient, exactly: one unrolled step, differentiated
    # by RAD (configs/darts.yaml approximates the same quantity with FD)
    rng = np.random.RandomState(4)
    jt.set_global_seed(3)
    cell = to_float64(Cell())
    arch = to_float64(Architecture())
    train, val = batch(rng, 4), batch(rng, 4)
    params = list(cell.parameters())
    cfg = solver_config("darts.yaml", na_op=["RAD"], lower_level_model=cell,
                        upper_level_model=arch, lower_level_var=params,
                        upper_level_var=[arch.alphas],
                        lower_level_opt=jt.optim.SGD(params, lr=LR),
                        upper_level_opt=jt.optim.Adam([arch.alphas], lr=1e-2))
    cfg.pop("FD")
    problem = jboat.Problem(cfg, {"lower_level_loss": darts_loss, "upper_level_loss": darts_loss})
    problem.build_ll_solver().build_ul_solver()
    start = [p.numpy() for p in params]
    grads, _ = problem.run_iter(train, val, 0)

    def objective(point):
        upper = Architecture()
        upper.alphas = jt.array(point[0])
        fmodel, weights = unrolled(cell, [jt.array(s) for s in start],
                                   lambda fm, p: darts_loss(train, upper, fm, params=p), 1)
        return float(darts_loss(val, upper, fmodel, params=weights).numpy().reshape(-1)[0])

    point = [arch.alphas.numpy()]
    got, expected = along_random_directions(objective, point, [grads[0].numpy()], seed=5)
    assert rel_err(got, expected) < TOL, (got, expected)
