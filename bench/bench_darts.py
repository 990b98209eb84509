"""Benchmark: one DARTS search step (NGD + RAD, one unrolled weight step), jboat vs a
hand-written Jittor floor vs PyTorch.

    python bench/bench_darts.py                 # C=16, 32x32; 3 and 5 cells; batch 8 and 32
    python bench/bench_darts.py --quick         # one small configuration (3 cells, batch 8)
    python bench/bench_darts.py --configs 3x8,5x32 --iters 3 --check

Not a test: it prints a table. The network is DARTS' search network of
``examples/darts_space.py`` as it is (8 candidates per edge, each edge the plain
candidate-by-candidate weighted sum, 4 steps, multiplier 4, reduction cells at 1/3 and
2/3 of the depth, 10 classes; ``--mixed stacked`` takes each edge's sum as one stacked
product instead, ``examples/nas_darts.py``'s ``StackedMixedOp``). One search step: a
training and a validation minibatch, the lower step ``w1 = w - lr * b1`` with the
momentum buffer ``b1 = 0.9 b + g + 3e-4 w`` (SGD), the hyper-gradient
``d F(w1(alpha), alpha) / d alpha`` through that step (second order), an Adam step on
the architecture logits and the weight step ``w <- w1``.

* ``jboat``: ``jboat.Problem`` with ``gm_op: [NGD]``, ``na_op: [RAD]``,
  ``lower_iters: 1`` (``track_losses`` and ``nan_guard`` off: the floor's work);
* ``floor``: the same step written with ``jt.grad`` only (the weights swapped into the
  modules for the two forward passes, the momentum step and Adam written out), inside
  ``jboat.higher_jit.second_order_layers()`` so that the max pools' second derivatives
  exist (Jittor's pooling kernel has none); when Jittor fails to compile a fused kernel
  of the step it reruns with ``jboat.higher_jit.fusion`` barriers, as jboat does;
* ``torch``: the same network and step in PyTorch (``bench/darts_torch.py``; optional,
  skipped when ``torch`` is not importable), at 1 and 2 threads
  (``torch.set_num_threads``), each in its own process; the faster one is kept.

The minibatches are NumPy arrays drawn from one seed and handed to every
implementation. Each (implementation, configuration) runs in its own subprocess (this
file with ``--worker``): ``--warmup`` untimed steps (the first one compiles Jittor's
kernels; they are cached for later processes), then ``--iters`` timed steps; printed
are the median seconds per step and the peak resident memory above the level just
before the first step (``/proc/self/status`` VmHWM after resetting it). ``--check``
first compares the hyper-gradients of one step from the same weights: jboat against
the floor and against PyTorch (the Jittor weights copied into the PyTorch network by
parameter name), in float64 by default. In float32 (``--check-dtype float32``) the two
frameworks' rounding can put a ReLU or max-pool input that lies within about 1e-6 of its
kink on different sides, which moves the hyper-gradient by up to about 1e-3 relative
without either being wrong. ``--primitives`` restricts the candidates (a diagnosis).
``--ranks N`` also times jboat data-parallel on N MPI ranks (``mpirun``, one thread
each, every rank a 1/N share of each minibatch, ``data_parallel: true``; BatchNorm keeps
Jittor's cross-rank statistics, so the step is the one-process step): Jittor's
generated CPU kernels run on one thread, and ranks are how jboat uses the other cores.
"""

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)                          # this checkout's jboat
sys.path.insert(0, os.path.join(ROOT, "examples"))
sys.path.insert(0, HERE)

from machine import cpu_name, memory_mb, mpirun_command, reset_peak, run_result_worker  # noqa: E402,E501

CHANNELS, STEPS, SIDE, CLASSES = 16, 4, 32, 10
#: the candidate operations (all 8 of DARTS unless ``--primitives`` names a subset)
PRIMITIVES = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
              "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
LOWER_LR, MOMENTUM, WEIGHT_DECAY = 0.025, 0.9, 3e-4
UPPER_LR, BETAS, UPPER_WEIGHT_DECAY, ADAM_EPS = 3e-4, (0.5, 0.999), 1e-3, 1e-8
SEED = 0
#: the parts of a search step, in order (``hypergradient(it, stage)``)
PARTS = ("train forward", "first backward", "validation forward", "second backward")


