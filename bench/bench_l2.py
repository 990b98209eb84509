"""Benchmark: jboat vs a hand-written Jittor floor vs upstream BOAT/JBOAT, L2 problem.

    python bench/bench_l2.py                    # everything, a few minutes on 2 cores
    python bench/bench_l2.py --quick            # large size, K=5, shared operators
    python bench/bench_l2.py --flat-only        # the 200-iteration DI+NGD+RAD series

Not a test: it prints tables. Each implementation runs in its own subprocess
(bench/worker.py), so compiled kernels, allocators and thread pools do not mix:

* time: median seconds per ``run_iter`` after warm-up (synchronised), and the
  first call separately (Jittor compiles kernels there unless its disk cache has
  them; the column says ``first``);
* memory: peak resident memory above the level before the first call, measured in
  a fresh process per combination (large size);
* ratios: jboat / hand-written floor and jboat / upstream BOAT (PyTorch) for the
  shared operators;
* flatness: per-iteration time of DI+NGD+RAD over ``--flat-iters`` iterations.

Implementations (``--impls``): ``jboat`` (defaults: loss tracking and NaN guard on),
``jboat-lean`` (``track_losses: false, nan_guard: false``), ``floor``
(bench/jittor_l2.py ``Floor``), ``boat-torch`` (run with 1 and with 2 PyTorch threads,
``--torch-threads``, in separate processes; the faster is kept: PyTorch's 2-thread CPU
kernels can be several times slower than 1 thread on a 2-vCPU machine) and, on request, ``boat-jit`` (PyPI
1.1.1, one bounded process per combination) when importable: ``boat-jit`` by this
Python, ``boat-torch`` by this Python or by
``--torch-python`` / ``$JBOAT_BENCH_TORCH_PYTHON`` (e.g. a virtual environment
holding torch, higher and boat-torch; see docs/performance.md).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import l2_problem as P  # noqa: E402
from machine import cpu_name  # noqa: E402

SHARED = ["NGD+RAD", "NGD+CG", "NGD+NS", "NGD+FD", "NGD+IGA"]
#: further jboat combinations on this problem (IAD needs LL and UL models alike;
#: DM only with K=1; RGT cannot precede FD)
JBOAT_EXTRA = ["RGT+NGD+RAD", "PTT+NGD+RAD", "FOA+NGD+RAD", "GDA+NGD+RAD", "DI+NGD+RAD",
               "GDA+NGD+CG", "DI+NGD+CG", "DI+NGD+NS", "DI+NGD+FD", "DI+NGD+IGA",
               "PTT+NGD+CG", "FOA+NGD+IGA"]
MEMORY_COMBOS = SHARED + ["RGT+NGD+RAD"]


def _load_env():
    import importlib.util
    spec = importlib.util.spec_from_file_location("_jboat_env", os.path.join(ROOT, "jboat", "_env.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _importable(python, module):
    try:
        return subprocess.run([python, "-c", f"import {module}"], capture_output=True,
                              timeout=120, env=_env_for_imports()).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _env_for_imports():
    env = dict(os.environ)
    env.update({k: v for k, v in _load_env().default_jittor_environment().items()
                if k not in env})
    return env


def run_worker(python, impl, size, K, combos, iters, warmup, memory=False, series=False,
               timeout=900, threads=None):
    cmd = [python, os.path.join(HERE, "worker.py"), "--impl", impl, "--size", size,
           "--lower-iters", str(K), "--combos", ",".join(combos), "--iters", str(iters),
           "--warmup", str(warmup)]
    if threads:
        cmd += ["--threads", str(threads)]
    if memory:
        cmd.append("--memory")
    if series:
        cmd.append("--series")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return [{"impl": impl, "combo": c, "size": size, "lower_iters": K,
                 "error": f"timed out after {timeout} s"} for c in combos]
    records = [json.loads(line[line.index("RESULT {") + len("RESULT "):])
               for line in proc.stdout.splitlines() if "RESULT {" in line]
    if not records:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        records = [{"impl": impl, "combo": c, "size": size, "lower_iters": K,
                    "error": f"worker failed: {tail[-300:]}"} for c in combos]
    return records


def run_best_threads(python, thread_counts, size, K, combos, iters, warmup):
    """boat-torch once per thread count (separate processes); per combination the
    faster record, marked with its thread count and every count's median."""
    runs = [run_worker(python, "boat-torch", size, K, combos, iters, warmup, threads=t)
            for t in thread_counts]
    best = []
    for records in zip(*runs):
        good = [r for r in records if "error" not in r]
        if not good:
            best.append(records[0])
            continue
        fastest = dict(min(good, key=lambda r: r["median_s"]))
        fastest["median_s_by_threads"] = {r["threads"]: r["median_s"] for r in good}
        best.append(fastest)
    return best


