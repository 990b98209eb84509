"""Benchmark: Conv4 meta-learning (MAML K=1/5/10, FOMAML, iMAML), jboat vs a hand-written
Jittor floor vs PyTorch + ``higher``.

    python bench/bench_conv4.py                         # every setting, 64 channels
    python bench/bench_conv4.py --settings MAML-K5,FOMAML-K5 --rounds 3
    python bench/bench_conv4.py --torch-python /tmp/peers/bin/python

Not a test: it prints tables. The problem is bench/conv4_problem.py (28x28, 5-way
1-shot, 15 queries per class, meta-batch 4, Conv4 with BatchNorm and max-pooling).
Each run is a subprocess (this file with ``--worker``):

* ``paired``: jboat (``track_losses``/``nan_guard`` off, the floor's work) and the floor
  (bench/conv4_jittor.py), one meta-iteration each in turn in one process, so machine
  noise hits both alike: their ratio is the steadiest number here;
* ``torch`` with 1 and with 2 threads (``torch.set_num_threads``), each in its own
  process; the faster is the peer's time (PyTorch's 2-thread CPU kernels can be much
  slower than 1 thread on a 2-vCPU machine).

Per setting the three processes run one after the other, ``--rounds`` times
(interleaved rounds); printed are the medians per round and, over rounds, the median
ms per meta-iteration and the ratios jboat/floor (within each paired process) and
jboat/torch (jboat's median of a round over the faster torch median of the same
round). Memory: peak resident memory above the level just before the first
meta-iteration, one fresh process per implementation and setting (``--no-memory``
skips it, ``--memory-only`` runs nothing else), for the floor as timed (the whole
meta-batch one lazy graph), the floor run task by task (``floor-synced``: the memory
floor, each task's graph freed before the next, as PyTorch and jboat do), jboat and
PyTorch; with each also the peak of live tensors, which splits the resident peak into
tensors and the rest: Jittor's own count of live Var buffers (``profile_memory_enable``),
PyTorch's estimated from its profiler's memory records in one more iteration.
"""

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)     # this checkout's jboat, not an installed one
sys.path.insert(0, HERE)

import conv4_problem as P  # noqa: E402
from machine import cpu_name, memory_mb, reset_peak, run_result_worker  # noqa: E402


# -- worker ------------------------------------------------------------------------------


def _jittor_impls(names, setting, data, weights):
    import conv4_jittor as J
    makers = {"jboat": lambda: J.make_jboat(setting, data, weights, lean=True),
              "jboat-defaults": lambda: J.make_jboat(setting, data, weights, lean=False),
              "floor": lambda: J.make_floor(setting, data, weights),
              "floor-synced": lambda: J.make_floor(setting, data, weights, sync_tasks=True)}
    return {name: makers[name]() for name in names}, J.sync, J.cleanup, "jittor"


def check_worker(args):
    """Save the first meta-batch's meta-gradients (jboat and floor, or torch)."""
    import numpy as np
    setting = P.SETTINGS[args.setting]
    data, weights = P.make_data(), P.initial_weights(args.channels)
    if args.worker == "check-torch":
        import conv4_torch as T
        grads = {"torch": T.meta_gradients(setting, data, weights, args.check_dtype)}
    else:
        import conv4_jittor as J
        grads = J.meta_gradients(setting, data, weights)
    np.savez(args.out, **{f"{name}_{i}": g for name, gs in grads.items()
                          for i, g in enumerate(gs)})