def set_size(channels, side, primitives=None):
    """Override C, the input side and the candidates (module constants: every worker
    reads them)."""
    global CHANNELS, SIDE, PRIMITIVES
    CHANNELS, SIDE = channels, side
    if primitives:
        PRIMITIVES = tuple(primitives)


# -- the problem ----------------------------------------------------------------------------
def make_data(batch, seed=SEED):
    """Two (train, val) pairs of ``{"x": (batch, 3, 32, 32) float32, "y": int32}`` NumPy
    minibatches, the same for every implementation."""
    import numpy as np
    rng = np.random.RandomState(seed)

    def feed():
        return {"x": rng.randn(batch, 3, SIDE, SIDE).astype(np.float32),
                "y": rng.randint(0, CLASSES, size=batch).astype(np.int32)}
    return [(feed(), feed()) for _ in range(2)]


def architecture_arrays(seed=SEED, scale=1e-3):
    """The initial (normal, reduce) logits, as ``darts_space.Architecture`` draws them."""
    import numpy as np
    rng = np.random.RandomState(seed)
    shape = (sum(2 + i for i in range(STEPS)), len(PRIMITIVES))   # edges x candidates
    return [(rng.randn(*shape) * scale).astype(np.float32) for _ in range(2)]


def build(layers, batch, mixed="sum", seed=SEED):
    """(network, architecture, feeds) in Jittor, everything executed."""
    import jboat  # noqa: F401  (environment defaults before Jittor)
    import jittor as jt
    from darts_space import Architecture, Network

    jt.set_global_seed(seed)
    network = Network(c=CHANNELS, classes=CLASSES, layers=layers, steps=STEPS,
                      multiplier=STEPS, primitives=PRIMITIVES)
    if mixed == "stacked":
        from nas_darts import StackedMixedOp
        for cell in network.cells:
            for edge in cell.edges:
                edge.__class__ = StackedMixedOp
    network.train()
    architecture = Architecture(steps=STEPS, primitives=PRIMITIVES, seed=seed)
    feeds = [tuple({k: jt.array(v) for k, v in f.items()} for f in pair)
             for pair in make_data(batch, seed)]
    jt.sync(list(network.parameters()) + [architecture.normal, architecture.reduce]
            + [v for pair in feeds for f in pair for v in f.values()])
    return network, architecture, feeds


def named_weights(network):
    """The trainable (name, Var) pairs of a Jittor network."""
    return [(n, p) for n, p in network.named_parameters() if not p.is_stop_grad()]


def make_jboat(network, architecture, feeds, return_grad=False, data_parallel=False):
    """(step, problem): ``step(it)`` runs one ``problem.run_iter``; ``data_parallel``:
    under ``mpirun``, ``feeds`` hold this rank's share of every minibatch."""
    import jboat
    import jittor as jt

    weights = [p for _, p in named_weights(network)]
    arch = [architecture.normal, architecture.reduce]
    recipe = {"gm_op": ["NGD"], "na_op": ["RAD"], "lower_iters": 1,
              "track_losses": False, "nan_guard": False, "return_grad": return_grad,
              "data_parallel": data_parallel,
              "lower_level_model": network, "upper_level_model": architecture,
              "lower_level_var": weights, "upper_level_var": arch,
              "lower_level_opt": jt.optim.SGD(weights, lr=LOWER_LR, momentum=MOMENTUM,
                                              weight_decay=WEIGHT_DECAY),
              "upper_level_opt": jt.optim.Adam(arch, lr=UPPER_LR, betas=BETAS,
                                               eps=ADAM_EPS, weight_decay=UPPER_WEIGHT_DECAY)}

    def loss(feed, upper_model, lower_model, **kwargs):
        return jt.nn.cross_entropy_loss(lower_model(feed["x"], upper_model(), **kwargs),
                                        feed["y"])

    problem = jboat.Problem(recipe, {"lower_level_loss": loss, "upper_level_loss": loss})
    problem.build_ll_solver().build_ul_solver()

    def step(it):
        train, val = feeds[it % len(feeds)]
        return problem.run_iter(train, val, it)[0]
    return step, problem