def machine_line():
    cpu = cpu_name()
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    usable, reason = _load_env().onednn_status()
    return (f"machine: {cpu}, {os.cpu_count()} cores, load average {load[0]:.2f} at start; "
            f"Python {platform.python_version()}; Jittor oneDNN: "
            f"{'yes' if usable else 'no'} ({reason}); OMP_NUM_THREADS="
            f"{os.environ.get('OMP_NUM_THREADS', 'unset')}")


def fmt_ms(record, key="median_s"):
    if "error" in record:
        return "error"
    return f"{1e3 * record[key]:.1f}"


def print_time_table(records, sizes, Ks, impls):
    combos = []
    for r in records:
        if r["combo"] not in combos:
            combos.append(r["combo"])
    index = {(r["impl"], r["combo"], r["size"], r["lower_iters"]): r for r in records}
    combos = [c for c in combos if any(r["combo"] == c and r["impl"] in impls for r in records)]
    for size in sizes:
        for K in Ks:
            print(f"\n## {size} ({'/'.join(map(str, P.SIZES[size]))} train/val/features/classes), "
                  f"lower_iters={K}: median ms per run_iter (first call ms)")
            header = ["combination"] + impls + ["jboat/floor", "lean/floor", "jboat/torch",
                                                "lean/torch", "jboat/boat-jit"]
            print("| " + " | ".join(header) + " |")
            print("|" + "---|" * len(header))
            for combo in combos:
                row = [combo]
                cells = {}
                for impl in impls:
                    r = index.get((impl, combo, size, K))
                    cells[impl] = r
                    cell = "" if r is None else (f"{fmt_ms(r)} ({fmt_ms(r, 'first_s')})"
                                                 if "error" not in r else "n/a")
                    if r is not None and r.get("median_s_by_threads"):
                        cell += " x" + str(r["threads"])
                    row.append(cell)
                for num, den in (("jboat", "floor"), ("jboat-lean", "floor"),
                                 ("jboat", "boat-torch"), ("jboat-lean", "boat-torch"),
                                 ("jboat", "boat-jit")):
                    a, b = cells.get(num), cells.get(den)
                    ok = a and b and "error" not in a and "error" not in b
                    row.append(f"{a['median_s'] / b['median_s']:.2f}" if ok else "")
                if any(cells.get(i) for i in impls):
                    print("| " + " | ".join(row) + " |")


def print_paired_table(records):
    print("\n## jboat / hand-written floor, interleaved iteration by iteration in one process "
          "(median ms; ratio of medians)")
    print("| size | lower_iters | combination | floor | jboat-lean | jboat | lean/floor | jboat/floor |")
    print("|---|---|---|---|---|---|---|---|")
    for r in records:
        if "error" in r:
            print(f"| {r['size']} | {r['lower_iters']} | {r['combo']} | n/a: {r['error']} |")
            continue
        m = r["median_s"]
        print(f"| {r['size']} | {r['lower_iters']} | {r['combo']} | {1e3 * m['floor']:.1f} | "
              f"{1e3 * m['jboat-lean']:.1f} | {1e3 * m['jboat']:.1f} | "
              f"{r['jboat-lean/floor']:.2f} | {r['jboat/floor']:.2f} |")


def print_memory_table(records, Ks, impls):
    combos = []
    for r in records:
        if r["combo"] not in combos:
            combos.append(r["combo"])
    index = {(r["impl"], r["combo"], r["lower_iters"]): r for r in records}
    print("\n## large: peak resident memory above the level before the first call (MiB), "
          "one fresh process each")
    header = ["combination"] + [f"{impl} K={K}" for impl in impls for K in Ks]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for combo in combos:
        row = [combo]
        for impl in impls:
            for K in Ks:
                r = index.get((impl, combo, K))
                row.append("" if r is None else ("n/a" if "error" in r or r.get("peak_mb") is None
                                                 else f"{r['peak_mb']:.1f}"))
        print("| " + " | ".join(row) + " |")


