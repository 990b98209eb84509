"""Second-order audit of the Jittor layers bilevel models are built from.

For each case (a stock ``jt.nn`` layer or function in one configuration) the
Hessian-vector product of a scalar function of the layer's input *and* parameters,

    ``s(x, θ) = Σ c ⊙ y² / 2 + Σ d ⊙ y``,  ``y = layer(x; θ)`` (``c``, ``d`` fixed random),

taken by Jittor's double backward, is compared in float64 with the central finite
difference of the gradient, ``(∇s(z + εv) − ∇s(z − εv)) / 2ε`` along a random
direction ``v`` over ``z = (x, θ)``. The layer is called through jboat's shim
(``monkeypatch``), as the operators call a user's model. Each case runs with Jittor's
stock kernels and, where jboat substitutes an implementation
(:mod:`jboat.higher_jit.second_order`), with the substitute.

Run ``python -m jboat.tools.second_order_audit`` to regenerate
``docs/second_order.md`` (``--check`` compares the table's rows instead of writing;
``--cuda`` runs on the GPU; ``--only NAME`` runs the cases whose layer name contains
NAME and prints them).
"""

import argparse
import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np

#: a case passes when the relative HVP error is below this (float64, ε = 1e-6)
TOLERANCE = 1e-6
FD_STEP = 1e-6
VALUE_STEP = 1e-4
DOC_PATH = os.path.join("docs", "second_order.md")


@dataclass(frozen=True)
class Case:
    """One audited configuration.

    Attributes:
        layer: the layer's name as users write it (``jt.nn.MaxPool2d``).
        config: its configuration, in words.
        build: ``() -> jittor.Module`` (float32, as a user builds it).
        input_shape: shape of the float input; ``None`` with ``int_input``.
        int_input: ``(shape, high)``: integer input (indices, no derivative).
        output: ``(module_output) -> Var``, e.g. picks the values of a tuple.
        fixed_random: the layer draws ``jt.random`` (dropout): draw it once.
    """

    layer: str
    config: str
    build: Callable
    input_shape: Optional[Tuple[int, ...]] = None
    int_input: Optional[tuple] = None
    output: Optional[Callable] = None
    fixed_random: bool = False


def _fn_module(fn):
    """A parameter-free Module whose forward is ``fn`` (for functional entry points)."""
    import jittor as jt

    class Functional(jt.Module):
        def execute(self, x):
            return fn(x)

    return Functional()


def _loss_module(loss, target):
    return _fn_module(lambda x: loss(x, target()))


def _eval(module):
    module.eval()
    return module


def _train(module):
    module.train()
    return module