class Floor:
    """The search step with ``jt.grad`` only. The network's weights are swapped for the
    step's Vars during each forward pass (the modules' own attributes, restored after);
    the whole step is one lazy graph, executed by one ``jt.sync`` before the variables
    are overwritten (so a failed compilation leaves them as they were)."""

    def __init__(self, network, architecture, feeds):
        import jittor as jt
        self.network, self.feeds = network, feeds
        self.arch = [architecture.normal, architecture.reduce]
        self.slots = [(m, k) for m in network.modules() for k, v in vars(m).items()
                      if isinstance(v, jt.Var) and not v.is_stop_grad()]
        self.weights = [getattr(m, k) for m, k in self.slots]
        self.buffers = [jt.zeros_like(w) for w in self.weights]
        self.adam = [(jt.zeros_like(a), jt.zeros_like(a)) for a in self.arch]
        jt.sync(self.buffers + [t for pair in self.adam for t in pair])
        self.t = 0
        self.fusion_level = 0

    def loss_at(self, weights, feed):
        import jittor as jt
        saved = [getattr(m, k) for m, k in self.slots]
        for (m, k), w in zip(self.slots, weights):
            setattr(m, k, w)
        try:
            logits = self.network(feed["x"], tuple(self.arch))
            return jt.nn.cross_entropy_loss(logits, feed["y"])
        finally:
            for (m, k), w in zip(self.slots, saved):
                setattr(m, k, w)

    def hypergradient(self, it, stage=None):
        """(hyper-gradient, stepped weights, new momentum buffers), lazily;
        ``stage(name, vars)``, when given, is called after each of the four parts
        (``PARTS``) with that part's results (``profile_darts_memory.py`` executes them
        there)."""
        import jittor as jt
        from jboat.higher_jit import second_order_layers
        stage = stage or (lambda name, values: None)
        train, val = self.feeds[it % len(self.feeds)]
        with second_order_layers():
            train_loss = self.loss_at(self.weights, train)
            stage(PARTS[0], [train_loss])
            grads = jt.grad(train_loss, self.weights)
            stage(PARTS[1], grads)
            buffers = [MOMENTUM * b + g + WEIGHT_DECAY * w
                       for b, g, w in zip(self.buffers, grads, self.weights)]
            stepped = [w - LOWER_LR * b for w, b in zip(self.weights, buffers)]
            val_loss = self.loss_at(stepped, val)
            stage(PARTS[2], [val_loss])
            hyper = jt.grad(val_loss, self.arch)
            stage(PARTS[3], hyper)
        return hyper, stepped, buffers

    def _step_values(self, it):
        hyper, stepped, buffers = self.hypergradient(it)
        t = self.t + 1
        b1, b2 = BETAS
        arch, moments = [], []
        for a, g, (m, v) in zip(self.arch, hyper, self.adam):
            g = g + UPPER_WEIGHT_DECAY * a
            m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
            m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
            arch.append(a - UPPER_LR * m_hat / (v_hat.sqrt() + ADAM_EPS))
            moments.append((m, v))
        return hyper, arch, moments, stepped, buffers

    def run(self, compute):
        """``compute()``'s Vars, executed; on a kernel Jittor cannot compile, once more
        at the next fusion-barrier level (kept)."""
        import jittor as jt
        from jboat.higher_jit import fusion
        while True:
            values = None
            try:
                # level 2 (no fusion) is a flag read when the graph executes: sync inside
                with fusion.fusion_barriers(self.fusion_level):
                    values = compute()
                    jt.sync(flat_vars(values))
                return values
            except RuntimeError as exc:
                if not fusion.is_compile_failure(exc) or self.fusion_level >= fusion.MAX_LEVEL:
                    raise
            values = None
            gc.collect()
            self.fusion_level += 1
            print(f"floor: Jittor could not compile a fused kernel; fusion barriers at "
                  f"level {self.fusion_level}", file=sys.stderr)

    def step(self, it):
        _, arch, moments, stepped, buffers = self.run(lambda: self._step_values(it))
        self.t += 1
        for a, new in zip(self.arch, arch):
            a.update(new.detach())
        for (m, v), (new_m, new_v) in zip(self.adam, moments):
            m.update(new_m.detach())
            v.update(new_v.detach())
        for w, s in zip(self.weights, stepped):
            w.update(s.detach())
        for b, s in zip(self.buffers, buffers):
            b.update(s.detach())