def flat_series(python, impl, size, n):
    (record,) = run_worker(python, impl, size, 5, ["DI+NGD+RAD"], iters=n, warmup=3, series=True)
    if "error" in record:
        print(f"\n## flatness: {impl} DI+NGD+RAD failed: {record['error']}")
        return record
    times = record["times"]
    block = max(1, n // 10)
    medians = [statistics.median(times[i:i + block]) for i in range(0, n, block)]
    print(f"\n## flatness: {impl} DI+NGD+RAD, {size}, lower_iters=5, {n} iterations: "
          f"median ms per block of {block}")
    print(" ".join(f"{1e3 * m:.1f}" for m in medians))
    print(f"last block / first block = {medians[-1] / medians[0]:.2f}")
    record["block_medians"] = medians
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="small,large")
    parser.add_argument("--lower-iters", default="5,20")
    parser.add_argument("--impls", default="jboat,jboat-lean,floor,boat-torch",
                        help="add boat-jit to time upstream JBOAT (slow: see --peer-timeout)")
    parser.add_argument("--peer-timeout", type=int, default=300,
                        help="seconds allowed to each boat-jit combination (its first calls "
                             "compile hundreds of kernels)")
    parser.add_argument("--combos", default="default",
                        help="'shared' (the five operators every implementation has), "
                             "'default' (shared + further jboat combinations) or a list")
    parser.add_argument("--iters", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--flat-iters", type=int, default=200)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-flat", action="store_true")
    parser.add_argument("--flat-only", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="large size, lower_iters 5, shared operators, no memory runs")
    parser.add_argument("--torch-python", default=os.environ.get("JBOAT_BENCH_TORCH_PYTHON"))
    parser.add_argument("--torch-threads", default="1,2",
                        help="boat-torch runs once per thread count (torch.set_num_threads, "
                             "separate processes); the faster is reported, its count after "
                             "an x")
    parser.add_argument("--json", help="also write every record to this file")
    args = parser.parse_args(argv)
    torch_threads = [int(t) for t in args.torch_threads.split(",")]
    if args.quick:
        args.sizes, args.lower_iters, args.combos, args.no_memory = "large", "5", "shared", True
    sizes, Ks = args.sizes.split(","), [int(k) for k in args.lower_iters.split(",")]
    impls = args.impls.split(",")
    python = sys.executable
    torch_python = args.torch_python or python
    pythons = {impl: python for impl in impls}
    pythons["boat-torch"] = torch_python
    print("# jboat benchmark: L2-regularised logistic regression (bench/l2_problem.py)")
    print(machine_line())
    available = []
    for impl in impls:
        module = {"boat-torch": "boat_torch", "boat-jit": "boat_jit"}.get(impl)
        if module and not _importable(pythons[impl], module):
            print(f"({impl}: not importable by {pythons[impl]}; skipped)")
            continue
        available.append(impl)
    start = time.time()
    records, memory, flat = [], [], None
    if not args.flat_only:
        for impl in available:
            if args.combos in ("shared", "default"):
                combos = list(SHARED)
                if impl == "jboat" and args.combos == "default":
                    combos += JBOAT_EXTRA
            else:
                combos = args.combos.split(",")
            for size in sizes:
                for K in Ks:
                    if impl == "boat-jit":   # one process per combination, bounded
                        for combo in combos:
                            records += run_worker(pythons[impl], impl, size, K, [combo],
                                                  args.iters, args.warmup,
                                                  timeout=args.peer_timeout)
                        continue
                    if impl == "boat-torch":   # the peer at its best thread count
                        records += run_best_threads(pythons[impl], torch_threads, size, K,
                                                    combos, args.iters, args.warmup)
                        continue
                    records += run_worker(pythons[impl], impl, size, K, combos, args.iters,
                                          args.warmup)
        print_time_table(records, sizes, Ks, available)
        if {"jboat", "floor"} <= set(available):
            paired = []
            for size in sizes:
                for K in Ks:
                    paired += run_worker(python, "paired", size, K, SHARED, max(args.iters, 15),
                                         args.warmup)
            print_paired_table(paired)
            records += paired
        errors = [r for r in records if "error" in r]
        for r in errors:
            print(f"(n/a: {r['impl']} {r['combo']} {r['size']} K={r['lower_iters']}: {r['error']})")
        if not args.no_memory and "large" in P.SIZES:
            for impl in available:
                combos = [c for c in MEMORY_COMBOS if impl.startswith("jboat") or "RGT" not in c]
                if impl in ("jboat-lean", "boat-jit"):
                    continue
                for K in Ks:
                    for combo in combos:
                        threads = None
                        if impl == "boat-torch":   # the count that was faster for timing
                            timed = [r for r in records if r["impl"] == impl
                                     and r["combo"] == combo and r["size"] == "large"
                                     and r["lower_iters"] == K and "error" not in r]
                            threads = timed[0]["threads"] if timed else torch_threads[0]
                        memory += run_worker(pythons[impl], impl, "large", K, [combo], iters=2,
                                             warmup=1, memory=True, threads=threads)
            print_memory_table(memory, Ks, [i for i in available
                                            if i not in ("jboat-lean", "boat-jit")])
    if not args.no_flat and "jboat" in available:
        flat = flat_series(python, "jboat", "large", args.flat_iters)
    print(f"\n(total benchmark time {time.time() - start:.0f} s; load average at the end "
          f"{os.getloadavg()[0]:.2f})")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": machine_line(), "time": records, "memory": memory,
                       "flat": flat}, handle, indent=1)


if __name__ == "__main__":
    main()
