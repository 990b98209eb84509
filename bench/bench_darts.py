"""Benchmark: one DARTS search step (NGD + RAD, one unrolled weight step), jboat vs a
hand-written Jittor floor.

    python bench/bench_darts.py                 # C=16, 32x32; 3 and 5 cells; batch 8 and 32
    python bench/bench_darts.py --quick         # one small configuration (3 cells, batch 8)
    python bench/bench_darts.py --configs 3x8,5x32 --iters 3

Not a test: it prints a table. The network is DARTS' search network of
``examples/darts_space.py`` (8 candidates per edge, 4 steps, multiplier 4, reduction
cells at 1/3 and 2/3 of the depth, 10 classes), with the weighted sum of each edge
taken as one stacked product (``examples/nas_darts.py``'s ``StackedMixedOp``: Jittor
1.3.11 fails to compile a fused kernel of the candidate-by-candidate sum at some
sizes). One search step: a training and a validation minibatch, the lower step
``w1 = w - lr * (momentum buffer)`` (SGD, momentum 0.9, weight decay 3e-4), the
hyper-gradient ``d F(w1(alpha), alpha) / d alpha`` through that step (second order),
an Adam step on the architecture logits and the weight step ``w <- w1``.

* ``jboat``: ``jboat.Problem`` with ``gm_op: [NGD]``, ``na_op: [RAD]``,
  ``lower_iters: 1`` (``track_losses`` and ``nan_guard`` off: the floor's work);
* ``floor``: the same step written directly with ``jt.grad`` (weights swapped into the
  modules for the two forward passes, the momentum step and Adam written out), no jboat.

Each (implementation, configuration) runs in its own subprocess (this file with
``--worker``): ``--warmup`` untimed steps (the first one compiles Jittor's kernels;
they are cached for later processes), then ``--iters`` timed steps; printed are the
median seconds per step and the peak resident memory above the level just before the
first step (``/proc/self/status`` VmHWM after resetting it). ``--check`` first compares
the two hyper-gradients of one step from the same weights.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)                          # this checkout's jboat
sys.path.insert(0, os.path.join(ROOT, "examples"))
sys.path.insert(0, HERE)

from machine import cpu_name, memory_mb, reset_peak, run_result_worker  # noqa: E402

CHANNELS, STEPS, SIDE, CLASSES = 16, 4, 32, 10
LOWER_LR, MOMENTUM, WEIGHT_DECAY = 0.025, 0.9, 3e-4
UPPER_LR, BETAS, UPPER_WEIGHT_DECAY, ADAM_EPS = 3e-4, (0.5, 0.999), 1e-3, 1e-8


# -- the problem ----------------------------------------------------------------------------
def build(layers, batch, seed=0):
    """(network, architecture, feeds): the search network, its logits, and two
    (train, val) minibatch pairs of random 32x32 images."""
    import jboat  # noqa: F401  (environment defaults before Jittor)
    import jittor as jt
    import numpy as np
    from darts_space import PRIMITIVES, Architecture, Network
    from nas_darts import StackedMixedOp

    jt.set_global_seed(seed)
    network = Network(c=CHANNELS, classes=CLASSES, layers=layers, steps=STEPS,
                      multiplier=STEPS, primitives=PRIMITIVES)
    for cell in network.cells:
        for edge in cell.edges:
            edge.__class__ = StackedMixedOp
    network.train()
    architecture = Architecture(steps=STEPS, primitives=PRIMITIVES, seed=seed)
    rng = np.random.RandomState(seed)

    def feed():
        return {"x": jt.array(rng.randn(batch, 3, SIDE, SIDE).astype(np.float32)),
                "y": jt.array(rng.randint(0, CLASSES, size=batch).astype(np.int32))}
    feeds = [(feed(), feed()) for _ in range(2)]
    return network, architecture, feeds


def trainable(network):
    return [p for p in network.parameters() if not p.is_stop_grad()]


def cross_entropy(network, feed, alphas):
    import jittor as jt
    return jt.nn.cross_entropy_loss(network(feed["x"], alphas), feed["y"])


def make_jboat(network, architecture, feeds, return_grad=False):
    import jboat
    import jittor as jt

    weights = trainable(network)
    arch = [architecture.normal, architecture.reduce]
    recipe = {"gm_op": ["NGD"], "na_op": ["RAD"], "lower_iters": 1,
              "track_losses": False, "nan_guard": False, "return_grad": return_grad,
              "lower_level_model": network, "upper_level_model": architecture,
              "lower_level_var": weights, "upper_level_var": arch,
              "lower_level_opt": jt.optim.SGD(weights, lr=LOWER_LR, momentum=MOMENTUM,
                                              weight_decay=WEIGHT_DECAY),
              "upper_level_opt": jt.optim.Adam(arch, lr=UPPER_LR, betas=BETAS,
                                               weight_decay=UPPER_WEIGHT_DECAY)}

    def loss(feed, upper_model, lower_model, **kwargs):
        return jt.nn.cross_entropy_loss(lower_model(feed["x"], upper_model(), **kwargs),
                                        feed["y"])

    problem = jboat.Problem(recipe, {"lower_level_loss": loss, "upper_level_loss": loss})
    problem.build_ll_solver().build_ul_solver()

    def step(it):
        train, val = feeds[it % len(feeds)]
        return problem.run_iter(train, val, it)[0]
    return step


def _shifted_windows(x, stride, fill):
    """The 9 views of a 3x3 window (padding 1, ``stride``) of ``x``, padded with ``fill``."""
    import jittor as jt
    n, c, h, w = x.shape
    padded = jt.nn.pad(x, (1, 1, 1, 1), value=fill)
    out_h, out_w = (h - 1) // stride + 1, (w - 1) // stride + 1
    return [padded[:, :, i:i + stride * (out_h - 1) + 1:stride,
                   j:j + stride * (out_w - 1) + 1:stride] for i in range(3) for j in range(3)]


class WindowPool:
    """3x3 max or average pooling (padding 1, averages over the valid positions only,
    as DARTS' ``count_include_pad=False``) from shifted slices, a stack and a reduction:
    plain ops whose second derivatives Jittor gets right (its pooling kernel's backward
    has none). The floor's substitute for the network's pools."""

    def __init__(self, kind, stride):
        self.kind, self.stride = kind, stride

    def __call__(self, x):
        import jittor as jt
        if self.kind == "max":
            return jt.stack(_shifted_windows(x, self.stride, -1e30), dim=0).max(dim=0)
        total = jt.stack(_shifted_windows(x, self.stride, 0.0), dim=0).sum(dim=0)
        ones = jt.ones((1, 1) + tuple(x.shape[2:]))
        count = jt.stack(_shifted_windows(ones, self.stride, 0.0), dim=0).sum(dim=0)
        return total / count.stop_grad()


def substitute_pools(network):
    """Replace every stock 3x3 pooling layer of the network by a :class:`WindowPool`."""
    import jittor as jt
    count = 0
    for module in network.modules():
        if not isinstance(module, jt.nn.Sequential):
            continue
        for key, layer in list(module.layers.items()):
            pool = getattr(layer, "_layer", None) or getattr(layer, "layer", None)
            if isinstance(layer, (jt.nn.MaxPool2d, jt.nn.AvgPool2d)):
                assert pool.kernel_size == (3, 3) and pool.padding == (1, 1)
                module.layers[key] = WindowPool("max" if pool.op == "maximum" else "mean",
                                                pool.stride[0])
                count += 1
    return count


class Floor:
    """The search step with ``jt.grad`` only. The network's weights are swapped for the
    step's Vars during each forward pass (the modules' own attributes, restored after)."""

    def __init__(self, network, architecture, feeds):
        import jittor as jt
        self.network, self.feeds = network, feeds
        self.pools = substitute_pools(network)
        self.arch = [architecture.normal, architecture.reduce]
        self.slots = [(m, k) for m in network.modules() for k, v in vars(m).items()
                      if isinstance(v, jt.Var) and not v.is_stop_grad()]
        self.weights = [getattr(m, k) for m, k in self.slots]
        self.buffers = [jt.zeros_like(w) for w in self.weights]
        self.adam = [(jt.zeros_like(a), jt.zeros_like(a)) for a in self.arch]
        self.t = 0

    def loss_at(self, weights, feed):
        saved = [getattr(m, k) for m, k in self.slots]
        for (m, k), w in zip(self.slots, weights):
            setattr(m, k, w)
        try:
            return cross_entropy(self.network, feed, tuple(self.arch))
        finally:
            for (m, k), w in zip(self.slots, saved):
                setattr(m, k, w)

    def hypergradient(self, it):
        import jittor as jt
        train, val = self.feeds[it % len(self.feeds)]
        grads = jt.grad(self.loss_at(self.weights, train), self.weights, retain_graph=True)
        buffers = [MOMENTUM * b + g + WEIGHT_DECAY * w
                   for b, g, w in zip(self.buffers, grads, self.weights)]
        stepped = [w - LOWER_LR * b for w, b in zip(self.weights, buffers)]
        hyper = jt.grad(self.loss_at(stepped, val), self.arch)
        return hyper, stepped, buffers

    def step(self, it):
        hyper, stepped, buffers = self.hypergradient(it)
        self.t += 1
        b1, b2 = BETAS
        for a, g, (m, v) in zip(self.arch, hyper, self.adam):
            g = g + UPPER_WEIGHT_DECAY * a
            m.update(b1 * m + (1 - b1) * g)
            v.update(b2 * v + (1 - b2) * g * g)
            m_hat, v_hat = m / (1 - b1 ** self.t), v / (1 - b2 ** self.t)
            a.update((a - UPPER_LR * m_hat / (v_hat.sqrt() + ADAM_EPS)).detach())
        for w, s in zip(self.weights, stepped):
            w.update(s.detach())
        for b, s in zip(self.buffers, buffers):
            b.update(s.detach())


def sync_all():
    import jittor as jt
    jt.sync_all(True)


# -- workers --------------------------------------------------------------------------------
def worker(args):
    import gc

    import jboat  # noqa: F401  (environment defaults before Jittor)
    import jittor as jt
    network, architecture, feeds = build(args.layers, args.batch)
    if args.worker == "check":
        return check_worker(network, architecture, feeds)
    jt.sync(list(network.parameters()) + [architecture.normal, architecture.reduce])
    if args.worker == "jboat":
        step = make_jboat(network, architecture, feeds)
    else:
        floor = Floor(network, architecture, feeds)
        jt.sync(floor.buffers + [t for pair in floor.adam for t in pair])
        step = floor.step
    sync_all()
    gc.collect()
    base, _ = memory_mb()
    has_peak = reset_peak()
    times, first = [], None
    for it in range(args.warmup + args.iters):
        start = time.perf_counter()
        step(it)
        sync_all()
        elapsed = time.perf_counter() - start
        if it == 0:
            first = elapsed
        if it >= args.warmup:
            times.append(elapsed)
    _, peak = memory_mb()
    record = {"worker": args.worker, "layers": args.layers, "batch": args.batch,
              "median_s": statistics.median(times), "times": times, "first_s": first,
              "peak_mb": (peak - base) if has_peak else None,
              "framework": f"jittor {jt.__version__}"}
    sys.stdout.write("\nRESULT " + json.dumps(record) + "\n")
    sys.stdout.flush()


def check_worker(network, architecture, feeds):
    """Relative difference of the first step's hyper-gradients, same starting point."""
    import jittor as jt
    import numpy as np
    weights = [w.numpy().copy() for w in trainable(network)]
    jboat_grads = [g.numpy() for g in make_jboat(network, architecture, feeds,
                                                 return_grad=True)(0)]
    for w, value in zip(trainable(network), weights):   # jboat took the weight step
        w.update(jt.array(value))
    floor_grads = [g.numpy() for g in Floor(network, architecture, feeds).hypergradient(0)[0]]
    rel = max(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)
              for a, b in zip(jboat_grads, floor_grads))
    sys.stdout.write("\nRESULT " + json.dumps({"worker": "check", "rel": float(rel)}) + "\n")