def flat_vars(tree):
    """The Vars in nested lists / tuples."""
    if isinstance(tree, (list, tuple)):
        return [v for item in tree for v in flat_vars(item)]
    return [tree]


# -- workers --------------------------------------------------------------------------------
def torch_search(layers, batch, threads):
    """The PyTorch peer's ``darts_torch.SearchStep``, its weights PyTorch's own
    initialisation."""
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(SEED)
    import darts_torch as T
    network = T.Network(c=CHANNELS, classes=CLASSES, layers=layers, steps=STEPS,
                        multiplier=STEPS, primitives=PRIMITIVES)
    return T.SearchStep(network, architecture_arrays(), make_data(batch), LOWER_LR,
                        MOMENTUM, WEIGHT_DECAY, UPPER_LR, BETAS, UPPER_WEIGHT_DECAY, ADAM_EPS)


def torch_step(layers, batch, threads):
    """(step, framework) of the PyTorch peer."""
    import torch
    search = torch_search(layers, batch, threads)
    return search.step, f"torch {torch.__version__} threads={torch.get_num_threads()}"


def worker(args):
    load = os.getloadavg()[0]
    extra = {}
    if args.worker == "torch":
        step, framework = torch_step(args.layers, args.batch, args.threads)
        sync = lambda: None  # noqa: E731
    else:
        import jboat  # environment defaults before Jittor
        import jittor as jt
        network, architecture, feeds = build(args.layers, args.batch, args.mixed)
        ranks = jboat.distributed.world_size()
        if ranks > 1:                       # data parallel: this rank's share of each batch
            rank = jboat.distributed.rank()
            feeds = [tuple({k: v[rank::ranks] for k, v in f.items()} for f in pair)
                     for pair in feeds]
            jt.sync([v for pair in feeds for f in pair for v in f.values()])
            extra["ranks"] = ranks
        if args.worker == "jboat":
            step, problem = make_jboat(network, architecture, feeds, data_parallel=ranks > 1)
        else:
            floor = Floor(network, architecture, feeds)
            step = floor.step
        framework = f"jittor {jt.__version__}"
        if args.live_memory:
            jt.flags.profile_memory_enable = 1

        def sync():
            jt.sync_all(True)
    sync()
    gc.collect()
    base, _ = memory_mb()
    has_peak = reset_peak()
    times, first = [], None
    for it in range(args.warmup + args.iters):
        start = time.perf_counter()
        step(it)
        sync()
        elapsed = time.perf_counter() - start
        if it == 0:
            first = elapsed
        if it >= args.warmup:
            times.append(elapsed)
    _, peak = memory_mb()
    if args.worker == "jboat":
        extra["fusion_level"] = problem._fusion_level
    elif args.worker == "floor":
        extra["fusion_level"] = floor.fusion_level
    if args.live_memory and args.worker != "torch":
        extra["live_peak_mb"] = int(jt.get_max_memory_info().split("[!@#div1!@#]")[0]) / 2 ** 20
    if extra.get("ranks"):
        # memory: the ranks' peaks summed; time: the ranks' mean median (the step's
        # all-reduces keep them in lockstep)
        peak = float(jt.array([float(peak - base)]).mpi_all_reduce("add").item()) + base
        times = [float(jt.array([statistics.median(times)]).mpi_all_reduce("mean").item())]
        if jboat.distributed.rank() != 0:
            return
    record = {"worker": args.worker, "layers": args.layers, "batch": args.batch,
              "threads": args.threads if args.worker == "torch" else None,
              "mixed": args.mixed if args.worker != "torch" else "sum",
              "median_s": statistics.median(times), "times": times, "first_s": first,
              "peak_mb": (peak - base) if has_peak else None, "base_mb": base,
              "load": load, "framework": framework, **extra}
    sys.stdout.write("\nRESULT " + json.dumps(record) + "\n")
    sys.stdout.flush()


def relative_difference(a, b):
    """max over the arrays of ||a - b|| / ||b||."""
    import numpy as np
    return float(max(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-30)
                     for x, y in zip(a, b)))


