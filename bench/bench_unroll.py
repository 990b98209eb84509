"""Plain vs checkpointed unrolled hypergradients: compiled kernels, peak memory, time.

One hypergradient of the L2 problem (bench/l2_problem.py): K SGD steps on
``(W, b)``, then ``dF(W_K, b_K)/dx`` by

* ``plain``: ``jt.grad`` through the whole unrolled graph (jboat's RAD today);
* ``ckpt``: :func:`jboat.utils.checkpoint.checkpointed_grad` (every ``c`` steps a
  checkpoint, segments recomputed in the backward pass, one VJP per segment);
* ``ckpt-step``: the same with ``replay="step"`` (one single-step VJP per step);
* ``jboat``: one ``run_iter`` of jboat's NGD+RAD Problem (lean: no loss tracking),
  including its Adam step on x (for the kernel count of the library as it is).

Each (mode, K) runs in a fresh worker process, which reports

* ``kernels``: Jittor kernels compiled during the first hypergradient (new ``.so``
  files in the cache's ``jit`` folder); on a cold cache this is the number of
  distinct kernels one hypergradient needs;
* ``first_s``: time of the first hypergradient (compilation included);
* ``warm_s``: median time of the next ones;
* ``peak_mb``: peak resident memory of the hypergradient runs above the RSS before
  the first (VmHWM, reset through /proc/self/clear_refs once the data exist);
* ``rel_diff``: ``|g - g_plain| / |g_plain|`` for ckpt (computed in the same worker).

Cold cache: ``--cold`` empties the ``jit`` folder of the Jittor cache selected by the
environment variable ``cache_name`` before each run. It refuses to run without a
``cache_name`` of your own (never the shared default cache), e.g.::

    cache_name=ckbase python bench/bench_unroll.py --cold --K 10 100 1000
    python bench/bench_unroll.py --K 10 100 --modes plain ckpt --variants none sync

(``cache_name`` must be a cache whose Jittor core is already built; a new name
compiles the core first, a few minutes.)

Variants (what Jittor sees between steps):
    none      plain lazy graph;
    sync      ``jt.sync`` the new weights after every step (plain: graph kept);
    stopfuse  ``stop_fuse()`` on the new weights after every step;
    nofuse    ``jt.flags.no_fuse = 1`` (no operator fusion at all).
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import l2_problem as P  # noqa: E402
from machine import memory_mb, reset_peak  # noqa: E402


def _kernel_files(cache_path):
    folder = os.path.join(cache_path, "jit")
    return {n for n in os.listdir(folder) if n.endswith(".so")} if os.path.isdir(folder) else set()


def worker(spec):
    cold = spec["cold"]
    if cold:
        name = os.environ.get("cache_name", "")
        if name in ("", "master", "default"):
            raise SystemExit("--cold empties a Jittor cache: set cache_name to a cache of "
                             "your own (not the shared one).")
    import jboat  # noqa: F401  (environment defaults before Jittor)
    import jittor as jt
    import numpy as np

    from jboat.utils import checkpoint as ck

    jt.flags.log_silent = 1
    if cold:
        folder = os.path.join(jt.flags.cache_path, "jit")
        for n in os.listdir(folder):
            os.remove(os.path.join(folder, n))
    if spec["variant"] == "nofuse":
        jt.flags.no_fuse = 1
    n_train, n_val, features, classes = P.SIZES[spec["size"]]
    if spec.get("features"):
        features = spec["features"]
    rng = np.random.RandomState(0)
    train = {"x": jt.array(rng.randn(n_train, features).astype(np.float32)),
             "y": jt.array(rng.randint(classes, size=n_train).astype(np.int32))}
    val = {"x": jt.array(rng.randn(n_val, features).astype(np.float32)),
           "y": jt.array(rng.randint(classes, size=n_val).astype(np.int32))}
    x = jt.full((features,), P.INIT_LOG_STRENGTH)
    s0 = [jt.zeros((features, classes)), jt.zeros((classes,))]
    jt.sync([x] + s0 + list(train.values()) + list(val.values()))
    K, lr, variant = spec["K"], P.LL_LR, spec["variant"]

    def step(state, j):
        W, b = state
        f = (jt.nn.cross_entropy_loss(jt.matmul(train["x"], W) + b, train["y"])
             + 0.5 * (jt.exp(x).reshape(-1, 1) * W * W).sum())
        gW, gb = jt.grad(f, [W, b], True)
        new = [W - lr * gW, b - lr * gb]
        if variant == "sync":
            jt.sync(new)
        elif variant == "stopfuse":
            new = [v.stop_fuse() for v in new]
        return new

    def terminal(state):
        return jt.nn.cross_entropy_loss(jt.matmul(val["x"], state[0]) + state[1], val["y"])

    def plain():
        state = list(s0)
        for j in range(K):
            state = step(state, j)
        g = jt.grad(terminal(state), x)
        g.sync()
        return g

    def checkpointed():
        g, _, _ = ck.checkpointed_grad(step, s0, [x], K, terminal, every=spec["every"],
                                       replay="step" if spec["mode"] == "ckpt-step" else
                                       "segment")
        return g[0]

    def jboat_rad():
        import jittor_l2 as J
        if not hasattr(jboat_rad, "problem"):
            jboat_rad.problem = J.jboat_problem(["NGD"], ["RAD"], K, spec["size"], lean=True)
            data = P.make_data(spec["size"])
            jboat_rad.feeds = J.to_jittor(data[0]), J.to_jittor(data[1])
        jboat_rad.problem.run_iter(*jboat_rad.feeds, 0)
        jt.sync_all()
        return x

    run = {"plain": plain, "ckpt": checkpointed, "ckpt-step": checkpointed,
           "jboat": jboat_rad}[spec["mode"]]
    before = _kernel_files(jt.flags.cache_path)
    base_rss, _ = memory_mb()
    reset_peak()
    t0 = time.perf_counter()
    g = run().numpy()
    first = time.perf_counter() - t0
    new_kernels = sorted(_kernel_files(jt.flags.cache_path) - before)
    kernels = len(new_kernels)
    if spec.get("dump"):
        name = f"{spec['mode']}-{spec['variant']}-K{K}.txt"
        with open(os.path.join(spec["dump"], name), "w") as handle:
            handle.write("\n".join(new_kernels) + "\n")
    times = []
    for _ in range(spec["iters"]):
        t0 = time.perf_counter()
        run().numpy()
        times.append(time.perf_counter() - t0)
    # Jittor's allocator keeps freed blocks, so the process peak is the peak of any run
    peak = memory_mb()[1] - base_rss
    record = {**spec, "kernels": kernels, "first_s": first,
              "warm_s": statistics.median(times) if times else None,
              "peak_mb": peak, "grad_norm": float(np.linalg.norm(g))}
    if spec["mode"] == "jboat":
        record["grad_norm"] = None
    if spec["mode"].startswith("ckpt") and spec.get("check"):
        ref = plain().numpy()
        record["rel_diff"] = float(np.linalg.norm(g - ref) / np.linalg.norm(ref))
    print("RESULT " + json.dumps(record), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--K", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--modes", nargs="+", default=["plain", "ckpt"],
                        choices=["plain", "ckpt", "ckpt-step", "jboat"])
    parser.add_argument("--variants", nargs="+", default=["none"],
                        choices=["none", "sync", "stopfuse", "nofuse"])
    parser.add_argument("--every", default="auto", help="checkpoint interval (int or auto)")
    parser.add_argument("--size", default="small", choices=sorted(P.SIZES))
    parser.add_argument("--features", type=int, default=0,
                        help="override the feature count (variable size = features x 11)")
    parser.add_argument("--iters", type=int, default=2, help="warm iterations")
    parser.add_argument("--cold", action="store_true",
                        help="empty the cache_name cache's jit folder before each run")
    parser.add_argument("--check", action="store_true",
                        help="ckpt: also compute the plain gradient and report rel_diff")
    parser.add_argument("--dump", default="",
                        help="folder to write the names of the compiled kernels to")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return
    every = args.every if args.every == "auto" else int(args.every)
    print(f"{'mode':9} {'variant':9} {'K':>5} {'c':>4} {'kernels':>7} {'first s':>8} "
          f"{'warm s':>8} {'peak MiB':>8}  rel_diff")
    for K in args.K:
        for mode in args.modes:
            for variant in args.variants:
                spec = {"mode": mode, "variant": variant, "K": K, "every": every,
                        "size": args.size, "features": args.features, "iters": args.iters,
                        "cold": args.cold, "check": args.check,
                        "dump": os.path.abspath(args.dump) if args.dump else ""}
                out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker",
                                      json.dumps(spec)], capture_output=True, text=True)
                lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
                if not lines:
                    print(f"{mode:9} {variant:9} {K:>5} failed: {out.stderr[-800:]}")
                    continue
                r = json.loads(lines[-1][7:])
                c = "-" if not mode.startswith("ckpt") else str(
                    every if every != "auto" else max(1, math.ceil(math.sqrt(K))))
                warm = "-" if r["warm_s"] is None else f"{r['warm_s']:.3f}"
                peak = "-" if r["peak_mb"] is None else f"{r['peak_mb']:.1f}"
                print(f"{mode:9} {variant:9} {K:>5} {c:>4} {r['kernels']:>7} "
                      f"{r['first_s']:>8.2f} {warm:>8} {peak:>8}  {r.get('rel_diff', '')}",
                      flush=True)


if __name__ == "__main__":
    main()
