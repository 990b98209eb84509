"""The functional-patching shim: patching semantics and optimizer parity."""

import jittor as jt
import numpy as np
import pytest

from jboat import higher_jit
from jboat.utils import stop_grads


class Affine(jt.Module):
    """y = W x + b with a stop-grad buffer that must be carried through untouched."""

    def __init__(self, seed=0):
        rng = np.random.RandomState(seed)
        self.weight = jt.array(rng.randn(2, 3).astype(np.float32))
        self.bias = jt.array(rng.randn(2).astype(np.float32))
        self.scale = jt.array(np.float32([1.5])).stop_grad()
        self.tag = "affine"

    def execute(self, x):
        return (jt.matmul(x, self.weight.transpose(1, 0)) + self.bias) * self.scale


class Vec(jt.Module):
    def __init__(self, values, dtype=np.float32):
        self.v = jt.array(np.asarray(values, dtype=dtype))

    def execute(self):
        return self.v


def _data(seed=1):
    rng = np.random.RandomState(seed)
    return jt.array(rng.randn(5, 3).astype(np.float32)), jt.array(rng.randn(5, 2).astype(np.float32))


def _loss(out, target):
    d = out - target
    return (d * d).sum() + 0.1 * (d * d * d * d).sum()


def _snapshot(module):
    return [p.numpy().copy() for p in module.parameters()]


def test_real_parameters_untouched_and_attributes_fall_through():
    model = Affine()
    before = _snapshot(model)
    x, t = _data()
    opt = jt.optim.SGD(model.parameters(), lr=0.05)
    with higher_jit.innerloop_ctx(model, opt, copy_initial_weights=False) as (fmodel, diffopt):
        for _ in range(3):
            diffopt.step(_loss(fmodel(x), t))
        assert fmodel.tag is model.tag
        assert fmodel.weight is fmodel.parameters()[0]
        assert fmodel.history_length() == 4
    for b, p in zip(before, model.parameters()):
        np.testing.assert_array_equal(b, p.numpy())


def test_forward_with_params_is_side_effect_free():
    model = Affine()
    x, _ = _data()
    opt = jt.optim.SGD(model.parameters(), lr=0.05)
    with higher_jit.innerloop_ctx(model, opt) as (fmodel, _):
        other = [p * 2 if not p.is_stop_grad() else p for p in model.parameters()]
        out = fmodel(x, params=other)
        expected = (jt.matmul(x, other[0].transpose(1, 0)) + other[1]) * 1.5
        np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-6)
        assert fmodel.history_length() == 1
        np.testing.assert_allclose(fmodel(x).numpy(), model(x).numpy(), rtol=1e-6)


def _quadratic_ctx(track=True, s=0.2, x0=(1.0, -2.0, 0.5), y0=(0.0, 1.0, 3.0)):
    x = jt.array(np.float32(x0))
    model = Vec(y0)
    opt = jt.optim.SGD(model.parameters(), lr=s)
    return x, model, opt


@pytest.mark.parametrize("K", [1, 4])
def test_tracked_trajectory_history_and_derivatives(K):
    s = 0.2
    x, model, opt = _quadratic_ctx()
    with higher_jit.innerloop_ctx(model, opt, copy_initial_weights=False,
                                  track_higher_grads=True) as (fmodel, diffopt):
        for _ in range(K):
            y = fmodel()
            diffopt.step(0.5 * ((y - x) * (y - x)).sum())
        xs, y0 = x.numpy(), np.float32([0.0, 1.0, 3.0])
        for t in range(K + 1):
            expected = xs + (1 - s) ** t * (y0 - xs)
            np.testing.assert_allclose(fmodel.parameters(time=t)[0].numpy(), expected, rtol=1e-5)
        yK = fmodel.parameters()[0]
        gx, gy0 = jt.grad(yK.sum(), [x, fmodel.parameters(time=0)[0]])
        np.testing.assert_allclose(gx.numpy(), np.full(3, 1 - (1 - s) ** K), rtol=1e-5)
        np.testing.assert_allclose(gy0.numpy(), np.full(3, (1 - s) ** K), rtol=1e-5)
        # copy_initial_weights=False: the derivative reaches the real parameter
        g_real = jt.grad(yK.sum(), model.v)
        np.testing.assert_allclose(g_real.numpy(), np.full(3, (1 - s) ** K), rtol=1e-5)


def test_untracked_keeps_only_latest():
    x, model, opt = _quadratic_ctx()
    with higher_jit.innerloop_ctx(model, opt, track_higher_grads=False) as (fmodel, diffopt):
        for _ in range(3):
            y = fmodel()
            diffopt.step(0.5 * ((y - x) * (y - x)).sum())
        assert fmodel.history_length() == 1
        np.testing.assert_array_equal(fmodel.parameters(time=0)[0].numpy(),
                                      fmodel.parameters(time=-1)[0].numpy())
        with pytest.raises(ValueError, match="not tracking"):
            fmodel.parameters(time=1)
        gx = jt.grad(fmodel.parameters()[0].sum(), x)
        np.testing.assert_array_equal(gx.numpy(), np.zeros(3))


def test_stop_grads_callback_makes_steps_first_order():
    x, model, opt = _quadratic_ctx()
    with higher_jit.innerloop_ctx(model, opt, copy_initial_weights=False) as (fmodel, diffopt):
        for _ in range(3):
            y = fmodel()
            diffopt.step(0.5 * ((y - x) * (y - x)).sum(), grad_callback=stop_grads)
        yK = fmodel.parameters()[0]
        gx, gy0 = jt.grad(yK.sum(), [x, fmodel.parameters(time=0)[0]])
        np.testing.assert_array_equal(gx.numpy(), np.zeros(3))
        np.testing.assert_allclose(gy0.numpy(), np.ones(3), rtol=1e-6)


