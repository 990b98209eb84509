"""Plain vs checkpointed MAML through a long inner loop on a small conv net.

One meta-gradient per iteration of jboat's NGD+IAD (MAML: the gradient of the query
loss after K inner SGD steps w.r.t. the initial weights), through ``Problem.run_iter``
with ``return_grad: true`` (no meta step), lean (no loss tracking, no NaN guard):

* ``plain``: IAD as is (the graph of all K steps is kept);
* ``ckpt``: ``IAD: {checkpoint_every: <--every>, replay: segment}``;
* ``ckpt-step``: the same with ``replay: step``.

The task: 5-way 1-shot, ``--queries`` queries per class, one task per iteration,
random ``--side`` x ``--side`` single-channel images (NumPy seed 0: the timings do not
depend on the values). The net (LL model = UL model): 2 x [Conv2d 3x3 (``--channels``),
BatchNorm2d (training mode), ReLU, MaxPool2d 2x2] -> Linear, weights from a fixed seed.
Inner SGD lr ``--inner-lr``.

Each (mode, K) runs in a fresh worker process (bench_unroll's worker structure), which
reports ``kernels`` (new ``.so`` files in the Jittor cache during the first
iteration; ``--cold`` empties the private ``cache_name`` cache first), ``first_s``,
``warm_s`` (median of ``--iters`` after ``--warmup`` untimed ones), ``peak_mb`` (peak
RSS above the level before the first iteration) and, with ``--check``, ``rel_diff``:
the first meta-gradient against a fresh plain Problem's from the same initial weights
(computed in the same worker after the measurements). ``--float64`` runs everything in
float64 (``auto_convert_64_to_32 = 0``), where plain and checkpointed agree to ~1e-15;
``--perturb EPS`` also reports how much plain IAD's meta-gradient moves when the initial
weights change by a relative EPS (the sensitivity float32 rounding meets)::

    python bench/bench_unroll_conv.py --K 10 100 1000 --modes plain ckpt ckpt-step --check
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import bench_unroll as U  # noqa: E402
from machine import memory_mb, reset_peak  # noqa: E402

WAYS, SHOTS = 5, 1


def worker(spec):
    U.start_jittor(spec["cold"])
    import jboat
    import jittor as jt
    import numpy as np

    dtype = np.float64 if spec.get("float64") else np.float32
    if spec.get("float64"):
        jt.flags.auto_convert_64_to_32 = 0
    side, channels, K = spec["side"], spec["channels"], spec["K"]
    final = side // 2 // 2

    class SmallConv(jt.Module):
        def __init__(self):
            layers, in_channels = [], 1
            for _ in range(2):
                layers += [jt.nn.Conv2d(in_channels, channels, 3, padding=1),
                           jt.nn.BatchNorm2d(channels), jt.nn.ReLU(), jt.nn.MaxPool2d(2, 2)]
                in_channels = channels
            self.features = jt.nn.Sequential(*layers)
            self.head = jt.nn.Linear(channels * final * final, WAYS)

        def execute(self, x):
            return self.head(self.features(x).reshape(x.shape[0], -1))

    def trainable(model):
        return [p for p in model.parameters() if not p.is_stop_grad()]

    rng = np.random.RandomState(1)
    init = [rng.uniform(-0.3, 0.3, p.shape).astype(dtype) for p in trainable(SmallConv())]
    data = np.random.RandomState(0)
    support = {"x": jt.array(data.randn(WAYS * SHOTS, 1, side, side).astype(dtype)),
               "y": jt.array(np.repeat(np.arange(WAYS), SHOTS).astype(np.int32))}
    query = {"x": jt.array(data.randn(WAYS * spec["queries"], 1, side, side)
                           .astype(dtype)),
             "y": jt.array(np.repeat(np.arange(WAYS), spec["queries"]).astype(np.int32))}
    jt.sync(list(support.values()) + list(query.values()))

    def ce(model, feed, **kwargs):
        return jt.nn.cross_entropy_loss(model(feed["x"], **kwargs), feed["y"])

    def lower_loss(feed, upper_model, lower_model, **kwargs):
        return ce(lower_model, feed, **kwargs)

    def upper_loss(feed, upper_model, lower_model, **kwargs):
        return ce(lower_model, feed, **kwargs)

    def maml(checkpoint, start=init):
        model = SmallConv()
        params = trainable(model)
        for p, w in zip(params, start):
            p.assign(jt.array(w))
        if spec.get("float64"):   # BatchNorm's running statistics too
            for p in model.parameters():
                if p.dtype != "float64":
                    p.assign(p.float64())
        config = {"gm_op": ["NGD"], "na_op": ["IAD"], "lower_iters": K,
                  "track_losses": False, "nan_guard": False, "return_grad": True,
                  "lower_level_model": model, "upper_level_model": model,
                  "lower_level_var": params, "upper_level_var": params,
                  "lower_level_opt": jt.optim.SGD(params, lr=spec["inner_lr"]),
                  "upper_level_opt": jt.optim.Adam(params, lr=1e-3)}
        if checkpoint is not None:
            config["IAD"] = {"checkpoint_every": checkpoint[0], "replay": checkpoint[1]}
        problem = jboat.Problem(config, {"lower_level_loss": lower_loss,
                                         "upper_level_loss": upper_loss})
        return problem.build_ll_solver().build_ul_solver()

    mode = spec["mode"]
    checkpoint = None if mode == "plain" else (
        spec["every"], "step" if mode == "ckpt-step" else "segment")

    def run():
        if not hasattr(run, "problem"):
            run.problem = maml(checkpoint)
        grads, _ = run.problem.run_iter(support, query, 0)
        return [g.numpy() for g in grads]

    before = U._kernel_files(jt.flags.cache_path)
    base_rss, _ = memory_mb()
    reset_peak()
    t0 = time.perf_counter()
    g = run()
    first = time.perf_counter() - t0
    kernels = len(U._kernel_files(jt.flags.cache_path) - before)
    for _ in range(spec["warmup"]):
        run()
    times = []
    for _ in range(spec["iters"]):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    peak = memory_mb()[1] - base_rss
    flat = np.concatenate([a.ravel() for a in g])
    record = {**spec, "kernels": kernels, "first_s": first,
              "warm_s": statistics.median(times) if times else None, "times": times,
              "peak_mb": peak, "grad_norm": float(np.linalg.norm(flat))}
    if checkpoint is not None and spec["check"]:
        ref = maml(None).run_iter(support, query, 0)[0]
        ref = np.concatenate([r.numpy().ravel() for r in ref])
        record["rel_diff"] = float(np.linalg.norm(flat - ref) / np.linalg.norm(ref))
    if spec.get("perturb"):
        # sensitivity of plain IAD itself: the same from initial weights perturbed by a
        # relative ``perturb`` (float32 rounding differences grow the same way)
        noise = np.random.RandomState(2)
        start = [w * (1 + spec["perturb"] * noise.randn(*w.shape)).astype(dtype)
                 for w in init]
        ref = np.concatenate([r.numpy().ravel() for r in maml(None, start)
                              .run_iter(support, query, 0)[0]])
        plain = np.concatenate([r.numpy().ravel() for r in maml(None)
                                .run_iter(support, query, 0)[0]])
        record["perturbed_rel_diff"] = float(np.linalg.norm(plain - ref) / np.linalg.norm(ref))
    print("RESULT " + json.dumps(record), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--K", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--modes", nargs="+", default=["plain", "ckpt", "ckpt-step"],
                        choices=["plain", "ckpt", "ckpt-step"])
    parser.add_argument("--every", default="auto", help="checkpoint interval (int or auto)")
    parser.add_argument("--side", type=int, default=14, help="image side (pixels)")
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--queries", type=int, default=3, help="queries per class")
    parser.add_argument("--inner-lr", type=float, default=0.05)
    parser.add_argument("--iters", type=int, default=3, help="timed warm iterations")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    parser.add_argument("--cold", action="store_true",
                        help="empty the cache_name cache's jit folder before each run")
    parser.add_argument("--check", action="store_true",
                        help="ckpt: rel_diff of the meta-gradient against plain IAD")
    parser.add_argument("--perturb", type=float, default=0.0,
                        help="also report the meta-gradient change of plain IAD when "
                             "the initial weights change by this relative amount")
    parser.add_argument("--float64", action="store_true",
                        help="float64 weights and data (auto_convert_64_to_32 off)")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds one worker may run before it is killed")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return
    every = args.every if args.every == "auto" else int(args.every)
    print(f"{'mode':9} {'K':>5} {'c':>4} {'kernels':>7} {'first s':>8} {'warm s':>8} "
          f"{'peak MiB':>8}  rel_diff")
    for K in args.K:
        for mode in args.modes:
            spec = {"mode": mode, "K": K, "every": every, "side": args.side,
                    "channels": args.channels, "queries": args.queries,
                    "inner_lr": args.inner_lr, "iters": args.iters, "warmup": args.warmup,
                    "cold": args.cold, "check": args.check, "perturb": args.perturb,
                    "float64": args.float64}
            r, error = U.launch(__file__, spec, args.timeout)
            if r is None:
                print(f"{mode:9} {K:>5} failed: {error}", flush=True)
                continue
            c = "-" if mode == "plain" else str(
                every if every != "auto" else max(1, math.ceil(math.sqrt(K))))
            warm = "-" if r["warm_s"] is None else f"{r['warm_s']:.3f}"
            print(f"{mode:9} {K:>5} {c:>4} {r['kernels']:>7} {r['first_s']:>8.2f} {warm:>8} "
                  f"{r['peak_mb']:>8.1f}  {r.get('rel_diff', '')}", flush=True)
            print("JSON " + json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
