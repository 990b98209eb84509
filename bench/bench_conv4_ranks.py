"""Conv4 MAML on a 2-core CPU: one process, or the meta-batch split over processes.

    python bench/bench_conv4_ranks.py                       # MAML K=5 and FOMAML K=5
    python bench/bench_conv4_ranks.py --settings MAML-K5 --iters 5

Why: Jittor 1.3.11 runs its generated CPU kernels (every fused element-wise, reduction
and ``reindex`` kernel: batch norm, ReLU, pooling, the optimizer) on one thread; only
its oneDNN convolutions and matmuls use more (docs/performance.md, "Where Conv4's time
goes"). PyTorch threads everything. One Jittor process therefore leaves a core idle
for most of a meta-iteration, and jboat's task parallelism (``accumulate_grad`` under
``mpirun``: each rank runs its share of the tasks, one all-reduce of the meta-gradient
per iteration) is how jboat uses the second core.

Rows, each timed in its own process(es), the same problem as ``bench/bench_conv4.py``
(``bench/conv4_problem.py``: 64 channels, 28x28, 5-way 1-shot, 15 queries, meta-batch 4):

* ``jboat, 1 process``: Jittor's default threads;
* ``jboat, N ranks``: ``mpirun -np N`` with ``OMP_NUM_THREADS=1``, each rank 4/N tasks,
  the meta-gradient summed across ranks (the same meta-step as one process);
* ``torch, 1 process``: PyTorch + higher at 1 and 2 threads, the faster kept;
* ``torch, N processes``: N PyTorch processes at 1 thread started together, each on
  4/N tasks, **without** any gradient exchange (so a lower bound on what a PyTorch
  script would take that split its meta-batch the same way).

Printed: median milliseconds per meta-iteration and the ratios. ``--check`` first
compares the meta-gradient of one meta-batch from N ranks with the one from 1 process
(relative difference of the whole vector).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from machine import mpirun_command, run_result_worker, worker_result  # noqa: E402


def _split(data, rank, world):
    return [batch[rank::world] for batch in data]


def worker(args):
    """One process (or one MPI rank): time ``--iters`` meta-iterations after ``--warmup``."""
    import conv4_problem as P
    setting = P.SETTINGS[args.setting]
    data, weights = P.make_data(), P.initial_weights(args.channels)
    if args.worker == "torch":
        import torch
        torch.set_num_threads(args.threads)
        import conv4_torch as T
        step, sync = T.make_torch(setting, _split(data, args.rank, args.world), weights), T.sync
        rank = 0                # independent processes: each reports its own time
    else:
        import jboat
        import jittor as jt
        import conv4_jittor as J
        rank, world = jboat.distributed.rank(), jboat.distributed.world_size()
        step = J.make_jboat(setting, _split(data, rank, world), weights,
                            return_grad=args.grad_out is not None)
        sync = jt.sync_all
        if args.grad_out:
            grads = step(0)
            sync()
            if rank == 0:
                import numpy as np
                np.savez(args.grad_out, *[g.numpy() for g in grads])
                sys.stdout.write('\nRESULT {"saved": true}\n')
                sys.stdout.flush()
            return
    times = []
    for it in range(args.warmup + args.iters):
        start = time.perf_counter()
        step(it)
        sync()
        if it >= args.warmup:
            times.append(time.perf_counter() - start)
    if rank == 0:
        sys.stdout.write("\nRESULT " + json.dumps({"median_s": statistics.median(times),
                                                   "times": times}) + "\n")
        sys.stdout.flush()


def _cmd(args, worker_name, setting, **extra):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", worker_name,
           "--setting", setting, "--channels", str(args.channels), "--iters", str(args.iters),
           "--warmup", str(args.warmup)]
    for key, value in extra.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    return cmd


def _checked(result, what):
    if "error" in result:
        raise RuntimeError(f"{what}: {result['error']}")
    return result


def _run(cmd, env=None, timeout=1800):
    return _checked(run_result_worker(cmd, ROOT, timeout, env), " ".join(cmd))


def jboat_ranks(args, setting, ranks):
    cmd = _cmd(args, "jboat", setting)
    if ranks == 1:
        return _run(cmd)["median_s"]
    return _run(mpirun_command(ranks) + cmd, env={"OMP_NUM_THREADS": "1"})["median_s"]


def torch_processes(args, setting, processes, threads):
    procs = [subprocess.Popen(_cmd(args, "torch", setting, threads=threads, rank=r,
                                   world=processes),
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
             for r in range(processes)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=1800)
        results.append(_checked(worker_result(out, err), "torch worker")["median_s"])
    return max(results)     # the meta-iteration ends when the slowest process does


def check(args, setting, ranks):
    import tempfile
    import numpy as np
    with tempfile.TemporaryDirectory() as folder:
        one, many = os.path.join(folder, "one.npz"), os.path.join(folder, "many.npz")
        _run(_cmd(args, "jboat", setting, grad_out=one))
        _run(mpirun_command(ranks) + _cmd(args, "jboat", setting, grad_out=many),
             env={"OMP_NUM_THREADS": "1"})
        a, b = np.load(one), np.load(many)
        x = np.concatenate([a[k].ravel() for k in a.files])
        y = np.concatenate([b[k].ravel() for k in a.files])
        # the whole vector: the conv biases' gradients are rounding noise around 0
        # (batch norm cancels the biases), so per-tensor ratios of those say nothing
        return float(np.linalg.norm(x - y) / np.linalg.norm(x))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default="MAML-K5,FOMAML-K5")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--iters", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--check", action="store_true",
                        help="compare the meta-gradient of N ranks with one process first")
    parser.add_argument("--worker", choices=("jboat", "torch"))
    parser.add_argument("--setting", default="MAML-K5")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--world", type=int, default=1)
    parser.add_argument("--grad-out")
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)

    from bench_conv4 import machine_line
    print(machine_line())
    rows = []
    for setting in args.settings.split(","):
        if args.check:
            print(f"{setting}: meta-gradient, {args.ranks} ranks vs 1 process: relative "
                  f"difference {check(args, setting, args.ranks):.1e}", flush=True)
        j1 = jboat_ranks(args, setting, 1)
        jn = jboat_ranks(args, setting, args.ranks)
        t1 = {threads: torch_processes(args, setting, 1, threads) for threads in (1, 2)}
        best_threads = min(t1, key=t1.get)
        tn = torch_processes(args, setting, args.ranks, 1)
        rows.append((setting, j1, jn, t1[best_threads], best_threads, t1, tn))
        print(f"{setting}: jboat {j1 * 1e3:.0f} ms (1 process), {jn * 1e3:.0f} ms "
              f"({args.ranks} ranks); torch {t1[best_threads] * 1e3:.0f} ms (1 process, "
              f"{best_threads} threads; 1 thread {t1[1] * 1e3:.0f}, 2 threads "
              f"{t1[2] * 1e3:.0f}), {tn * 1e3:.0f} ms ({args.ranks} processes)", flush=True)
    n = args.ranks
    print(f"\n| setting | jboat 1 process | jboat {n} ranks | torch 1 process (threads) | "
          f"torch {n} processes | jboat/torch, 1 process | jboat {n} ranks / torch best "
          f"1 process | jboat {n} ranks / torch {n} processes |")
    print("|---|---|---|---|---|---|---|---|")
    for setting, j1, jn, tb, threads, _, tn in rows:
        print(f"| {setting} | {j1 * 1e3:.0f} | {jn * 1e3:.0f} | {tb * 1e3:.0f} ({threads}) | "
              f"{tn * 1e3:.0f} | {j1 / tb:.2f} | {jn / tb:.2f} | {jn / tn:.2f} |")


if __name__ == "__main__":
    main()