def cases():
    """The audited cases (tiny shapes: each costs a few kernel compilations)."""
    import jittor as jt
    nn = jt.nn

    def int_target(shape, high, seed=3):
        return lambda: jt.array(np.random.RandomState(seed).randint(0, high, shape).astype("int32"))

    def prob_target(shape, seed=4):
        return lambda: jt.array(np.random.RandomState(seed).rand(*shape))

    img, img_odd, vol = (2, 2, 6, 6), (1, 2, 7, 7), (1, 2, 4, 4, 4)
    values = lambda out: out[0]  # noqa: E731  (return_indices: the pooled values)
    return [
        Case("jt.nn.Linear", "3 -> 2, bias", lambda: nn.Linear(3, 2), (4, 3)),
        Case("jt.nn.Conv1d", "2 -> 3, k 3", lambda: nn.Conv1d(2, 3, 3), (2, 2, 6)),
        Case("jt.nn.Conv1d", "k 3, stride 2, padding 1, dilation 2",
             lambda: nn.Conv1d(2, 3, 3, stride=2, padding=1, dilation=2), (2, 2, 7)),
        Case("jt.nn.Conv2d", "2 -> 3, k 3", lambda: nn.Conv2d(2, 3, 3), img),
        Case("jt.nn.Conv2d", "k 3, stride 2, padding 1", lambda: nn.Conv2d(2, 3, 3, 2, 1), img),
        Case("jt.nn.Conv2d", "k 3, dilation 2, no bias",
             lambda: nn.Conv2d(2, 3, 3, dilation=2, bias=False), img),
        Case("jt.nn.Conv2d", "groups 2 (2 -> 4)", lambda: nn.Conv2d(2, 4, 3, groups=2), img),
        Case("jt.nn.Conv2d", "depthwise (groups = in = out = 2)",
             lambda: nn.Conv2d(2, 2, 3, padding=1, groups=2), img),
        Case("jt.nn.Conv3d", "2 -> 2, k 2", lambda: nn.Conv3d(2, 2, 2), vol),
        Case("jt.nn.ConvTranspose2d", "2 -> 3, k 3, stride 2, padding 1",
             lambda: nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1), (1, 2, 4, 4)),
        Case("jt.nn.ConvTranspose3d", "2 -> 2, k 2, stride 2",
             lambda: nn.ConvTranspose3d(2, 2, 2, stride=2), (1, 2, 3, 3, 3)),
        Case("jt.nn.MaxPool2d", "k 2 (stride 2)", lambda: nn.MaxPool2d(2), img),
        Case("jt.nn.MaxPool2d", "k 2, 7 x 7 input (ragged edge)", lambda: nn.MaxPool2d(2),
             img_odd),
        Case("jt.nn.Pool", "k (2, 3), min pooling", lambda: nn.Pool((2, 3), op="minimum"),
             img),
        Case("jt.nn.MaxPool2d", "k 3, stride 1, padding 1 (DARTS)",
             lambda: nn.MaxPool2d(3, 1, 1), img),
        Case("jt.nn.Sequential", "MaxPool2d(3, 1, 1) + MaxPool2d(3, 2, 1) (stacked)",
             lambda: nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.MaxPool2d(3, 2, 1)), img),
        Case("jt.nn.Pool", "k 3, stride 2, padding 1, min pooling",
             lambda: nn.Pool(3, 2, 1, op="minimum"), img),
        Case("jt.nn.MaxPool2d", "k 3, stride 2, ceil_mode", lambda: nn.MaxPool2d(3, 2, ceil_mode=True),
             img_odd),
        Case("jt.nn.MaxPool2d", "k 2, return_indices (values)",
             lambda: nn.MaxPool2d(2, return_indices=True), img, output=values),
        Case("jt.nn.max_pool2d", "functional, k 3, stride 2, padding 1",
             lambda: _fn_module(lambda x: nn.max_pool2d(x, 3, 2, 1)), img),
        Case("jt.nn.MaxPool3d", "k 2", lambda: nn.MaxPool3d(2), vol),
        Case("jt.nn.AvgPool2d", "k 2", lambda: nn.AvgPool2d(2), img),
        Case("jt.nn.AvgPool2d", "k 3, stride 1, padding 1", lambda: nn.AvgPool2d(3, 1, 1), img),
        Case("jt.nn.AvgPool2d", "k 3, stride 2, ceil_mode",
             lambda: nn.AvgPool2d(3, 2, ceil_mode=True), img_odd),
        Case("jt.nn.AvgPool2d", "k 3, stride 2, padding 1, ceil_mode, count_include_pad=False",
             lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False), img_odd),
        Case("jt.nn.AvgPool3d", "k 2", lambda: nn.AvgPool3d(2), vol),
        Case("jt.nn.AdaptiveAvgPool2d", "output 2 (overlapping windows)",
             lambda: nn.AdaptiveAvgPool2d(2), (1, 2, 5, 5)),
        Case("jt.nn.AdaptiveAvgPool2d", "output 1 (global)", lambda: nn.AdaptiveAvgPool2d(1), img),
        Case("jt.nn.AdaptiveMaxPool2d", "output 2", lambda: nn.AdaptiveMaxPool2d(2), (1, 2, 5, 5)),
        Case("jt.nn.AdaptiveMaxPool2d", "output 2, return_indices (values)",
             lambda: nn.AdaptiveMaxPool2d(2, return_indices=True), (1, 2, 5, 5), output=values),
        Case("jt.nn.AdaptiveMaxPool2d", "output 1 (global)", lambda: nn.AdaptiveMaxPool2d(1), img),
        Case("jt.nn.BatchNorm1d", "training (batch statistics)", lambda: _train(nn.BatchNorm1d(3)),
             (5, 3)),
        Case("jt.nn.BatchNorm2d", "training (batch statistics)", lambda: _train(nn.BatchNorm2d(2)),
             img),
        Case("jt.nn.BatchNorm2d", "eval (running statistics)", lambda: _eval(nn.BatchNorm2d(2)),
             img),
        Case("jt.nn.LayerNorm", "normalized_shape 6", lambda: nn.LayerNorm(6), (3, 6)),
        Case("jt.nn.GroupNorm", "2 groups, 4 channels", lambda: nn.GroupNorm(2, 4), (2, 4, 3, 3)),
        Case("jt.nn.InstanceNorm2d", "2 channels, affine", lambda: nn.InstanceNorm2d(2), img),
        Case("jt.nn.ReLU", "", lambda: nn.ReLU(), (4, 5)),
        Case("jt.nn.LeakyReLU", "scale 0.1", lambda: nn.LeakyReLU(0.1), (4, 5)),
        Case("jt.nn.PReLU", "1 parameter", lambda: nn.PReLU(), (4, 5)),
        Case("jt.nn.GELU", "", lambda: nn.GELU(), (4, 5)),
        Case("jt.nn.ELU", "", lambda: nn.ELU(), (4, 5)),
        Case("jt.nn.SiLU", "", lambda: nn.SiLU(), (4, 5)),
        Case("jt.nn.Softplus", "", lambda: nn.Softplus(), (4, 5)),
        Case("jt.nn.Sigmoid", "", lambda: nn.Sigmoid(), (4, 5)),
        Case("jt.nn.Tanh", "", lambda: nn.Tanh(), (4, 5)),
        Case("jt.nn.Softmax", "dim 1", lambda: nn.Softmax(dim=1), (4, 5)),
        Case("jt.nn.log_softmax", "dim 1", lambda: _fn_module(lambda x: nn.log_softmax(x, 1)),
             (4, 5)),
        Case("jt.nn.Dropout", "eval", lambda: nn.Dropout(0.5), (4, 5)),
        Case("jt.nn.Dropout", "training, fixed mask", lambda: nn.Dropout(0.5, is_train=True),
             (4, 5), fixed_random=True),
        Case("jt.nn.Embedding", "5 x 3, integer input", lambda: nn.Embedding(5, 3),
             int_input=((4,), 5)),
        Case("jt.nn.cross_entropy_loss", "logits 4 x 3, int targets",
             lambda: _loss_module(nn.cross_entropy_loss, int_target((4,), 3)), (4, 3)),
        Case("jt.nn.nll_loss", "of log_softmax",
             lambda: _loss_module(lambda x, t: nn.nll_loss(nn.log_softmax(x, 1), t),
                                  int_target((4,), 3)), (4, 3)),
        Case("jt.nn.BCELoss", "of sigmoid", lambda: _loss_module(
            lambda x, t: nn.BCELoss()(x.sigmoid(), t), prob_target((4, 3))), (4, 3)),
        Case("jt.nn.BCEWithLogitsLoss", "", lambda: _loss_module(
            nn.BCEWithLogitsLoss(), prob_target((4, 3))), (4, 3)),
        Case("jt.nn.MSELoss", "", lambda: _loss_module(nn.MSELoss(), prob_target((4, 3))),
             (4, 3)),
        Case("jt.nn.interpolate", "bilinear, scale 2", lambda: _fn_module(
            lambda x: nn.interpolate(x, scale_factor=2, mode="bilinear")), (1, 2, 3, 3)),
        Case("jt.nn.interpolate", "nearest, size 5", lambda: _fn_module(
            lambda x: nn.interpolate(x, size=(5, 5), mode="nearest")), (1, 2, 3, 3)),
        Case("jt.nn.Upsample", "scale 2, bilinear", lambda: nn.Upsample(scale_factor=2,
                                                                        mode="bilinear"),
             (1, 2, 3, 3)),
        Case("jt.nn.Sequential", "Conv2d + BatchNorm2d + ReLU + MaxPool2d (Conv4 block)",
             lambda: nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                                   nn.MaxPool2d(2)), img),
    ]


