"""Meta-learning over several processes: MAML's meta-batch split across MPI ranks.

Sinusoid regression tasks (a·sin(x - φ), 10-shot) and a 1-40-40-1 MLP that is both
the lower- and the upper-level model (configs/maml.yaml: NGD + IAD,
``accumulate_grad``). Every rank draws the same meta-batch from the same seeded
generator and keeps its share of the tasks (rank r: tasks r, r+N, r+2N, ...);
jboat sums the meta-gradients across ranks, so every rank takes the same Adam
step as one process running the whole meta-batch (task parallelism, see
README "Multiple processes (MPI)"). Rank 0 alone prints, shows progress and writes
the checkpoint; every rank can resume from it.

    python examples/mpi_meta_learning.py                      # one process
    mpirun -np 2 python examples/mpi_meta_learning.py         # two ranks, same result
    mpirun -np 2 python examples/mpi_meta_learning.py --checkpoint /tmp/maml.pkl
    mpirun -np 2 python examples/mpi_meta_learning.py --resume /tmp/maml.pkl --iters 50

(as root add ``--allow-run-as-root``; with more ranks than cores ``--oversubscribe``.)
"""

import math
import time

from _common import jboat, jt, np, parser, progress, setup

dist = jboat.distributed


class MLP(jt.Module):
    def __init__(self, hidden=40):
        self.layer1 = jt.nn.Linear(1, hidden)
        self.layer2 = jt.nn.Linear(hidden, hidden)
        self.out = jt.nn.Linear(hidden, 1)

    def execute(self, x):
        return self.out(jt.nn.relu(self.layer2(jt.nn.relu(self.layer1(x)))))


def mse(feed, upper_model, lower_model, **kwargs):
    diff = lower_model(feed["x"], **kwargs) - feed["y"]
    return (diff * diff).mean()


def sinusoid_batch(rng, n_tasks, shots, query):
    """``n_tasks`` (support, query) pairs of numpy arrays (the same on every rank)."""
    tasks = []
    for _ in range(n_tasks):
        amp, phase = rng.uniform(0.1, 5.0), rng.uniform(0.0, math.pi)
        sets = []
        for n in (shots, query):
            x = rng.uniform(-5.0, 5.0, size=(n, 1)).astype(np.float32)
            sets.append({"x": x, "y": (amp * np.sin(x - phase)).astype(np.float32)})
        tasks.append(sets)
    return tasks


def my_share(tasks):
    """This rank's tasks: r, r + N, r + 2N, ... (all of them outside MPI)."""
    return tasks[dist.rank()::dist.world_size()]


def to_feeds(tasks):
    support = [{k: jt.array(v) for k, v in s.items()} for s, _ in tasks]
    query = [{k: jt.array(v) for k, v in q.items()} for _, q in tasks]
    return support, query


def main(argv=None):
    p = parser(__doc__.splitlines()[0], "maml.yaml", iters=200)
    p.add_argument("--meta-batch", type=int, default=8, help="tasks per UL iteration (all ranks)")
    p.add_argument("--shots", type=int, default=10)
    p.add_argument("--inner-lr", type=float, default=0.01)
    p.add_argument("--meta-lr", type=float, default=0.005)
    p.add_argument("--checkpoint", default=None, help="write Problem.state_dict() here (rank 0)")
    p.add_argument("--resume", default=None, help="load a checkpoint on every rank first")
    args = p.parse_args(argv)
    solver = setup(args)
    if args.meta_batch % dist.world_size():
        raise SystemExit(f"--meta-batch {args.meta_batch} must be a multiple of the "
                         f"{dist.world_size()} ranks (every rank gets the same share).")
    model = MLP()
    params = list(model.parameters())
    solver.update({"lower_level_model": model, "upper_level_model": model,
                   "lower_level_var": params, "upper_level_var": params,
                   "lower_level_opt": jt.optim.SGD(params, lr=args.inner_lr),
                   "upper_level_opt": jt.optim.Adam(params, lr=args.meta_lr),
                   "accumulate_grad": True, "track_losses": False})
    problem = jboat.Problem(solver, {"lower_level_loss": mse, "upper_level_loss": mse})
    problem.build_ll_solver().build_ul_solver()
    start_iter = 0
    if args.resume:
        dist.load_checkpoint(args.resume, problem)       # every rank reads the file
        start_iter = len(problem.loss_history)
    rng = np.random.RandomState(args.seed + 7919 * start_iter)
    main_rank = dist.is_main_process()
    bar = progress(range(start_iter, start_iter + args.iters), args.quiet or not main_rank,
                   desc=f"meta-learning on {dist.world_size()} rank(s)", unit="it")
    began, loss = time.perf_counter(), float("nan")
    for it in bar:
        support, query = to_feeds(my_share(sinusoid_batch(rng, args.meta_batch,
                                                           args.shots, args.shots)))
        records, _ = problem.run_iter(support, query, it)
        mine = [r["gradient_operator_results"]["upper_loss"] for r in records
                if "gradient_operator_results" in r]
        # the meta-batch loss: sum over this rank's tasks, summed over ranks
        loss = float(dist.sum_across_ranks([jt.array(np.float32([sum(mine)]))])[0].item())
        problem.save_losses(it, float("nan"), loss / args.meta_batch)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(query_loss=f"{loss / args.meta_batch:.4f}")
    seconds = time.perf_counter() - began
    if args.checkpoint:
        dist.save_checkpoint(problem, args.checkpoint)   # rank 0 writes, all wait
    checksum = float(sum(float(np.abs(p.numpy()).sum()) for p in params))
    if main_rank:
        print(f"ranks {dist.world_size()}: {args.iters} meta-iterations of {args.meta_batch} "
              f"tasks in {seconds:.1f} s ({args.iters * args.meta_batch / max(seconds, 1e-9):.1f} "
              f"tasks/s); last meta-batch query MSE {loss / args.meta_batch:.4f}; "
              f"parameter checksum {checksum:.6f}")
    return {"loss": loss / args.meta_batch, "checksum": checksum}


if __name__ == "__main__":
    main()
