"""Plain vs checkpointed unrolled hypergradients: compiled kernels, peak memory, time.

One hypergradient of the L2 problem (bench/l2_problem.py): K SGD steps on
``(W, b)``, then ``dF(W_K, b_K)/dx`` by

* ``plain``: ``jt.grad`` through the whole unrolled graph (jboat's RAD today);
* ``ckpt``: :func:`jboat.utils.checkpoint.checkpointed_grad` (every ``c`` steps a
  checkpoint, segments recomputed in the backward pass, one VJP per segment);
* ``ckpt-step``: the same with ``replay="step"`` (one single-step VJP per step);
* ``jboat``: one ``run_iter`` of jboat's NGD+RAD Problem (lean: no loss tracking,
  no NaN guard; ``return_grad: true``, so the iteration returns the hypergradient
  and takes no UL step);
* ``jboat-ckpt``: the same Problem with ``RAD: {checkpoint_every: <--every>,
  replay: segment}``;
* ``jboat-ckpt-step``: the same with ``replay: step``.

Each (mode, K) runs in a fresh worker process, which reports

* ``kernels``: Jittor kernels compiled during the first hypergradient (new ``.so``
  files in the cache's ``jit`` folder); on a cold cache this is the number of
  distinct kernels one hypergradient needs;
* ``first_s``: time of the first hypergradient (compilation included);
* ``warm_s``: median time of the next ``--iters`` ones (after ``--warmup`` untimed
  ones: jboat's second iteration starts from warm-started weights and may compile a
  few more kernels);
* ``peak_mb``: peak resident memory of the hypergradient runs above the RSS before
  the first (VmHWM, reset through /proc/self/clear_refs once the data exist);
* ``rel_diff`` (``--check``): ``|g - g_plain| / |g_plain|`` of the first hypergradient,
  against plain reverse mode computed in the same worker after the measurements
  (``plain`` for ``ckpt*``; for ``jboat-ckpt*`` a fresh plain NGD+RAD Problem from
  the same initial values).

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


def start_jittor(cold):
    """Import jboat and Jittor (quiet); with ``cold``, empty the ``jit`` folder of the
    private cache named by the environment variable ``cache_name`` first."""
    if cold:
        name = os.environ.get("cache_name", "")
        if name in ("", "master", "default"):
            raise SystemExit("--cold empties a Jittor cache: set cache_name to a cache of "
                             "your own (not the shared one).")
    import jboat  # noqa: F401  (environment defaults before Jittor)
    import jittor as jt

    jt.flags.log_silent = 1
    if cold:
        folder = os.path.join(jt.flags.cache_path, "jit")
        for n in os.listdir(folder):
            os.remove(os.path.join(folder, n))


def worker(spec):
    start_jittor(spec["cold"])
    import jboat  # noqa: F401
    import jittor as jt
    import numpy as np

    from jboat.utils import checkpoint as ck

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

    def l2_problem(checkpoint):
        """NGD+RAD on the worker's data (``checkpoint``: None or ``(every, replay)``)."""
        import jittor_l2 as J
        lower, upper = J.LogisticRegression(features, classes), J.LogStrength(features)
        config = {
            "gm_op": ["NGD"], "na_op": ["RAD"], "lower_iters": K,
            "track_losses": False, "nan_guard": False, "return_grad": True,
            "lower_level_model": lower, "upper_level_model": upper,
            "lower_level_var": list(lower.parameters()),
            "upper_level_var": list(upper.parameters()),
            "lower_level_opt": jt.optim.SGD(lower.parameters(), lr=P.LL_LR),
            "upper_level_opt": jt.optim.Adam(upper.parameters(), lr=P.UL_LR)}
        if checkpoint is not None:
            config["RAD"] = {"checkpoint_every": checkpoint[0], "replay": checkpoint[1]}
        problem = jboat.Problem(config, {"lower_level_loss": J.lower_loss,
                                         "upper_level_loss": J.upper_loss})
        problem.build_ll_solver().build_ul_solver()
        return problem

    def jboat_rad():
        if not hasattr(jboat_rad, "problem"):
            mode = spec["mode"]
            jboat_rad.problem = l2_problem(
                None if mode == "jboat" else
                (spec["every"], "step" if mode == "jboat-ckpt-step" else "segment"))
        grads, _ = jboat_rad.problem.run_iter(train, val, 0)
        return grads[0]

    run = {"plain": plain, "ckpt": checkpointed, "ckpt-step": checkpointed,
           "jboat": jboat_rad, "jboat-ckpt": jboat_rad,
           "jboat-ckpt-step": jboat_rad}[spec["mode"]]
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
    for _ in range(spec.get("warmup", 0)):   # untimed (e.g. new kernels of a warm start)
        run().numpy()
    times = []
    for _ in range(spec["iters"]):
        t0 = time.perf_counter()
        run().numpy()
        times.append(time.perf_counter() - t0)
    # Jittor's allocator keeps freed blocks, so the process peak is the peak of any run
    peak = memory_mb()[1] - base_rss
    record = {**spec, "kernels": kernels, "first_s": first,
              "warm_s": statistics.median(times) if times else None, "times": times,
              "peak_mb": peak, "grad_norm": float(np.linalg.norm(g))}
    if "ckpt" in spec["mode"] and spec.get("check"):
        if spec["mode"].startswith("jboat"):
            ref = l2_problem(None).run_iter(train, val, 0)[0][0].numpy()
        else:
            ref = plain().numpy()
        record["rel_diff"] = float(np.linalg.norm(g - ref) / np.linalg.norm(ref))
    print("RESULT " + json.dumps(record), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--K", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--modes", nargs="+", default=["plain", "ckpt"],
                        choices=["plain", "ckpt", "ckpt-step", "jboat", "jboat-ckpt",
                                 "jboat-ckpt-step"])
    parser.add_argument("--variants", nargs="+", default=["none"],
                        choices=["none", "sync", "stopfuse", "nofuse"])
    parser.add_argument("--every", default="auto", help="checkpoint interval (int or auto)")
    parser.add_argument("--size", default="small", choices=sorted(P.SIZES))
    parser.add_argument("--features", type=int, default=0,
                        help="override the feature count (variable size = features x 11)")
    parser.add_argument("--iters", type=int, default=2, help="warm iterations")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed iterations between the first and the timed ones")
    parser.add_argument("--cold", action="store_true",
                        help="empty the cache_name cache's jit folder before each run")
    parser.add_argument("--check", action="store_true",
                        help="ckpt: also compute the plain gradient and report rel_diff")
    parser.add_argument("--dump", default="",
                        help="folder to write the names of the compiled kernels to")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds one worker may run before it is killed")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return
    every = args.every if args.every == "auto" else int(args.every)
    print(f"{'mode':15} {'variant':9} {'K':>5} {'c':>4} {'kernels':>7} {'first s':>8} "
          f"{'warm s':>8} {'peak MiB':>8}  rel_diff")
    for K in args.K:
        for mode in args.modes:
            for variant in args.variants:
                spec = {"mode": mode, "variant": variant, "K": K, "every": every,
                        "size": args.size, "features": args.features, "iters": args.iters,
                        "cold": args.cold, "check": args.check, "warmup": args.warmup,
                        "dump": os.path.abspath(args.dump) if args.dump else ""}
                r, error = launch(__file__, spec, args.timeout)
                if r is None:
                    print(f"{mode:15} {variant:9} {K:>5} failed: {error}", flush=True)
                    continue
                c = "-" if "ckpt" not in mode else str(
                    every if every != "auto" else max(1, math.ceil(math.sqrt(K))))
                warm = "-" if r["warm_s"] is None else f"{r['warm_s']:.3f}"
                peak = "-" if r["peak_mb"] is None else f"{r['peak_mb']:.1f}"
                print(f"{mode:15} {variant:9} {K:>5} {c:>4} {r['kernels']:>7} "
                      f"{r['first_s']:>8.2f} {warm:>8} {peak:>8}  {r.get('rel_diff', '')}",
                      flush=True)
                print("JSON " + json.dumps(r), flush=True)


def launch(script, spec, timeout):
    """Run ``script --worker <spec>`` in a fresh process: ``(record, None)`` or
    ``(None, why)`` (its stderr tail, or the timeout)."""
    try:
        out = subprocess.run([sys.executable, os.path.abspath(script), "--worker",
                              json.dumps(spec)], capture_output=True, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s"
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        return None, out.stderr[-800:]
    return json.loads(lines[-1][7:]), None


if __name__ == "__main__":
    main()
