"""Data hyper-cleaning over several processes: the data sharded across MPI ranks.

A softmax classifier ``W`` (lower level) is trained on a training set whose labels
are partly corrupted, each sample weighted by ``σ(x_i)``; the per-sample weights
``x`` (upper level, one per training sample) are learned so that the trained
classifier does well on a clean validation set:

    min_x  F = mean_val CE(W*(x))   s.t.  W*(x) = argmin_W mean_train σ(x_i) CE_i(W) + ½λ‖W‖².

With ``data_parallel: true`` each rank holds an equal slice of the training and
validation rows (and reads ``x`` at its training rows' indices); every
lower-level step and the hyper-gradient are averaged across ranks, so the result
is the full-data one: ``mpirun -np 2`` gives the same weights as one process
(up to float round-off). Rank 0 alone prints. Recipe: configs/rhg.yaml (NGD +
RAD); any GM/NA recipe works, e.g. ``--config configs/cg.yaml`` (implicit).

    python examples/mpi_hyper_cleaning.py
    mpirun -np 2 python examples/mpi_hyper_cleaning.py
    mpirun -np 2 python examples/mpi_hyper_cleaning.py --config configs/cg.yaml

(as root add ``--allow-run-as-root``; with more ranks than cores ``--oversubscribe``.)
"""

import time

from _common import jboat, jt, np, parser, progress, setup

dist = jboat.distributed


class Linear(jt.Module):
    def __init__(self, features, classes):
        self.weight = jt.zeros((features, classes))

    def execute(self, x):
        return jt.matmul(x, self.weight)


class SampleWeights(jt.Module):
    def __init__(self, n):
        self.logits = jt.zeros((n,))

    def execute(self):
        return self.logits


def cross_entropy(logits, onehot):
    """Per-row cross-entropy (numerically stable log-softmax)."""
    shifted = logits - logits.max(dim=1, keepdims=True).detach()
    log_norm = jt.log(jt.exp(shifted).sum(dim=1))
    return log_norm - (shifted * onehot).sum(dim=1)


def lower_loss(feed, upper_model, lower_model, weight_decay=1e-3, **kwargs):
    weights = jt.sigmoid(upper_model()[feed["index"]])
    losses = cross_entropy(lower_model(feed["x"], **kwargs), feed["onehot"])
    params = kwargs.get("params") or list(lower_model.parameters())
    return (weights * losses).mean() + 0.5 * weight_decay * sum((p * p).sum() for p in params)


def upper_loss(feed, upper_model, lower_model, **kwargs):
    return cross_entropy(lower_model(feed["x"], **kwargs), feed["onehot"]).mean()


def make_data(seed, n_train, n_val, n_test, features=20, classes=5, noise=0.4):
    """Gaussian class clusters; a fraction ``noise`` of the training labels replaced."""
    rng = np.random.RandomState(seed)
    centres = rng.randn(classes, features) * 1.2

    def sample(n):
        labels = rng.randint(classes, size=n)
        return (centres[labels] + rng.randn(n, features)).astype(np.float32), labels

    (xt, yt), (xv, yv), (xs, ys) = sample(n_train), sample(n_val), sample(n_test)
    corrupted = rng.rand(n_train) < noise
    noisy = yt.copy()
    noisy[corrupted] = (yt[corrupted] + rng.randint(1, classes, corrupted.sum())) % classes
    return {"train": (xt, noisy), "val": (xv, yv), "test": (xs, ys),
            "corrupted": corrupted, "classes": classes}


def my_rows(n):
    """This rank's contiguous slice of ``n`` rows (all rows outside MPI)."""
    rank, world = dist.rank(), dist.world_size()
    if n % world:
        raise SystemExit(f"{n} rows do not split evenly over {world} ranks; data_parallel "
                         f"averages per-rank means, so give every rank the same number.")
    per = n // world
    return np.arange(rank * per, (rank + 1) * per)


def feed(x, labels, classes, rows):
    onehot = np.eye(classes, dtype=np.float32)[labels[rows]]
    return {"x": jt.array(x[rows]), "onehot": jt.array(onehot),
            "index": jt.array(rows.astype(np.int32))}


def main(argv=None):
    p = parser(__doc__.splitlines()[0], "rhg.yaml", iters=100)
    p.add_argument("--n-train", type=int, default=400)
    p.add_argument("--n-val", type=int, default=200)
    args = p.parse_args(argv)
    solver = setup(args)
    data = make_data(args.seed, args.n_train, args.n_val, 1000)
    classes = data["classes"]
    lower = Linear(data["train"][0].shape[1], classes)
    upper = SampleWeights(args.n_train)
    solver.update({"data_parallel": True,
                   "lower_level_model": lower, "upper_level_model": upper,
                   "lower_level_var": list(lower.parameters()),
                   "upper_level_var": list(upper.parameters()),
                   "lower_level_opt": jt.optim.SGD(list(lower.parameters()), lr=0.5),
                   "upper_level_opt": jt.optim.Adam(list(upper.parameters()), lr=0.1)})
    problem = jboat.Problem(solver, {"lower_level_loss": lower_loss,
                                     "upper_level_loss": upper_loss})
    problem.build_ll_solver().build_ul_solver()
    ll_feed = feed(*data["train"], classes, my_rows(args.n_train))
    ul_feed = feed(*data["val"], classes, my_rows(args.n_val))
    main_rank = dist.is_main_process()
    began = time.perf_counter()
    bar = progress(range(args.iters), args.quiet or not main_rank,
                   desc=f"hyper-cleaning on {dist.world_size()} rank(s)", unit="it")
    for it in bar:
        problem.run_iter(ll_feed, ul_feed, it)
        if hasattr(bar, "set_postfix"):   # loss_history: full-data losses
            bar.set_postfix(val_loss=f"{problem.loss_history[-1]['ul_loss']:.4f}")
    seconds = time.perf_counter() - began

    weights = 1.0 / (1.0 + np.exp(-upper.logits.numpy()))
    flagged = weights < 0.5
    corrupted = data["corrupted"]
    precision = (flagged & corrupted).sum() / max(flagged.sum(), 1)
    recall = (flagged & corrupted).sum() / max(corrupted.sum(), 1)
    xs, ys = data["test"]
    accuracy = float((np.argmax(xs @ lower.weight.numpy(), axis=1) == ys).mean())
    if main_rank:
        print(f"ranks {dist.world_size()}: {args.iters} iterations in {seconds:.1f} s; "
              f"validation loss {problem.loss_history[-1]['ul_loss']:.4f}; test accuracy "
              f"{accuracy:.3f}; corrupted-label detection precision {precision:.3f} "
              f"recall {recall:.3f}; weight checksum {float(weights.sum()):.4f}")
    return {"accuracy": accuracy, "precision": precision, "recall": recall,
            "weights": weights}


if __name__ == "__main__":
    main()
