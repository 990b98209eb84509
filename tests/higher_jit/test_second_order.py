"""Twice-differentiable layer substitutes: same values, switched on only where needed,
and BatchNorm buffers untouched by fast-weight forwards."""

import jittor as jt
import numpy as np
import pytest

from jboat import higher_jit
from jboat.higher_jit import second_order
from jboat.higher_jit.second_order import second_order_layers, substitutes_active
from quadratic import Quadratic

POOLS = [
    lambda: jt.nn.MaxPool2d(2),
    lambda: jt.nn.MaxPool2d(3, 1, 1),
    lambda: jt.nn.MaxPool2d(3, 2, 1, ceil_mode=True),
    lambda: jt.nn.AvgPool2d(3, 2, ceil_mode=True),
    lambda: jt.nn.AvgPool2d(3, 2, 1, ceil_mode=True),
    lambda: jt.nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
    lambda: jt.nn.Pool(2, op="minimum"),
]


@pytest.mark.parametrize("make", POOLS)
def test_pool_substitute_computes_the_code_ops_values(make):
    layer = make()
    x = jt.array(np.random.RandomState(0).randn(2, 2, 7, 7).astype(np.float32))
    stock = layer(x).numpy()
    before = second_order.substitutions()
    with second_order_layers():
        patched = layer(x).numpy()
    assert sum((second_order.substitutions() - before).values()) == 1
    np.testing.assert_allclose(patched, stock, rtol=1e-6, atol=1e-6)


def test_return_indices_keeps_the_code_ops_indices():
    layer = jt.nn.MaxPool2d(2, return_indices=True)
    x = jt.array(np.random.RandomState(1).randn(1, 2, 6, 6).astype(np.float32))
    values, indices = layer(x)
    with second_order_layers():
        values2, indices2 = layer(x)
    np.testing.assert_array_equal(values.numpy(), values2.numpy())
    np.testing.assert_array_equal(indices.numpy(), indices2.numpy())


def test_context_is_reentrant_and_restores_the_classes():
    original = jt.nn.Pool.__dict__["execute"]
    assert not substitutes_active()
    with second_order_layers():
        patched = jt.nn.Pool.__dict__["execute"]
        assert patched is not original and substitutes_active()
        with second_order_layers():
            assert jt.nn.Pool.__dict__["execute"] is patched
        assert substitutes_active()
    assert jt.nn.Pool.__dict__["execute"] is original and not substitutes_active()
    with pytest.raises(RuntimeError):
        with second_order_layers():
            raise RuntimeError("boom")
    assert jt.nn.Pool.__dict__["execute"] is original
    with second_order_layers(False):
        assert not substitutes_active()


# (HVPs with and without the substitutes: tests/test_second_order_audit.py)

def _fired_names(layer, x):
    before = second_order.substitutions()
    with second_order_layers():
        layer(x)
    return set(second_order.substitutions() - before)


def test_max_min_pools_keep_the_kernel_and_only_ceil_mean_uses_reindex():
    x = jt.array(np.random.RandomState(2).randn(1, 1, 7, 7).astype(np.float32))
    for layer in (jt.nn.MaxPool2d(2), jt.nn.Pool(2, op="minimum"), jt.nn.MaxPool2d((2, 3)),
                  jt.nn.MaxPool2d(3, 1, 1), jt.nn.MaxPool2d(2, 2, 1),
                  jt.nn.MaxPool2d(3, 2, ceil_mode=True), jt.nn.MaxPool2d(2, return_indices=True)):
        fired = _fired_names(layer, x)
        assert len(fired) == 1 and "arg-extremum" in fired.pop(), layer
    fired = _fired_names(jt.nn.AvgPool2d(3, 2, ceil_mode=True), x)
    assert len(fired) == 1 and "reindex + sum" in fired.pop()


def _tied_input(rng, shape=(2, 3, 9, 9)):
    """Ties of every kind: integer values (ties inside windows), a constant block (a
    blank background), ReLU zeros (a third of the entries)."""
    x = np.round(rng.randn(*shape) * 1.5)
    x[:, :, :4, :4] = 2.0
    x[:, 1] = np.maximum(x[:, 1], 0.0)
    return x


# (op, kernel, stride, padding, ceil_mode): stride 1 (stacked) and 2 with padding (DARTS),
# max and min, tiling windows with a ragged edge, ceil mode
WINDOWS = [("maximum", 3, 1, 1, False), ("maximum", 3, 2, 1, False),
           ("minimum", 3, 1, 1, False), ("minimum", 3, 2, 1, False),
           ("maximum", 2, 2, 0, False), ("maximum", 3, 2, 0, True)]


@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: "{}-k{}s{}p{}{}".format(
    w[0][:3], *w[1:4], "c" if w[4] else ""))
