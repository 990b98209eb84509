"""Times one implementation on the L2 problem; run by bench_l2.py in a subprocess.

    python bench/worker.py --impl jboat --size large --lower-iters 5 --combos NGD+RAD,NGD+CG

Prints one ``RESULT {json}`` line per combination: the first call's time (kernel
compilation, Jittor's disk cache permitting, and first-touch allocations), the
median seconds per ``run_iter`` after warm-up, and the peak resident memory. Implementations: ``jboat``, ``jboat-lean``
(``track_losses``/``nan_guard`` off), ``floor`` (hand-written Jittor), ``boat-torch``
and ``boat-jit`` (upstream packages, when importable), and ``paired`` (jboat, jboat-lean
and the floor interleaved iteration by iteration in one process, for their ratios).
In timing runs the peak only shows growth beyond the warm-up (allocators keep what
they took); ``--memory`` with one combination per fresh process gives the real peak.
"""

import argparse
import gc
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import l2_problem as P  # noqa: E402
from machine import memory_mb, reset_peak  # noqa: E402


def parse_combo(text):
    """``"DI+NGD+RAD"`` -> (gm_op, na_op, fo_op) using the operator roles."""
    names = text.split("+")
    gm_names = ("NGD", "GDA", "DI", "DM")
    fo_names = ("VSO", "VFO", "MESO", "PGDO", "ALTO", "GAFFO")
    gm = [n for n in names if n in gm_names]
    fo = [n for n in names if n in fo_names]
    na = [n for n in names if n not in gm_names and n not in fo_names]
    return (gm or None), (na or None), (fo[0] if fo else None)


# -- runners: make(combo, K, size, data) -> (step(), sync()) ----------------------------------
def jittor_runner(impl):
    import jboat  # noqa: F401  (environment defaults before Jittor)
    import jittor as jt
    import jittor_l2 as J

    def make(combo, K, size, data):
        train, val = J.to_jittor(data[0]), J.to_jittor(data[1])
        if impl == "floor":
            (method,) = [n for n in combo.split("+") if n != "NGD"]
            floor = J.Floor(method, K, size)
            return (lambda it: floor.run_iter(train, val)), jt.sync_all
        gm, na, fo = parse_combo(combo)
        problem = J.jboat_problem(gm, na, K, size, fo_op=fo, lean=impl == "jboat-lean")
        return (lambda it: problem.run_iter(train, val, it)), jt.sync_all

    def cleanup():
        jt.sync_all()
        jt.gc()
    return make, cleanup, "jittor " + jt.__version__ + (
        " use_mkl=" + os.environ.get("use_mkl", "?"))


def boat_torch_runner(threads=None):
    import torch
    import torch_l2 as T

    if threads:
        torch.set_num_threads(threads)

    def make(combo, K, size, data):
        step = T.boat_torch_problem(combo, K, size, data)
        return step, (lambda: None)

    return make, gc.collect, f"torch {torch.__version__} threads={torch.get_num_threads()}"


def _jboat_env_defaults():
    """jboat's Jittor environment defaults without importing jboat (upstream runs)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "_jboat_env", os.path.join(os.path.dirname(HERE), "jboat", "_env.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.configure_jittor_environment()


def boat_jit_runner():
    _jboat_env_defaults()
    import jittor as jt
    import boatjit_l2 as BJ

    def make(combo, K, size, data):
        return BJ.boat_jit_problem(combo, K, size, data), jt.sync_all

    def cleanup():
        jt.sync_all()
        jt.gc()
    return make, cleanup, "jittor " + jt.__version__ + " use_mkl=" + os.environ.get("use_mkl", "?")


def measure(make, cleanup, combo, K, size, data, iters, warmup, memory=False):
    step, sync = make(combo, K, size, data)
    if memory:   # a fresh process: the peak from before the first call
        gc.collect()
        base_rss, _ = memory_mb()
        has_peak = reset_peak()
    start = time.perf_counter()
    step(0)
    sync()
    first = time.perf_counter() - start
    for it in range(1, warmup):
        step(it)
        sync()
    if not memory:
        gc.collect()
        cleanup()
        base_rss, _ = memory_mb()
        has_peak = reset_peak()
    times = []
    for it in range(warmup, warmup + iters):
        start = time.perf_counter()
        step(it)
        sync()
        times.append(time.perf_counter() - start)
    _, peak = memory_mb()
    return {"first_s": first, "median_s": statistics.median(times), "times": times,
            "peak_mb": (peak - base_rss) if has_peak else None, "rss_mb": base_rss}


def measure_paired(combo, K, size, data, iters, warmup):
    """jboat (defaults and lean) and the floor, one iteration each in turn, in one
    process: machine noise hits all three alike, so the ratios are steadier than
    ratios of separate runs."""
    make, cleanup, _ = jittor_runner("jboat")
    make_lean, _, _ = jittor_runner("jboat-lean")
    make_floor, _, _ = jittor_runner("floor")
    steps = {"floor": make_floor(combo, K, size, data), "jboat-lean": make_lean(combo, K, size, data),
             "jboat": make(combo, K, size, data)}
    times = {name: [] for name in steps}
    for it in range(warmup + iters):
        for name, (step, sync) in steps.items():
            start = time.perf_counter()
            step(it)
            sync()
            if it >= warmup:
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    cleanup()
    return {"median_s": medians, "jboat/floor": medians["jboat"] / medians["floor"],
            "jboat-lean/floor": medians["jboat-lean"] / medians["floor"]}


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", required=True,
                        choices=("jboat", "jboat-lean", "floor", "boat-torch", "boat-jit",
                                 "paired"))
    parser.add_argument("--size", default="large", choices=sorted(P.SIZES))
    parser.add_argument("--lower-iters", type=int, default=5)
    parser.add_argument("--combos", required=True, help="comma-separated, e.g. NGD+RAD,NGD+CG")
    parser.add_argument("--iters", type=int, default=9, help="timed run_iter calls")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls (the first is reported)")
    parser.add_argument("--memory", action="store_true",
                        help="peak memory from before the first call (use one combination "
                             "per process: the allocators keep what earlier ones took)")
    parser.add_argument("--series", action="store_true",
                        help="print every per-iteration time (flatness check)")
    parser.add_argument("--threads", type=int, default=None,
                        help="boat-torch: torch.set_num_threads (default: PyTorch's choice)")
    args = parser.parse_args(argv)
    if args.impl in ("jboat", "jboat-lean", "floor", "paired"):
        make, cleanup, framework = jittor_runner("floor" if args.impl == "paired" else args.impl)
    elif args.impl == "boat-torch":
        make, cleanup, framework = boat_torch_runner(args.threads)
    else:
        make, cleanup, framework = boat_jit_runner()
    data = P.make_data(args.size)
    for combo in args.combos.split(","):
        record = {"impl": args.impl, "combo": combo, "size": args.size,
                  "lower_iters": args.lower_iters, "framework": framework,
                  "threads": args.threads}
        try:
            if args.impl == "paired":
                record.update(measure_paired(combo, args.lower_iters, args.size, data,
                                             args.iters, args.warmup))
            else:
                record.update(measure(make, cleanup, combo, args.lower_iters, args.size, data,
                                      args.iters, args.warmup, memory=args.memory))
            if not args.series:
                record.pop("times", None)
        except Exception as exc:   # a combination an implementation lacks
            record["error"] = f"{type(exc).__name__}: {exc}"[:300]
        # upstream packages print progress without newlines: start a fresh line
        sys.stdout.write("\nRESULT " + json.dumps(record) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