# -- one measurement ------------------------------------------------------------------------
def to_float64(module):
    """Replace every Var of ``module.parameters()`` by a float64 copy (in place)."""
    import jittor as jt

    from jboat.higher_jit.patch import parameter_slots

    params, slots = parameter_slots(module)
    copies = []
    for p in params:
        c = jt.array(p.numpy().astype(np.float64))
        copies.append(c.stop_grad() if p.is_stop_grad() else c)
    for owner, key, index in slots:
        owner[key] = copies[index]
    return module


@contextlib.contextmanager
def _fixed_random(enabled, rng):
    """``jt.random`` returning the same draw for a given shape (a fixed dropout mask)."""
    import jittor as jt

    if not enabled:
        yield
        return
    original, draws = jt.random, {}

    def random(shape, dtype="float32", type="uniform"):
        key = tuple(shape)
        if key not in draws:
            draws[key] = rng.rand(*key)
        return jt.array(draws[key]).cast(dtype)

    jt.random = random
    try:
        yield
    finally:
        jt.random = original


def hvp_error(case, substitute, seed=0):
    """Relative error of the case's HVP against float64 finite differences.

    Primary oracle: central differences of the gradient along ``v``,
    ``‖Hv − FD‖ / ‖FD‖`` (step 1e-6). Where that disagrees, a second oracle that
    does not trust Jittor's first derivatives either: second differences of the
    scalar's values, ``uᵀHv ≈ [s(z+εu+εv) − s(z+εu−εv) − s(z−εu+εv) + s(z−εu−εv)]
    / 4ε²`` for ``u = v`` and two random ``u`` (step 1e-4); it catches first
    derivatives that are only float32-accurate in float64 (Jittor's ``mean``
    backward), which the gradient differences amplify by 1/ε.

    Returns ``(error, fd_norm, oracle)``; ``substitute`` runs it inside
    :func:`jboat.higher_jit.second_order_layers`.
    """
    import jittor as jt

    from jboat.higher_jit import monkeypatch, second_order_layers

    rng = np.random.RandomState(seed)
    previous = jt.flags.auto_convert_64_to_32, jt.flags.no_grad
    jt.flags.auto_convert_64_to_32 = 0
    jt.flags.no_grad = 0
    try:
        module = to_float64(case.build())
        fmodel = monkeypatch(module, copy_initial_weights=True, track_higher_grads=False,
                             second_order=False)
        trainable = [i for i, m in enumerate(fmodel.trainable_mask) if m]
        base_params = [p.numpy() for p in fmodel.parameters()]
        if case.int_input is not None:
            shape, high = case.int_input
            x_int = jt.array(rng.randint(0, high, shape).astype("int32"))
            points = [base_params[i] for i in trainable]
        else:
            x_int = None
            points = [rng.randn(*case.input_shape)] + [base_params[i] for i in trainable]
        direction = [rng.randn(*np.shape(p)) for p in points]
        probes = [direction] + [[rng.randn(*np.shape(p)) for p in points] for _ in range(2)]
        head = {}

        def scalar(values):
            z = [jt.array(np.asarray(v, dtype=np.float64)) for v in values]
            params = list(fmodel.parameters())
            offset = 0 if x_int is not None else 1
            for j, i in enumerate(trainable):
                params[i] = z[offset + j]
            x = x_int if x_int is not None else z[0]
            y = fmodel(x, params=params)
            if case.output is not None:
                y = case.output(y)
            if "c" not in head:
                head["c"] = jt.array(rng.randn(*y.shape))
                head["d"] = jt.array(rng.randn(*y.shape))
            return (head["c"] * y * y).sum() * 0.5 + (head["d"] * y).sum(), z

        def gradient(values):
            s, z = scalar(values)
            return jt.grad(s, z), z

        def shifted(*terms):
            return [p + sum(c * d[k] for c, d in terms) for k, p in enumerate(points)]

        with second_order_layers(substitute), _fixed_random(case.fixed_random, rng):
            grads, z = gradient(points)
            inner = sum(((g * jt.array(v)).sum() for g, v in zip(grads, direction)),
                        jt.zeros(1, dtype="float64"))
            hv = [h.numpy() for h in jt.grad(inner, z)]
            plus = [g.numpy() for g in gradient(shifted((FD_STEP, direction)))[0]]
            minus = [g.numpy() for g in gradient(shifted((-FD_STEP, direction)))[0]]
            fd = np.concatenate([((a - b) / (2 * FD_STEP)).ravel() for a, b in zip(plus, minus)])
            flat_hv = np.concatenate([h.ravel() for h in hv])
            fd_norm = float(np.linalg.norm(fd))
            error = float(np.linalg.norm(flat_hv - fd) / max(fd_norm, 1e-300))
            if error < TOLERANCE:
                return error, fd_norm, "gradient differences"
            e = VALUE_STEP
            value = lambda *terms: float(scalar(shifted(*terms))[0].numpy().reshape(-1)[0])  # noqa: E731
            exact, approx = [], []
            for u in probes:
                exact.append(sum(float(np.sum(h * w)) for h, w in zip(hv, u)))
                approx.append((value((e, u), (e, direction)) - value((e, u), (-e, direction))
                               - value((-e, u), (e, direction)) + value((-e, u), (-e, direction)))
                              / (4 * e * e))
            exact, approx = np.array(exact), np.array(approx)
            value_norm = float(np.linalg.norm(approx))
            value_error = float(np.linalg.norm(exact - approx) / max(value_norm, 1e-300))
            if value_error < error:
                return value_error, value_norm, "value differences"
            return error, fd_norm, "gradient differences"
    finally:
        jt.flags.auto_convert_64_to_32, jt.flags.no_grad = previous