def test_pool_substitute_gradient_equals_the_kernels_on_ties(window):
    """Stacked pools over tied inputs: the substitute's first derivative is the stock
    kernel's, bit for bit (one position per window gets the gradient, the first in scan
    order), never one copy per tied position."""
    op, kernel, stride, padding, ceil = window
    layer = jt.nn.Pool(kernel, stride, padding, ceil_mode=ceil, op=op)
    rng = np.random.RandomState(3)
    x = jt.array(_tied_input(rng).astype(np.float32))

    def objective(z):
        out = layer(layer(z)) if stride == 1 else layer(z)
        return (out * weights).sum()

    shape = (layer(layer(x)) if stride == 1 else layer(x)).shape
    weights = jt.array(rng.randn(*shape).astype(np.float32))
    stock = jt.grad(objective(x), x).numpy()
    with second_order_layers():
        patched = jt.grad(objective(x), x).numpy()
    np.testing.assert_array_equal(patched, stock)
    # the gradient's total is the weights' total: each output passes its weight on once
    np.testing.assert_allclose(patched.sum(), weights.numpy().sum(), rtol=1e-4)


@pytest.mark.parametrize("window", WINDOWS + [("maximum", (2, 3), (1, 2), (1, 0), False)],
                         ids=lambda w: "k{}s{}p{}{}".format(*w[1:4], "c" if w[4] else ""))
def test_index_only_kernel_equals_jittors_return_indices_kernel(window):
    """The CPU substitute finds the arg-max positions with an index-only code op (no
    values output kept alive); on tied and on random inputs they are exactly the ones
    Jittor's own ``return_indices`` kernel returns."""
    _, kernel, stride, padding, ceil = window
    layer = jt.nn.Pool(kernel, stride, padding, return_indices=True, ceil_mode=ceil)
    rng = np.random.RandomState(4)
    for x in (_tied_input(rng), rng.randn(2, 3, 9, 8)):
        x = jt.array(x.astype(np.float32))
        _, stock = second_order._ORIGINAL["Pool"](layer, x)
        np.testing.assert_array_equal(second_order._argmax_index_2d(layer, x).numpy(),
                                      stock.numpy())


def test_substitute_refuses_the_maps_jittors_kernel_refuses():
    """A 3x3 pool on a 3x3 map: Jittor's code op raises; so does the substitute (it does
    not silently return values the stock layer would not)."""
    layer = jt.nn.Pool(3, 1, 1)
    x = jt.array(np.ones((1, 1, 3, 3), np.float32))
    with pytest.raises(RuntimeError, match="larger than kernel_size"):
        layer(x)
    with second_order_layers(), pytest.raises(RuntimeError, match="larger than kernel_size"):
        layer(x)


def test_pool3d_substitute_gradient_equals_the_kernels_on_ties():
    layer = jt.nn.Pool3d(3, 2, 1, op="maximum")
    x = jt.array(np.round(np.random.RandomState(4).randn(1, 2, 5, 6, 7)).astype(np.float32))
    weights = jt.array(np.random.RandomState(5).randn(*layer(x).shape).astype(np.float32))
    stock = jt.grad((layer(x) * weights).sum(), x).numpy()
    with second_order_layers():
        patched = jt.grad((layer(x) * weights).sum(), x).numpy()
    np.testing.assert_array_equal(patched, stock)


# -- where the substitutes are switched on -------------------------------------------------------
def _seen_during(gm_op, na_op, **options):
    """Per LL-model forward of one iteration: were the substitutes active?"""
    q = Quadratic()
    problem = q.build(gm_op, na_op, lower_iters=2, **options)
    model, seen = problem._ll_model, []
    original = type(model).execute

    def execute(*args, **kwargs):
        seen.append(substitutes_active())
        return original(model, *args, **kwargs)

    model.execute = execute
    problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    return seen


@pytest.mark.parametrize("na_op", [["RAD"], ["CG"], ["NS"]])
def test_second_order_operators_run_the_substitutes(na_op):
    seen = _seen_during(["NGD"], na_op)
    assert seen and all(seen)


@pytest.mark.parametrize("na_op", [["FOA", "RAD"], ["FD"], ["IGA"]])
def test_first_order_operators_keep_the_stock_kernels(na_op):
    seen = _seen_during(["NGD"], na_op)
    assert seen and not any(seen)


def test_fo_operator_declarations():
    q = Quadratic()
    vso = q.build(None, None, fo_op="VSO")
    assert not vso._second_order
    pgdo = q.build(None, None, fo_op="PGDO", PGDO={"penalty": "gradient"})
    assert pgdo._second_order


# -- BatchNorm buffers -----------------------------------------------------------------------------
def test_fast_weight_forwards_leave_batchnorm_running_stats_untouched():
    jt.set_global_seed(0)
    net = jt.nn.Sequential(jt.nn.Conv2d(1, 2, 3), jt.nn.BatchNorm2d(2))
    net.train()
    bn = net[1]
    x = jt.array(np.random.RandomState(0).randn(3, 1, 5, 5).astype(np.float32) + 2.0)
    before = [bn.running_mean.numpy().copy(), bn.running_var.numpy().copy()]
    fmodel = higher_jit.monkeypatch(net, copy_initial_weights=False, track_higher_grads=True)
    out = fmodel(x).numpy()
    fmodel(x, params=[p * 2 if not p.is_stop_grad() else p for p in fmodel.parameters()]).sync()
    np.testing.assert_array_equal(bn.running_mean.numpy(), before[0])
    np.testing.assert_array_equal(bn.running_var.numpy(), before[1])
    # the batch statistics were used (training mode), same output as the real module
    np.testing.assert_allclose(out, net(x).numpy(), rtol=1e-5, atol=1e-5)
    # the real module's own forward still updates its running statistics
    assert not np.allclose(bn.running_mean.numpy(), before[0])