def check_jittor_worker(args):
    """jboat's and the floor's first hyper-gradients from the same weights; writes them,
    with the weights by name, to ``args.out``."""
    import numpy as np

    import jboat  # noqa: F401
    import jittor as jt
    network, architecture, feeds = build(args.layers, args.batch, args.mixed)
    named = named_weights(network)
    start = {n: p.numpy().copy() for n, p in named}
    dtype = args.check_dtype
    if dtype == "float64":
        jt.flags.auto_convert_64_to_32 = 0          # or Jittor computes float64 in float32
        for var in [p for _, p in named] + [architecture.normal, architecture.reduce]:
            var.assign(var.float64())
        feeds = [tuple({"x": f["x"].float64(), "y": f["y"]} for f in pair) for pair in feeds]
        jt.sync([p for _, p in named] + [f["x"] for pair in feeds for f in pair])
    step, problem = make_jboat(network, architecture, feeds, return_grad=True)
    jboat_grads = [g.numpy() for g in step(0)]
    for n, p in named:                                  # jboat took the weight step
        p.update(jt.array(start[n].astype(dtype)))
    jt.sync([p for _, p in named])
    floor = Floor(network, architecture, feeds)
    floor_grads = [g.numpy() for g in floor.run(lambda: floor.hypergradient(0))[0]]
    np.savez(args.out, jboat_normal=jboat_grads[0], jboat_reduce=jboat_grads[1],
             floor_normal=floor_grads[0], floor_reduce=floor_grads[1],
             arch_normal=architecture.normal.numpy(), arch_reduce=architecture.reduce.numpy(),
             **{"w:" + n: v for n, v in start.items()})
    record = {"worker": "check-jittor", "floor_rel": relative_difference(floor_grads, jboat_grads),
              "jboat_norm": float(sum(np.linalg.norm(g) ** 2 for g in jboat_grads) ** 0.5),
              "fusion_level": [problem._fusion_level, floor.fusion_level]}
    sys.stdout.write("\nRESULT " + json.dumps(record) + "\n")


def check_torch_worker(args):
    """PyTorch's first hyper-gradient from the weights in ``args.out``, compared with
    jboat's there."""
    import numpy as np
    import torch
    import darts_torch as T
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.check_dtype)
    saved = np.load(args.out)
    network = T.Network(c=CHANNELS, classes=CLASSES, layers=args.layers, steps=STEPS,
                        multiplier=STEPS, primitives=PRIMITIVES).to(dtype)
    jittor_names = sorted(k[2:] for k in saved.files if k.startswith("w:"))
    torch_params = dict(network.named_parameters())
    if sorted(torch_params) != jittor_names:
        missing = set(jittor_names) ^ set(torch_params)
        raise SystemExit(f"parameter names differ: {sorted(missing)[:5]}")
    with torch.no_grad():
        for name, p in torch_params.items():
            value = torch.from_numpy(saved["w:" + name]).to(dtype)
            if tuple(value.shape) != tuple(p.shape):
                raise SystemExit(f"{name}: Jittor {tuple(value.shape)}, torch {tuple(p.shape)}")
            p.copy_(value)
    data = [tuple({"x": f["x"].astype(args.check_dtype), "y": f["y"]} for f in pair)
            for pair in make_data(args.batch)]
    search = T.SearchStep(network, [saved["arch_normal"].astype(args.check_dtype),
                                    saved["arch_reduce"].astype(args.check_dtype)],
                          data, LOWER_LR, MOMENTUM, WEIGHT_DECAY, UPPER_LR,
                          BETAS, UPPER_WEIGHT_DECAY, ADAM_EPS)
    torch_grads = [g.numpy() for g in search.hypergradient(0)[0]]
    jboat_grads = [saved["jboat_normal"], saved["jboat_reduce"]]
    record = {"worker": "check-torch", "torch_rel": relative_difference(torch_grads, jboat_grads)}
    sys.stdout.write("\nRESULT " + json.dumps(record) + "\n")