# -- the table ----------------------------------------------------------------------------
@dataclass
class Row:
    layer: str
    config: str
    stock_error: float
    fixed_error: Optional[float]   # None: jboat substitutes nothing for this case
    fix: str
    oracle: str = "gradient differences"

    @property
    def passed(self):
        error = self.stock_error if self.fixed_error is None else self.fixed_error
        return bool(error < TOLERANCE)


def run_audit(selected=None, log=None):
    """Measure every case (or those whose layer name contains ``selected``)."""
    from jboat.higher_jit.second_order import substitutions

    rows = []
    for case in cases():
        if selected and selected.lower() not in case.layer.lower():
            continue
        stock, _, oracle = hvp_error(case, substitute=False)
        before = substitutions()
        fixed, _, fixed_oracle = hvp_error(case, substitute=True)
        fired = sorted(substitutions() - before)
        fix = ", ".join(fired) if fired else "none needed"
        if fired:
            oracle = fixed_oracle
        else:
            fixed = None
        row = Row(case.layer, case.config, stock, fixed, fix, oracle)
        rows.append(row)
        if log is not None:
            log(row)
    return rows


def _fmt(error):
    return "—" if error is None else f"{error:.0e}"


TABLE_HEADER = ("| layer | configuration | relative HVP error, stock Jittor | "
                "with jboat's substitute | result | fix used | oracle |\n"
                "|---|---|---|---|---|---|---|\n")


