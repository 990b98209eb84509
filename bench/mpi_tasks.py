"""Task parallelism under MPI: meta-learning tasks per second with 1 and 2 ranks.

MAML (NGD + IAD, ``accumulate_grad``) on sinusoid tasks with a 1-40-40-1 MLP; a
meta-batch of ``--tasks`` tasks per iteration is split evenly across the ranks,
and jboat sums the meta-gradients across ranks once per iteration (one
all-reduce of |θ| + 1 numbers, here 1,761 + 6 floats). Prints tasks/second, the
speed-up over one rank and the parallel efficiency.

    python bench/mpi_tasks.py                   # launches mpirun -np 1 and -np 2
    python bench/mpi_tasks.py --ranks 1 2 4     # more ranks (needs the cores)

The timings include everything a user sees per iteration (inner loops, the
meta-gradient, the all-reduce, the Adam step). On a machine with fewer free cores
than ranks the ranks share cores and the speed-up shrinks accordingly.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker(args):
    sys.path.insert(0, ROOT)
    import jboat
    import jittor as jt
    import numpy as np

    dist = jboat.distributed
    rank, world = dist.rank(), dist.world_size()
    if args.tasks % world:
        raise SystemExit(f"--tasks {args.tasks} is not a multiple of {world} ranks")
    jt.set_global_seed(0)

    class MLP(jt.Module):
        def __init__(self):
            self.l1, self.l2, self.l3 = (jt.nn.Linear(1, 40), jt.nn.Linear(40, 40),
                                         jt.nn.Linear(40, 1))

        def execute(self, x):
            return self.l3(jt.nn.relu(self.l2(jt.nn.relu(self.l1(x)))))

    def mse(feed, upper_model, lower_model, **kwargs):
        diff = lower_model(feed["x"], **kwargs) - feed["y"]
        return (diff * diff).mean()

    model = MLP()
    params = list(model.parameters())
    problem = jboat.Problem(
        {"gm_op": ["NGD"], "na_op": ["IAD"], "lower_iters": args.lower_iters,
         "accumulate_grad": True, "track_losses": False,
         "lower_level_model": model, "upper_level_model": model,
         "lower_level_var": params, "upper_level_var": params,
         "lower_level_opt": jt.optim.SGD(params, lr=0.01),
         "upper_level_opt": jt.optim.Adam(params, lr=0.001)},
        {"lower_level_loss": mse, "upper_level_loss": mse})
    problem.build_ll_solver().build_ul_solver()

    rng = np.random.RandomState(0)

    def meta_batch():
        tasks = []
        for _ in range(args.tasks):
            amp, phase = rng.uniform(0.1, 5.0), rng.uniform(0.0, math.pi)
            pair = []
            for _ in range(2):
                x = rng.uniform(-5, 5, size=(args.shots, 1)).astype(np.float32)
                pair.append({"x": jt.array(x),
                             "y": jt.array((amp * np.sin(x - phase)).astype(np.float32))})
            tasks.append(pair)
        mine = tasks[rank::world]
        return [s for s, _ in mine], [q for _, q in mine]

    for it in range(args.warmup):                  # compiles Jittor's kernels
        problem.run_iter(*meta_batch(), it)
    batches = [meta_batch() for _ in range(args.iters)]
    jt.sync_all(True)
    dist.barrier()
    start = time.perf_counter()
    for it, (support, query) in enumerate(batches):
        problem.run_iter(support, query, args.warmup + it)
    jt.sync_all(True)
    dist.barrier()
    seconds = time.perf_counter() - start
    if dist.is_main_process():
        print("RESULT " + json.dumps({
            "ranks": world, "seconds": seconds, "iterations": args.iters,
            "tasks_per_second": args.iters * args.tasks / seconds,
            "allreduce_floats": sum(int(p.numel()) for p in params) + len(params)}),
            flush=True)


def launch(ranks, args):
    command = [sys.executable, os.path.abspath(__file__), "--worker",
               "--tasks", str(args.tasks), "--iters", str(args.iters),
               "--warmup", str(args.warmup), "--lower-iters", str(args.lower_iters),
               "--shots", str(args.shots)]
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        if ranks > 1:
            return None, "mpirun not found (install OpenMPI: tools/setup_mpi.sh)"
    else:
        flags = ["--oversubscribe", "--bind-to", "none", "-np", str(ranks)]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            flags.insert(0, "--allow-run-as-root")
        command = [mpirun] + flags + command
    proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=args.timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):]), None
    return None, f"exit code {proc.returncode}: {proc.stdout[-2000:]}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--tasks", type=int, default=8, help="meta-batch (tasks per iteration)")
    p.add_argument("--iters", type=int, default=10, help="timed iterations")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--lower-iters", type=int, default=5)
    p.add_argument("--shots", type=int, default=10)
    p.add_argument("--timeout", type=int, default=900)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    print(f"MAML (NGD+IAD), 1-40-40-1 MLP, {args.tasks} tasks/iteration, K={args.lower_iters}, "
          f"{args.iters} timed iterations; {os.cpu_count()} CPU cores visible")
    print(f"{'ranks':>5}  {'tasks/s':>9}  {'speed-up':>8}  {'efficiency':>10}  all-reduce/iter")
    base = None
    for ranks in args.ranks:
        result, error = launch(ranks, args)
        if result is None:
            print(f"{ranks:>5}  skipped: {error}")
            continue
        rate = result["tasks_per_second"]
        base = base or (rate if ranks == 1 else None)
        speedup = rate / base if base else float("nan")
        print(f"{ranks:>5}  {rate:9.1f}  {speedup:8.2f}  {speedup / ranks:10.0%}  "
              f"{result['allreduce_floats'] * 4 / 1024:.1f} KiB" if ranks > 1 else
              f"{ranks:>5}  {rate:9.1f}  {1.0:8.2f}  {1.0:10.0%}  none")


if __name__ == "__main__":
    main()