def check(python, torch_python, has_torch, settings, channels, torch_dtype="float32"):
    """Relative error of jboat's and the floor's meta-gradients against each other and
    against PyTorch + higher (same weights and data; Jittor in float32, PyTorch in
    ``torch_dtype``)."""
    import tempfile

    import numpy as np
    print(f"\n## meta-gradient check ({channels} channels, PyTorch in {torch_dtype}): max "
          "over weight tensors "
          "(not the conv biases: BatchNorm cancels them) of ||a - b|| / ||b||")
    for name in settings:
        with tempfile.TemporaryDirectory() as tmp:
            arrays = {}
            for worker_name, exe in (("check-jittor", python), ("check-torch", torch_python)):
                if worker_name == "check-torch" and not has_torch:
                    continue
                out = os.path.join(tmp, worker_name + ".npz")
                cmd = [exe, os.path.abspath(__file__), "--worker", worker_name, "--setting",
                       name, "--channels", str(channels), "--out", out,
                       "--check-dtype", torch_dtype]
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
                if proc.returncode:
                    print(f"{name}: {worker_name} failed: {proc.stderr.strip()[-300:]}")
                    continue
                with np.load(out) as loaded:
                    arrays.update({k: loaded[k] for k in loaded.files})

        def group(prefix):
            keys = sorted((k for k in arrays if k.startswith(prefix + "_")),
                          key=lambda k: int(k.rsplit("_", 1)[1]))
            return [arrays[k] for k in keys]

        def rel(a, b):
            # conv biases are left out: BatchNorm cancels them, their gradients are
            # rounding noise around 0
            if not a or not b:
                return "n/a"
            keep = [i for i in range(len(a)) if not (i < 16 and i % 4 == 1)]
            return f"{max(np.linalg.norm(a[i] - b[i]) / max(np.linalg.norm(b[i]), 1e-30) for i in keep):.1e}"
        jb, fl, to = group("jboat"), group("floor"), group("torch")
        print(f"{name}: jboat vs floor {rel(jb, fl)}; jboat vs torch {rel(jb, to)}; "
              f"floor vs torch {rel(fl, to)}", flush=True)