def run_worker(name, layers, batch, iters, warmup, timeout):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--layers",
           str(layers), "--batch", str(batch), "--iters", str(iters), "--warmup", str(warmup)]
    return run_result_worker(cmd, ROOT, timeout)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="3x8,3x32,5x8,5x32",
                        help="LAYERSxBATCH list (C=16, 32x32 inputs)")
    parser.add_argument("--quick", action="store_true", help="only 3x8, 2 timed steps")
    parser.add_argument("--iters", type=int, default=3, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first steps")
    parser.add_argument("--check", action="store_true",
                        help="first compare the hyper-gradients (3 cells, batch 8)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per process")
    parser.add_argument("--worker", choices=("jboat", "floor", "check"))
    parser.add_argument("--layers", type=int)
    parser.add_argument("--batch", type=int)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.quick:
        args.configs, args.iters = "3x8", 2
    configs = [tuple(int(v) for v in c.split("x")) for c in args.configs.split(",")]
    print(f"# DARTS search step (NGD + RAD, one unrolled step): C={CHANNELS}, {STEPS} steps, "
          f"{SIDE}x{SIDE}, 8 candidates")
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.2f} at start; Python {platform.python_version()}")
    if args.check:
        result = run_worker("check", 3, 8, 0, 0, args.timeout)
        print(f"hyper-gradient check (3 cells, batch 8): "
              + (f"max relative difference jboat vs floor {result['rel']:.1e}"
                 if "rel" in result else result["error"]), flush=True)
    print("\n| cells | batch | floor s/step | jboat s/step | jboat/floor | floor peak MB "
          "| jboat peak MB | load |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for layers, batch in configs:
        load = os.getloadavg()[0]
        floor = run_worker("floor", layers, batch, args.iters, args.warmup, args.timeout)
        jb = run_worker("jboat", layers, batch, args.iters, args.warmup, args.timeout)
        rows.append({"layers": layers, "batch": batch, "floor": floor, "jboat": jb})
        if "error" in floor or "error" in jb:
            print(f"| {layers} | {batch} | {floor.get('error', '')} | {jb.get('error', '')} "
                  f"| | | | {load:.1f} |", flush=True)
            continue
        f, j = floor["median_s"], jb["median_s"]
        print(f"| {layers} | {batch} | {f:.2f} | {j:.2f} | {j / f:.2f} | "
              f"{floor['peak_mb']:.0f} | {jb['peak_mb']:.0f} | {load:.1f} |", flush=True)
    return rows


if __name__ == "__main__":
    main()