def render_table(rows):
    lines = [TABLE_HEADER]
    for r in rows:
        lines.append(f"| `{r.layer}` | {r.config or '—'} | {_fmt(r.stock_error)} | "
                     f"{_fmt(r.fixed_error)} | {'pass' if r.passed else 'FAIL'} | {r.fix} | "
                     f"{r.oracle} |\n")
    return "".join(lines)


def table_keys(markdown):
    """``(layer, configuration, result)`` of every row of the table in ``markdown``."""
    keys = []
    for line in markdown.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        keys.append((cells[0].strip("`"), "" if cells[1] == "—" else cells[1], cells[4]))
    return keys


DOCUMENT = """# Second derivatives through Jittor layers

<!-- Generated by `python -m jboat.tools.second_order_audit` (do not edit by hand:
     edit jboat/tools/second_order_audit.py and rerun it). -->

Bilevel operators that differentiate through the lower-level solution — the MAML
meta-gradient (IAD), RAD/RHG, PTT, CG/NS implicit gradients, DM, PGDO's gradient
penalty — take **derivatives of derivatives** of your model. Jittor computes them by
differentiating the backward graph. A layer implemented as a hand-written code op
(`jt.code`) whose backward is itself a code op has no derivative of its backward, and
Jittor treats that missing derivative as **zero, silently**: first derivatives stay
right, second-order quantities come out wrong (the MAML meta-gradient through
`jt.nn.MaxPool2d` was off by 24–77 % on a Conv4).

## What jboat does about it

While an operator that needs second derivatives runs, jboat replaces the affected
layers by implementations whose backward is built from ordinary differentiable Jittor
ops (`reindex` and `reindex_reduce`: each is the other's derivative, so every
derivative order exists). 2-D max/min pooling — any window, stride, padding and
rounding — finds the position of each window's extremum with a kernel that scans the
window as Jittor's pooling kernel does (an index-only code op on the CPU, Jittor's
`return_indices` kernel on CUDA; one int32 per output, no window tensor is built) and
gathers the values at those positions (a `reindex`, with the indices held constant).
Jittor differentiates the gather itself: the output gradient is scattered to those
positions by a `reindex_reduce`, whose own derivative is the gather again, the exact
derivative structure of max pooling, so every order is right. (An earlier version took
the backward into a `jt.Function`; with it in a DARTS cell Jittor kept the grouped
convolutions' window tensors alive, about 2 GB per sample at C = 16, 32x32.) 3-D
pooling selects the first extremum of its windows with a mask. Tied maxima (plateaus: a constant image background,
a pooled edge pooled again in a DARTS cell, ReLU zeros) pass the gradient **once**, to
the first position in scan order, exactly as Jittor's kernel and PyTorch do: first
derivatives under the substitutes equal the stock kernel's bit for bit (an earlier
`reindex` + `reduce` substitute handed the full gradient to every tied position, which
made DARTS hyper-gradients up to 60x wrong). Mean pooling with `ceil_mode` (also a
code op) is linear: a `reindex` window sum. The replacements compute the same values as
the code ops they stand for (windows clipped to the input, padding never wins a max,
the same divisor for mean pooling), so only the second derivatives change — from wrong
to right. **You do not change your model**: stock `jt.nn.MaxPool2d`, `jt.nn.max_pool2d`,
`jt.nn.AvgPool2d(ceil_mode=True)`, `jt.nn.MaxPool3d`, ... work as they are.

* When: `jboat.Problem` switches the substitutes on for one iteration when an
  operator declares it differentiates gradients (`second_order` or
  `tracks_trajectory` in the operator registry, unless FOA makes the steps
  first-order): NGD+RAD/IAD/PTT/RGT, CG, NS, DM, PGDO with `penalty: gradient`.
  First-order solvers (FOA/FOMAML, FD/DARTS, IGA, the FO operators) keep Jittor's
  fast kernels. The shim does the same for a patched model that tracks higher
  gradients (`higher_jit.monkeypatch(..., second_order=None)`; pass `True`/`False`
  to force it). You can also use the context yourself:
  `with jboat.higher_jit.second_order_layers(): ...`.
* Cost: max/min pooling runs one index kernel (one int32 per output) plus a gather,
  and a scatter in the backward; mean pooling with `ceil_mode` materialises its windows.
  The substitutes run only where second derivatives are needed.
* CUDA: Jittor also has CUDA-only code paths without a second derivative — the fused
  softmax kernel, the depthwise-convolution kernel of `Conv2d(groups = in = out)`,
  and the cuDNN ops used for 3-D convolution / transposed 3-D convolution / RNNs.
  The same context routes them to Jittor's plain implementations. This table was
  measured on {device}; `tools/check_cuda.sh` reruns the audit on a GPU
  (`--cuda`).
* No layer was found that could not be fixed, so `Problem` refuses none.

## BatchNorm in the inner loop

* Fast-weight forwards use the mode the module is in: in training mode BatchNorm
  normalises with the **batch statistics** of each forward (transductive, as in
  MAML); in eval mode with the running statistics.
* The real module's running statistics are **never changed by the inner loop**: the
  shim gives every forward of the patched model temporary copies of the buffers, so
  the updates BatchNorm makes in training mode are discarded. Only forwards of the
  real module (your own code, the first-order operators that call the real model)
  update them.
* `return_grad: true` returns a list aligned with `upper_level_var`. Jittor's
  `Module.parameters()` includes the running-statistic buffers; if they are in
  `upper_level_var` their entries are **zero tensors** of the buffer's shape (they
  receive no gradient), and the upper-level optimizer never changes them.

## How the table is measured

For each case the Hessian-vector product of `s(x, θ) = Σ c ⊙ y² / 2 + Σ d ⊙ y`,
`y = layer(x; θ)` (`c`, `d` fixed random), w.r.t. the layer's input **and**
parameters, taken by Jittor's double backward through jboat's shim, is compared in
float64 (`jt.flags.auto_convert_64_to_32 = 0`) with central differences of the
gradient along a random direction (step {step}). Where those disagree, a second
oracle uses second differences of the values (`u·Hv` for three directions `u`, step
1e-4): Jittor's float64 `mean` backward is only float32-accurate (relative 1e-8),
which gradient differences amplify by 1/step; this is a precision limit of Jittor's
float64 path, not a missing derivative, and does not matter in float32 training.
A case passes below {tolerance}. "Stock" runs Jittor's kernels, "with jboat's
substitute" runs inside `second_order_layers()` (— where nothing is substituted).
The end-to-end tests (`tests/test_second_order_models.py`) check the MAML (K = 1, 3),
RAD and DARTS hyper-gradients of small Conv + BatchNorm + MaxPool + AvgPool networks
against float64 finite differences to 1e-5.

{table}
## Jittor's float64 path: caveats for your own checks

`python tools/jittor_float64_repro.py` reproduces each (Jittor 1.3.11, CPU):

* **A float32 kernel reused for float64.** Once an expression such as
  `(x*x).sum() + x.sum()*0.5` has been differentiated in float32, differentiating it in
  float64 later in the same process gives garbage gradients (zeros, 1e-289, inf),
  silently; in a fresh process, or when the float64 run comes first, they are right.
  There the trigger is the gradient of a scaled sum (`x.sum() * c`) plus another term,
  the form of this table's scalar, but other graphs are hit too (a float64 iMAML test
  came out 4–12 % off after the few-shot tests). tests/test_second_order_audit.py and
  tests/na_ol/test_imaml.py therefore measure in a fresh process: run float64 checks in
  their own process (or before any float32 work).
* **`0.5 * loss` is float32** when `loss` is a one-element float64 Var (also `2 * v`,
  `1 - v`, `0.5 + v`); `loss * 0.5` stays float64. Put the Var first.
* The backward of `v * 0.5` (one-element float64 `v`) is float32, and `mean`'s backward
  is float32-accurate (above).

Regenerate: `python -m jboat.tools.second_order_audit` (about 5 minutes on 2 cores,
mostly kernel compilation); `--check` compares with this file.
"""