def test_initial_weights_are_snapshots():
    x, model, opt = _quadratic_ctx()
    with higher_jit.innerloop_ctx(model, opt, copy_initial_weights=False) as (fmodel, _):
        model.v.update(model.v * 10)
        np.testing.assert_allclose(fmodel.parameters(time=0)[0].numpy(), [0.0, 1.0, 3.0])


def test_patching_twice_and_unsupported_optimizer_raise():
    model = Affine()
    fmodel = higher_jit.monkeypatch(model)
    with pytest.raises(ValueError, match="already patched"):
        higher_jit.monkeypatch(fmodel)
    with pytest.raises(ValueError, match="not supported.*SGD"):
        higher_jit.get_diff_optim(jt.optim.Adan(model.parameters(), lr=0.1),
                                  model.parameters(), fmodel=fmodel)


def _groups(model, make, **kw):
    ps = [p for p in model.parameters() if not p.is_stop_grad()]
    return make([{"params": [ps[0]], "lr": 0.03}, {"params": [ps[1]], "lr": 0.07}], **kw)


OPTIMIZERS = {
    "sgd": lambda ps: jt.optim.SGD(ps, lr=0.05),
    "sgd_momentum_wd": lambda ps: jt.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01,
                                               dampening=0.1),
    "sgd_nesterov": lambda ps: jt.optim.SGD(ps, lr=0.05, momentum=0.8, nesterov=True),
    "sgd_groups": lambda ps: _groups(Affine(), lambda g, **k: jt.optim.SGD(g, lr=0.05, momentum=0.5)),
    "adam": lambda ps: jt.optim.Adam(ps, lr=0.02, weight_decay=0.01),
    "adamw": lambda ps: jt.optim.AdamW(ps, lr=0.02, weight_decay=0.1),
    "rmsprop": lambda ps: jt.optim.RMSprop(ps, lr=0.01, alpha=0.9),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_k_step_parity_with_real_optimizer(name):
    x, t = _data()
    real, twin = Affine(), Affine()
    if name == "sgd_groups":
        opt_real = _groups(real, lambda g, **k: jt.optim.SGD(g, lr=0.05, momentum=0.5))
        opt_twin = _groups(twin, lambda g, **k: jt.optim.SGD(g, lr=0.05, momentum=0.5))
    else:
        opt_real = OPTIMIZERS[name](real.parameters())
        opt_twin = OPTIMIZERS[name](twin.parameters())
    with higher_jit.innerloop_ctx(twin, opt_twin, track_higher_grads=False) as (fmodel, diffopt):
        for _ in range(4):
            opt_real.step(_loss(real(x), t))
            diffopt.step(_loss(fmodel(x), t))
        for p_real, p_fast in zip(real.parameters(), fmodel.parameters()):
            np.testing.assert_allclose(p_fast.numpy(), p_real.numpy(), rtol=2e-5, atol=2e-6)


def test_parameters_outside_groups_stay_fixed():
    model = Affine()
    x, t = _data()
    opt = jt.optim.SGD([model.weight], lr=0.1)
    with higher_jit.innerloop_ctx(model, opt) as (fmodel, diffopt):
        diffopt.step(_loss(fmodel(x), t))
        new = fmodel.parameters()
        np.testing.assert_array_equal(new[1].numpy(), model.bias.numpy())
        assert not np.allclose(new[0].numpy(), model.weight.numpy())


@pytest.mark.parametrize("name", ["sgd_momentum_wd", "adam"])
def test_meta_gradient_matches_finite_differences(name, float64):
    """d outer(y_K(x)) / dx through K unrolled steps vs central differences (float64)."""
    rng = np.random.RandomState(3)
    A = rng.randn(3, 3)
    A = A @ A.T / 3 + np.eye(3)
    x0 = rng.randn(3)
    target = rng.randn(3)
    make = {"sgd_momentum_wd": lambda ps: jt.optim.SGD(ps, lr=0.1, momentum=0.7, weight_decay=0.05),
            "adam": lambda ps: jt.optim.Adam(ps, lr=0.05)}[name]

    def outer(x_values, differentiable):
        x = jt.array(x_values)
        model = Vec(np.ones(3) * 0.3, dtype=np.float64)
        opt = make(model.parameters())
        with higher_jit.innerloop_ctx(model, opt, track_higher_grads=differentiable) as (fm, do):
            for _ in range(4):
                y = fm()
                inner = 0.5 * (y * jt.matmul(jt.array(A), y)).sum() - (y * x).sum() \
                    + 0.05 * (y * y * y * y).sum()
                do.step(inner)
            d = fm.parameters()[0] - jt.array(target)
            value = (d * d).sum()
            if not differentiable:
                return float(value.item())
            grad = jt.grad(value, x)
            assert grad.dtype == "float64"
            return grad.numpy()

    analytic = outer(x0, True)
    eps = 1e-5
    numeric = np.array([(outer(x0 + eps * e, False) - outer(x0 - eps * e, False)) / (2 * eps)
                        for e in np.eye(3)])
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)


def test_batchnorm_buffers_are_carried_through():
    model = jt.nn.Sequential(jt.nn.Linear(3, 4), jt.nn.BatchNorm1d(4), jt.nn.Linear(4, 2))
    model.eval()
    x, t = _data()
    opt = jt.optim.SGD(model.parameters(), lr=0.05)
    with higher_jit.innerloop_ctx(model, opt) as (fmodel, diffopt):
        new = diffopt.step(_loss(fmodel(x), t))
        for p, q in zip(model.parameters(), new):
            if p.is_stop_grad():
                assert q is p
        np.testing.assert_allclose(fmodel(x, params=list(model.parameters())).numpy(),
                                   model(x).numpy(), rtol=1e-5)