def _torch_live_peak(step, it):
    """PyTorch's peak of live tensor bytes in one more meta-iteration (after the resident
    peak was read), from the profiler's memory records: each operator's own allocations
    minus frees, in start order (an estimate: frees inside an operator count at its
    start). The tensors alive before the iteration are not included."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(it)
    changes = sorted((e.time_range.start, e.cpu_memory_usage if e.name == "[memory]"
                      else e.self_cpu_memory_usage) for e in prof.events())
    level = peak = 0
    for _, change in changes:
        level += change
        peak = max(peak, level)
    return peak / 2 ** 20


def worker(args):
    if args.worker.startswith("check"):
        return check_worker(args)
    setting = P.SETTINGS[args.setting]
    data = P.make_data()
    weights = P.initial_weights(args.channels)
    if args.worker == "torch":
        import torch
        torch.set_num_threads(args.threads)
        import conv4_torch as T
        steps, sync, cleanup = {"torch": T.make_torch(setting, data, weights)}, T.sync, T.cleanup
        framework = f"torch {torch.__version__} threads={torch.get_num_threads()}"
    else:
        names = ["floor", "jboat"] if args.worker == "paired" else [args.worker]
        if args.with_defaults and args.worker == "paired":
            names.append("jboat-defaults")
        steps, sync, cleanup, framework = _jittor_impls(names, setting, data, weights)
        import jittor as jt
        framework = f"jittor {jt.__version__} use_mkl={os.environ.get('use_mkl', '?')}"
        if args.live_memory:
            # Jittor's own accounting: the largest total of live Var buffers
            jt.flags.profile_memory_enable = 1
    gc.collect()
    base_rss, _ = memory_mb()
    has_peak = reset_peak()
    times = {name: [] for name in steps}
    first = {}
    for it in range(args.warmup + args.iters):
        for name, step in steps.items():
            start = time.perf_counter()
            step(it)
            sync()
            elapsed = time.perf_counter() - start
            if it == 0:
                first[name] = elapsed
            if it >= args.warmup:
                times[name].append(elapsed)
    _, peak = memory_mb()
    live = None
    if args.live_memory and args.worker != "torch":
        import jittor as jt
        live = int(jt.get_max_memory_info().split("[!@#div1!@#]")[0]) / 2 ** 20
    elif args.live_memory:
        live = _torch_live_peak(steps["torch"], args.warmup + args.iters)
    cleanup()
    record = {"worker": args.worker, "setting": args.setting, "channels": args.channels,
              "framework": framework, "threads": args.threads,
              "median_s": {n: statistics.median(t) for n, t in times.items()},
              "first_s": first, "times": times,
              "peak_mb": (peak - base_rss) if has_peak else None, "live_peak_mb": live}
    sys.stdout.write("\nRESULT " + json.dumps(record) + "\n")
    sys.stdout.flush()


# -- driver ------------------------------------------------------------------------------
def run_worker(python, worker_name, setting, channels, iters, warmup, threads=1,
               with_defaults=False, live_memory=False, timeout=1800):
    cmd = [python, os.path.abspath(__file__), "--worker", worker_name, "--setting", setting,
           "--channels", str(channels), "--iters", str(iters), "--warmup", str(warmup),
           "--threads", str(threads)]
    if with_defaults:
        cmd.append("--with-defaults")
    if live_memory:
        cmd.append("--live-memory")
    return run_result_worker(cmd, ROOT, timeout)


def _importable(python, module):
    try:
        return subprocess.run([python, "-c", f"import {module}"], capture_output=True,
                              timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def machine_line():
    cpu = cpu_name()
    return (f"machine: {cpu}, {os.cpu_count()} cores, load average "
            f"{os.getloadavg()[0]:.2f} at start; Python {platform.python_version()}")


def ms(seconds):
    return f"{1e3 * seconds:.0f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default=",".join(P.SETTINGS))
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--iters", type=int, default=8, help="timed meta-iterations per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first iterations")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per setting")
    parser.add_argument("--torch-python", default=os.environ.get("JBOAT_BENCH_TORCH_PYTHON"))
    parser.add_argument("--threads", default="1,2", help="PyTorch thread counts to try")
    parser.add_argument("--with-defaults", action="store_true",
                        help="also time jboat with its defaults (track_losses, nan_guard)")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-repeats", type=int, default=3,
                        help="fresh processes per memory cell (the median is shown)")
    parser.add_argument("--memory-only", action="store_true",
                        help="skip the check and the timing rounds")
    parser.add_argument("--live-memory", action="store_true",
                        help="worker: also record the peak of live tensors")
    parser.add_argument("--check", type=int, default=8, metavar="CHANNELS",
                        help="first compare the meta-gradients of every implementation "
                             "on a Conv4 this wide (0: skip)")
    parser.add_argument("--check-dtype", default="float32", choices=("float32", "float64"),
                        help="PyTorch's dtype in the meta-gradient check (float64: a "
                             "reference for Jittor's float32)")
    parser.add_argument("--json", help="also write every record to this file")
    # worker mode
    parser.add_argument("--worker", choices=("paired", "jboat", "jboat-defaults", "floor",
                                             "floor-synced", "torch", "check-jittor",
                                             "check-torch"))
    parser.add_argument("--out", help="check workers: .npz file to write")
    parser.add_argument("--setting", choices=sorted(P.SETTINGS))
    args, _ = parser.parse_known_args(argv)
    if args.worker:
        args.threads = int(args.threads.split(",")[0])
        return worker(args)

    python = sys.executable
    torch_python = args.torch_python or python
    has_torch = _importable(torch_python, "higher") and _importable(torch_python, "torch")
    thread_counts = [int(t) for t in args.threads.split(",")]
    settings = args.settings.split(",")
    print(f"# Conv4 meta-learning benchmark ({args.channels} channels, 28x28, "
          f"{P.WAYS}-way {P.SHOTS}-shot, {P.QUERY} queries, meta-batch {P.META_BATCH})")
    print(machine_line())
    if not has_torch:
        print(f"(PyTorch + higher: not importable by {torch_python}; skipped)")
    start = time.time()
    if args.memory_only:
        args.check, args.rounds = 0, 0
    if args.check:
        check(python, torch_python, has_torch, settings, args.check, args.check_dtype)
    records, summary = [], []
    for name in settings:
        rounds = []
        for r in range(args.rounds):
            paired = run_worker(python, "paired", name, args.channels, args.iters,
                                args.warmup, with_defaults=args.with_defaults)
            records.append(paired)
            torch_runs = []
            if has_torch:
                for threads in thread_counts:
                    run = run_worker(torch_python, "torch", name, args.channels, args.iters,
                                     args.warmup, threads=threads)
                    records.append(run)
                    torch_runs.append(run)
            rounds.append((paired, torch_runs))
            cells = []
            if "error" in paired:
                cells.append(f"paired: {paired['error']}")
            else:
                m = paired["median_s"]
                cells.append(" ".join(f"{k} {ms(v)}" for k, v in m.items()))
                cells.append(f"jboat/floor {m['jboat'] / m['floor']:.2f}")
            for run in torch_runs:
                cells.append(f"torch x{run['threads']} " + (
                    ms(run["median_s"]["torch"]) if "error" not in run else run["error"]))
            print(f"{name} round {r + 1}: " + "; ".join(cells), flush=True)
        summary.append((name, rounds))

    table = []
    if args.rounds:
        print("\n## median ms per meta-iteration (median over rounds of each run's median)")
        print("| setting | floor | jboat | torch (best threads) | jboat/floor | jboat/torch | "
              "floor/torch |")
        print("|---|---|---|---|---|---|---|")
    for name, rounds in summary if args.rounds else ():
        ok = [(p, t) for p, t in rounds if "error" not in p]
        if not ok:
            print(f"| {name} | n/a | | | | | |")
            continue
        floor = statistics.median(p["median_s"]["floor"] for p, _ in ok)
        jb = statistics.median(p["median_s"]["jboat"] for p, _ in ok)
        jf = statistics.median(p["median_s"]["jboat"] / p["median_s"]["floor"] for p, _ in ok)
        row = {"setting": name, "floor_ms": 1e3 * floor, "jboat_ms": 1e3 * jb,
               "jboat/floor": jf}
        best = []
        for p, t in ok:
            good = [run for run in t if "error" not in run]
            if good:
                fastest = min(good, key=lambda run: run["median_s"]["torch"])
                best.append((p, fastest))
        if best:
            tt = statistics.median(b["median_s"]["torch"] for _, b in best)
            row.update({
                "torch_ms": 1e3 * tt,
                "torch_threads": [b["threads"] for _, b in best],
                "jboat/torch": statistics.median(p["median_s"]["jboat"] / b["median_s"]["torch"]
                                                 for p, b in best),
                "floor/torch": statistics.median(p["median_s"]["floor"] / b["median_s"]["torch"]
                                                 for p, b in best)})
        table.append(row)
        torch_cell = (f"{row['torch_ms']:.0f} (x{'/'.join(map(str, row['torch_threads']))})"
                      if "torch_ms" in row else "")
        print(f"| {name} | {row['floor_ms']:.0f} | {row['jboat_ms']:.0f} | {torch_cell} | "
              f"{jf:.2f} | " + (f"{row['jboat/torch']:.2f} | {row['floor/torch']:.2f} |"
                                if "torch_ms" in row else " | |"))

    memory = []
    if not args.no_memory:
        print("\n## peak resident memory above the level before the first meta-iteration "
              f"(MiB; median of {args.memory_repeats} fresh processes of 3 iterations "
              "each, [range]; in brackets the peak of live tensors: Jittor's own count of "
              "Var buffers, all of them; PyTorch's from its profiler, above the start of a "
              "4th iteration)")
        print("| setting | floor (meta-batch lazy) | floor (per-task sync) | jboat | torch "
              "| jboat/torch | floor-synced/torch |")
        print("|---|---|---|---|---|---|---|")
        for name in settings:
            cells, peaks = [], {}
            for impl in ("floor", "floor-synced", "jboat", "torch"):
                if impl == "torch" and not has_torch:
                    cells.append("")
                    continue
                row = next((r for r in table if r["setting"] == name), {})
                threads = thread_counts[-1]
                if impl == "torch" and row.get("torch_threads"):
                    threads = statistics.mode(row["torch_threads"])
                runs = []
                for _ in range(args.memory_repeats):
                    run = run_worker(torch_python if impl == "torch" else python, impl, name,
                                     args.channels, iters=2, warmup=1, threads=threads,
                                     live_memory=True)
                    run["memory_run"] = True
                    memory.append(run)
                    if "error" not in run and run.get("peak_mb") is not None:
                        runs.append(run)
                if not runs:
                    cells.append("n/a")
                    continue
                peaks[impl] = statistics.median(r["peak_mb"] for r in runs)
                lives = [r["live_peak_mb"] for r in runs if r.get("live_peak_mb")]
                spread = (f" [{min(r['peak_mb'] for r in runs):.0f}–"
                          f"{max(r['peak_mb'] for r in runs):.0f}]" if len(runs) > 1 else "")
                cells.append(f"{peaks[impl]:.0f}{spread}"
                             + (f" ({statistics.median(lives):.0f})" if lives else ""))
            for num in ("jboat", "floor-synced"):
                cells.append(f"{peaks[num] / peaks['torch']:.2f}"
                             if num in peaks and peaks.get("torch") else "")
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    print(f"\n(total benchmark time {time.time() - start:.0f} s; load average at the end "
          f"{os.getloadavg()[0]:.2f})")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": machine_line(), "records": records, "table": table,
                       "memory": memory}, handle, indent=1)


if __name__ == "__main__":
    main()