def run_worker(name, layers, batch, args, threads=1, out=None, ranks=1):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--layers",
           str(layers), "--batch", str(batch), "--iters", str(args.iters), "--warmup",
           str(args.warmup), "--threads", str(threads), "--mixed", args.mixed,
           "--channels", str(CHANNELS), "--side", str(SIDE),
           "--primitives", ",".join(PRIMITIVES), "--check-dtype", args.check_dtype]
    if out:
        cmd += ["--out", out]
    if args.live_memory:
        cmd.append("--live-memory")
    if ranks > 1:          # one Jittor thread per rank: the ranks are the parallelism
        return run_result_worker(mpirun_command(ranks) + cmd, ROOT, args.timeout,
                                 env={"OMP_NUM_THREADS": "1"})
    return run_result_worker(cmd, ROOT, args.timeout)


def has_torch():
    try:
        return subprocess.run([sys.executable, "-c", "import torch"], capture_output=True,
                              timeout=300).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def check(args, torch_ok):
    """Print the hyper-gradient agreement of jboat with the floor and with PyTorch."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "check.npz")
        jit = run_worker("check-jittor", 3, 8, args, out=out)
        if "error" in jit:
            print(f"hyper-gradient check: {jit['error']}", flush=True)
            return
        line = (f"hyper-gradient check (C={CHANNELS}, {SIDE}x{SIDE}, 3 cells, batch 8, "
                f"{args.check_dtype}, |jboat| = "
                f"{jit['jboat_norm']:.3e}): max relative difference floor vs jboat "
                f"{jit['floor_rel']:.1e}")
        if torch_ok:
            to = run_worker("check-torch", 3, 8, args, threads=2, out=out)
            line += ("; PyTorch vs jboat " + (f"{to['torch_rel']:.1e}" if "torch_rel" in to
                                              else to["error"]))
        print(line, flush=True)


def cell(value, fmt):
    return "n/a" if value is None else format(value, fmt)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="3x8,3x32,5x8,5x32",
                        help="LAYERSxBATCH list (C=16, 32x32 inputs)")
    parser.add_argument("--quick", action="store_true", help="only 3x8, 2 timed steps")
    parser.add_argument("--iters", type=int, default=3, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first steps")
    parser.add_argument("--check", action="store_true",
                        help="first compare the hyper-gradients (3 cells, batch 8)")
    parser.add_argument("--only", default="floor,jboat,torch",
                        help="implementations to time (comma-separated)")
    parser.add_argument("--threads", default="1,2", help="PyTorch thread counts to try")
    parser.add_argument("--mixed", choices=("sum", "stacked"), default="sum",
                        help="Jittor edges: darts_space's plain weighted sum, or "
                             "nas_darts' StackedMixedOp")
    parser.add_argument("--live-memory", action="store_true",
                        help="Jittor workers: also Jittor's peak of live Var buffers")
    parser.add_argument("--channels", type=int, default=CHANNELS,
                        help="C (16 in the issue; smaller for a diagnosis)")
    parser.add_argument("--side", type=int, default=SIDE,
                        help="input side (32 in the issue; smaller for a diagnosis)")
    parser.add_argument("--primitives", default=",".join(PRIMITIVES),
                        help="candidate operations (a comma-separated subset of DARTS' 8, "
                             "for a diagnosis)")
    parser.add_argument("--check-dtype", choices=("float64", "float32"), default="float64",
                        help="precision of --check (float32 differences include ReLU and "
                             "max-pool branches that rounding flips)")
    parser.add_argument("--ranks", type=int, default=0,
                        help="also time jboat data-parallel on this many MPI ranks (each "
                             "a share of every minibatch, BatchNorm statistics synchronised: "
                             "the same step as one process)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per process")
    parser.add_argument("--worker", choices=("jboat", "floor", "torch", "check-jittor",
                                             "check-torch"))
    parser.add_argument("--layers", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--out", help="check workers: the .npz file they share")
    args = parser.parse_args(argv)
    set_size(args.channels, args.side, args.primitives.split(","))
    if args.worker in ("check-jittor", "check-torch"):
        args.threads = int(args.threads.split(",")[0])
        return (check_jittor_worker if args.worker == "check-jittor" else check_torch_worker)(args)
    if args.worker:
        args.threads = int(args.threads.split(",")[0])
        return worker(args)
    if args.quick:
        args.configs, args.iters = "3x8", 2
    configs = [tuple(int(v) for v in c.split("x")) for c in args.configs.split(",")]
    only = args.only.split(",")
    torch_ok = "torch" in only and has_torch()
    print(f"# DARTS search step (NGD + RAD, one unrolled step): C={CHANNELS}, {STEPS} steps, "
          f"{SIDE}x{SIDE}, {len(PRIMITIVES)} candidates"
          f"{'' if len(PRIMITIVES) == 8 else ' (' + ', '.join(PRIMITIVES) + ')'}, "
          f"Jittor edges: {args.mixed}")
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.2f} at start; Python {platform.python_version()}")
    if "torch" in only and not torch_ok:
        print("(PyTorch not importable: the peer is skipped)")
    if args.check:
        check(args, torch_ok)
    rows = []
    for layers, batch in configs:
        row = {"layers": layers, "batch": batch, "load": os.getloadavg()[0]}
        for name in ("floor", "jboat"):
            if name in only:
                row[name] = run_worker(name, layers, batch, args)
                print(f"  {layers}x{batch} {name}: {json.dumps(row[name])}", flush=True)
        if args.ranks > 1 and "jboat" in only:
            row["ranks"] = run_worker("jboat", layers, batch, args, ranks=args.ranks)
            print(f"  {layers}x{batch} jboat, {args.ranks} ranks: {json.dumps(row['ranks'])}",
                  flush=True)
        if torch_ok:
            runs = []
            for threads in (int(t) for t in args.threads.split(",")):
                runs.append(run_worker("torch", layers, batch, args, threads=threads))
                print(f"  {layers}x{batch} torch: {json.dumps(runs[-1])}", flush=True)
            good = [r for r in runs if "error" not in r]
            row["torch"] = min(good, key=lambda r: r["median_s"]) if good else runs[-1]
        rows.append(row)

    def get(row, name, key):
        record = row.get(name) or {}
        return record.get(key)

    print("\n| cells | batch | floor s/step | jboat s/step | torch s/step (threads) | "
          "jboat/torch | jboat/floor | floor peak MB | jboat peak MB | torch peak MB | "
          "load at start |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        f, j, t = (get(row, n, "median_s") for n in ("floor", "jboat", "torch"))
        threads = get(row, "torch", "threads")
        print(f"| {row['layers']} | {row['batch']} | {cell(f, '.2f')} | {cell(j, '.2f')} | "
              f"{cell(t, '.2f')}{f' ({threads})' if threads else ''} | "
              f"{cell(j / t if j and t else None, '.2f')} | "
              f"{cell(j / f if j and f else None, '.2f')} | "
              f"{cell(get(row, 'floor', 'peak_mb'), '.0f')} | "
              f"{cell(get(row, 'jboat', 'peak_mb'), '.0f')} | "
              f"{cell(get(row, 'torch', 'peak_mb'), '.0f')} | {row['load']:.2f} |")
        for name in ("floor", "jboat", "torch"):
            if "error" in (row.get(name) or {}):
                print(f"  {name}: {row[name]['error']}")
    if any("ranks" in row for row in rows):
        print(f"\njboat data-parallel on {args.ranks} MPI ranks (one thread each; time: the "
              f"ranks' mean; memory: the ranks' peaks summed)\n")
        print("| cells | batch | jboat ranks s/step | ranks/torch | ranks/jboat | "
              "ranks peak MB (sum) | ranks/torch memory |")
        print("|---|---|---|---|---|---|---|")
        for row in rows:
            r, j, t = (get(row, n, "median_s") for n in ("ranks", "jboat", "torch"))
            rm, tm = get(row, "ranks", "peak_mb"), get(row, "torch", "peak_mb")
            print(f"| {row['layers']} | {row['batch']} | {cell(r, '.2f')} | "
                  f"{cell(r / t if r and t else None, '.2f')} | "
                  f"{cell(r / j if r and j else None, '.2f')} | {cell(rm, '.0f')} | "
                  f"{cell(rm / tm if rm and tm else None, '.2f')} |")
            if "error" in (row.get("ranks") or {}):
                print(f"  ranks: {row['ranks']['error']}")
    return rows


if __name__ == "__main__":
    main()