def render_document(rows, device):
    return DOCUMENT.format(table=render_table(rows), device=device,
                                            tolerance=f"{TOLERANCE:.0e}",
                                            step=f"{FD_STEP:.0e}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with docs/second_order.md instead of writing it")
    parser.add_argument("--cuda", action="store_true", help="run on the GPU (jt.flags.use_cuda)")
    parser.add_argument("--only", default=None, help="run the cases whose layer contains this")
    parser.add_argument("--output", default=DOC_PATH)
    args = parser.parse_args(argv)

    import jboat  # noqa: F401  (environment defaults before Jittor)
    import jittor as jt

    jt.flags.use_cuda = 1 if args.cuda else 0
    device = "CUDA" if args.cuda else "CPU"

    def log(row):
        print(f"{row.layer:28s} {row.config:58s} stock {_fmt(row.stock_error):>6s}  "
              f"jboat {_fmt(row.fixed_error):>6s}  {'pass' if row.passed else 'FAIL'}",
              flush=True)

    rows = run_audit(args.only, log=log)
    failed = [r for r in rows if not r.passed]
    if args.only:
        return 1 if failed else 0
    if args.check:
        with open(args.output, encoding="utf-8") as handle:
            documented = table_keys(handle.read())
        measured = [(r.layer, r.config, "pass" if r.passed else "FAIL") for r in rows]
        if documented != measured:
            print(f"{args.output} is stale: rerun python -m jboat.tools.second_order_audit")
            return 1
        return 1 if failed else 0
    if not args.cuda:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(render_document(rows, device))
        print(f"wrote {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
