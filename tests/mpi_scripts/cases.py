"""Bilevel problems run under ``mpirun -np 2`` by tests/test_mpi.py.

Each function builds its problem from a fixed seed, so every process (a rank, or
the single-process reference in the test) sees the same data; ``share`` picks
this process's part: the tasks (task parallelism) or the rows (data
parallelism). Results are numpy arrays in a dict.

    mpirun -np 2 python3 tests/mpi_scripts/cases.py OUT_DIR correctness
    mpirun -np 2 python3 tests/mpi_scripts/cases.py OUT_DIR fail      (rank 1 raises)
    mpirun -np 2 python3 tests/mpi_scripts/cases.py OUT_DIR hang      (rank 1 never arrives)

Each rank writes ``OUT_DIR/<mode>.rank<r>.json``.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import jboat  # noqa: E402  (before jittor)
import jittor as jt  # noqa: E402
import numpy as np  # noqa: E402

N_TASKS = 4
N_ROWS = 8
DATA_PARALLEL_CASES = (("RAD",), ("CG",), ("NS",), ("FD",), ("IGA",), ("PTT", "RAD"),
                       ("FOA", "RAD"), ("RGT", "RAD"))


class Vector(jt.Module):
    def __init__(self, values):
        self.value = jt.array(np.asarray(values, dtype=np.float32))

    def execute(self):
        return self.value


def part(items, share):
    """``share = (rank, world)``: this rank's contiguous part of ``items``."""
    rank, world = share
    per = len(items) // world
    return items[rank * per:(rank + 1) * per]


# -- task parallelism: MAML (NGD + IAD) over 4 tasks ------------------------------------------
def maml_inner(feed, upper_model, lower_model, **kwargs):
    y = lower_model(**kwargs)
    return 0.5 * (y * jt.matmul(feed["A"], y)).sum() - (y * feed["b"]).sum()


def maml_outer(feed, upper_model, lower_model, **kwargs):
    y = lower_model(**kwargs)
    r = jt.matmul(feed["C"], y) - feed["t"]
    return 0.5 * (r * r).sum()


def maml_tasks(m=4, p=2, seed=1):
    rng = np.random.RandomState(seed)
    tasks = []
    for _ in range(N_TASKS):
        Q = rng.randn(m, m)
        A = (Q @ Q.T / m + np.eye(m)).astype(np.float32)
        tasks.append(({"A": A, "b": rng.randn(m).astype(np.float32)},
                      {"C": rng.randn(p, m).astype(np.float32),
                       "t": rng.randn(p).astype(np.float32)}))
    return tasks


def _jt_feed(feed):
    return {k: jt.array(v) for k, v in feed.items()}


def run_maml(share, gm_op=("NGD",), na_op=("IAD",), iters=2, mpi_timeout=600.0, options=None):
    """Meta-gradient of iteration 0 (return_grad) and the meta-parameters after
    ``iters`` Adam steps, over this process's share of the 4 tasks."""
    rng = np.random.RandomState(2)
    y0 = rng.randn(4) * 0.5
    tasks = part(maml_tasks(), share)
    ll_feeds = [_jt_feed(ll) for ll, _ in tasks]
    ul_feeds = [_jt_feed(ul) for _, ul in tasks]
    out = {}
    for return_grad in (True, False):
        model = Vector(y0)
        config = {"gm_op": list(gm_op), "na_op": list(na_op), "lower_iters": 3,
                  "accumulate_grad": True, "return_grad": return_grad,
                  "mpi_timeout": mpi_timeout,
                  "lower_level_model": model, "upper_level_model": model,
                  "lower_level_var": list(model.parameters()),
                  "upper_level_var": list(model.parameters()),
                  "lower_level_opt": jt.optim.SGD(list(model.parameters()), lr=0.1),
                  "upper_level_opt": jt.optim.Adam(list(model.parameters()), lr=0.05)}
        config.update(options or {})
        problem = jboat.Problem(config, {"lower_level_loss": maml_inner,
                                         "upper_level_loss": maml_outer})
        problem.build_ll_solver().build_ul_solver()
        if return_grad:
            grads, _ = problem.run_iter(ll_feeds, ul_feeds, 0)
            out["meta_gradient"] = grads[0].numpy()
        else:
            for it in range(iters):
                problem.run_iter(ll_feeds, ul_feeds, it)
            out["meta_parameters"] = model.value.numpy()
    return out


# -- task parallelism through BatchNorm: each task normalised with its own statistics -----------
class ConvBN(jt.Module):
    """Conv 3x3 -> BatchNorm (Jittor's default ``sync=True``) -> ReLU -> linear head."""

    def __init__(self):
        self.conv = jt.nn.Conv2d(1, 2, 3)
        self.bn = jt.nn.BatchNorm2d(2)
        self.head = jt.nn.Linear(2 * 3 * 3, 2)

    def execute(self, x):
        return self.head(jt.nn.relu(self.bn(self.conv(x))).reshape(x.shape[0], -1))


def conv_bn(seed):
    """A :class:`ConvBN` with weights drawn from ``seed`` (the same on every rank), and
    its trainable parameters."""
    jt.set_global_seed(0)
    model = ConvBN()
    for i, p in enumerate(model.parameters()):
        p.assign(jt.array(np.random.RandomState(seed + i).randn(*p.shape).astype(np.float32)
                          * 0.5))
    return model, [p for p in model.parameters() if not p.is_stop_grad()]


def bn_loss(feed, upper_model, lower_model, **kwargs):
    return jt.nn.cross_entropy_loss(lower_model(feed["x"], **kwargs), feed["y"])


def run_maml_bn(share):
    """MAML (NGD + IAD, return_grad) of a conv + BatchNorm net over this process's share
    of 4 tasks whose inputs have different scales and offsets, so that their batch
    statistics differ: under MPI, Jittor's BatchNorm would average them across ranks."""
    rng = np.random.RandomState(4)
    tasks = []
    for k in range(N_TASKS):
        def feed():
            return {"x": jt.array((rng.randn(3, 1, 5, 5) * (1 + k) + k).astype(np.float32)),
                    "y": jt.array(rng.randint(0, 2, size=3).astype(np.int32))}
        tasks.append((feed(), feed()))
    tasks = part(tasks, share)
    model, params = conv_bn(5)
    config = {"gm_op": ["NGD"], "na_op": ["IAD"], "lower_iters": 2, "accumulate_grad": True,
              "return_grad": True, "lower_level_model": model, "upper_level_model": model,
              "lower_level_var": params, "upper_level_var": params,
              "lower_level_opt": jt.optim.SGD(params, lr=0.1),
              "upper_level_opt": jt.optim.Adam(params, lr=0.01)}
    problem = jboat.Problem(config, {"lower_level_loss": bn_loss, "upper_level_loss": bn_loss})
    problem.build_ll_solver().build_ul_solver()
    grads, _ = problem.run_iter([t[0] for t in tasks], [t[1] for t in tasks], 0)
    return {"meta_gradient": np.concatenate([g.numpy().ravel() for g in grads]),
            "bn_sync_after": bool(model.bn.sync)}


def bn_decay_lower(feed, upper_model, lower_model, **kwargs):
    weights = kwargs.get("params") or list(lower_model.parameters())
    penalty = sum((w * w).sum() for w in weights if not w.is_stop_grad())
    return bn_loss(feed, upper_model, lower_model, **kwargs) + upper_model().exp()[0] * penalty


def run_bn_data(share):
    """Data parallelism through BatchNorm (Jittor's ``sync=True``): NGD + RAD (two SGD
    steps with momentum, return_grad) of a conv + BatchNorm net whose weight decay is the
    UL variable; this process holds its rows of one batch of 6 (inputs of different scales
    and offsets, so the rows' statistics differ). The ranks' BatchNorm statistics are
    the full batch's, so the hyper-gradient must be the full-batch one."""
    rng = np.random.RandomState(6)

    def feed():
        scale = np.repeat([1.0, 3.0, 0.5], 2)[:, None, None, None]
        x = rng.randn(6, 1, 5, 5) * scale + np.arange(6)[:, None, None, None]
        return {"x": x.astype(np.float32), "y": rng.randint(0, 2, size=6).astype(np.int32)}
    rows = part(list(range(6)), share)
    ll, ul = ({k: jt.array(v[rows]) for k, v in f.items()} for f in (feed(), feed()))
    model, params = conv_bn(9)
    decay = Vector([-2.0])                     # the UL variable: a log weight-decay
    config = {"gm_op": ["NGD"], "na_op": ["RAD"], "lower_iters": 2, "data_parallel": True,
              "return_grad": True, "lower_level_model": model, "upper_level_model": decay,
              "lower_level_var": params, "upper_level_var": list(decay.parameters()),
              "lower_level_opt": jt.optim.SGD(params, lr=0.1, momentum=0.9),
              "upper_level_opt": jt.optim.SGD(list(decay.parameters()), lr=0.1)}
    problem = jboat.Problem(config, {"lower_level_loss": bn_decay_lower,
                                     "upper_level_loss": bn_loss})
    problem.build_ll_solver().build_ul_solver()
    grads, _ = problem.run_iter(ll, ul, 0)
    return {"hypergradient": grads[0].numpy(), "bn_sync_after": bool(model.bn.sync)}


# -- task parallelism with DI (LL initialisation buffers) --------------------------------------
def quad_lower(feed, upper_model, lower_model, **kwargs):
    y = lower_model(**kwargs)
    x = upper_model()
    quadratic = 0.5 * (y * jt.matmul(feed["A"], y)).sum() - (y * jt.matmul(feed["B"], x)).sum()
    return quadratic + feed["offset"] if "offset" in feed else quadratic


def quad_upper(feed, upper_model, lower_model, **kwargs):
    y = lower_model(**kwargs)
    x = upper_model()
    r = jt.matmul(feed["C"], y) - feed["t"]
    return 0.5 * (r * r).sum() + 0.05 * (x * x).sum()


def di_tasks(n=3, m=4, p=2, seed=3):
    rng = np.random.RandomState(seed)
    tasks = []
    for _ in range(N_TASKS):
        Q = rng.randn(m, m)
        tasks.append(({"A": (Q @ Q.T / m + np.eye(m)).astype(np.float32),
                       "B": (rng.randn(m, n) * 0.5).astype(np.float32)},
                      {"C": rng.randn(p, m).astype(np.float32),
                       "t": rng.randn(p).astype(np.float32)}))
    return tasks


def run_di(share):
    """NGD + DI + RAD over the tasks: UL and LL (initialisation) after one step."""
    rng = np.random.RandomState(4)
    x0, y0 = rng.randn(3) * 0.5, rng.randn(4) * 0.5
    upper, lower = Vector(x0), Vector(y0)
    tasks = part(di_tasks(), share)
    config = {"gm_op": ["NGD", "DI"], "na_op": ["RAD"], "lower_iters": 3,
              "accumulate_grad": True, "DI": {"lr": 0.2},
              "lower_level_model": lower, "upper_level_model": upper,
              "lower_level_var": list(lower.parameters()),
              "upper_level_var": list(upper.parameters()),
              "lower_level_opt": jt.optim.SGD(list(lower.parameters()), lr=0.1),
              "upper_level_opt": jt.optim.SGD(list(upper.parameters()), lr=0.1)}
    problem = jboat.Problem(config, {"lower_level_loss": quad_lower,
                                     "upper_level_loss": quad_upper})
    problem.build_ll_solver().build_ul_solver()
    problem.run_iter([_jt_feed(ll) for ll, _ in tasks], [_jt_feed(ul) for _, ul in tasks], 0)
    return {"x": upper.value.numpy(), "y": lower.value.numpy()}


def run_fo(share, op="VSO"):
    """An FO operator with fogm_batch_input over this process's tasks: the UL gradient
    of one iteration (return_grad) and the LL variables after it."""
    rng = np.random.RandomState(6)
    x0, y0 = rng.randn(3) * 0.5, rng.randn(4) * 0.5
    upper, lower = Vector(x0), Vector(y0)
    tasks = part(di_tasks(), share)
    config = {"fo_op": op, "lower_iters": 3, "fogm_batch_input": True, "return_grad": True,
              "lower_level_model": lower, "upper_level_model": upper,
              "lower_level_var": list(lower.parameters()),
              "upper_level_var": list(upper.parameters()),
              "lower_level_opt": jt.optim.SGD(list(lower.parameters()), lr=0.1),
              "upper_level_opt": jt.optim.SGD(list(upper.parameters()), lr=0.1)}
    problem = jboat.Problem(config, {"lower_level_loss": quad_lower,
                                     "upper_level_loss": quad_upper})
    problem.build_ll_solver().build_ul_solver()
    # VSO's log-barrier needs a positive LL loss
    grads, _ = problem.run_iter([dict(_jt_feed(ll), offset=5.0) for ll, _ in tasks],
                                [_jt_feed(ul) for _, ul in tasks], 0)
    return {"gradient": grads[0].numpy(), "lower": lower.value.numpy()}


# -- data parallelism: L2-regularised least squares, rows sharded ---------------------------------
def l2_lower(feed, upper_model, lower_model, **kwargs):
    w = lower_model(**kwargs)
    x = upper_model()
    r = jt.matmul(feed["X"], w) - feed["y"]
    return 0.5 * (r * r).mean() + 0.5 * (x * w * w).sum()


def l2_upper(feed, upper_model, lower_model, **kwargs):
    w = lower_model(**kwargs)
    r = jt.matmul(feed["X"], w) - feed["y"]
    return 0.5 * (r * r).mean()


def l2_gda(ll_feed, ul_feed, upper_model, lower_model, **kwargs):
    alpha = ll_feed["alpha"]
    return (alpha * l2_upper(ul_feed, upper_model, lower_model, **kwargs)
            + (1 - alpha) * l2_lower(ll_feed, upper_model, lower_model, **kwargs))


def l2_data(d=4, seed=5):
    rng = np.random.RandomState(seed)
    w_true = rng.randn(d)
    X, Xv = rng.randn(N_ROWS, d), rng.randn(N_ROWS, d)
    y = X @ w_true + 0.3 * rng.randn(N_ROWS)
    yv = Xv @ w_true + 0.3 * rng.randn(N_ROWS)
    return [a.astype(np.float32) for a in (X, y, Xv, yv)]


def run_l2(share, gm_op=("NGD",), na_op=("RAD",), data_parallel=True, tasks=1, options=None):
    """The hyper-gradient of one iteration (return_grad) on this process's rows
    (with ``tasks`` > 1: a list of tasks, each with its own data, rows sharded)."""
    rows = part(list(range(N_ROWS)), share)
    lower, upper = Vector(np.full(4, 0.1)), Vector(np.full(4, 0.5))
    # IGA's λ = <∇_yF, ∇_yh>/‖∇_yh‖² is ill-conditioned near the LL optimum: few steps
    iters = {"CG": 30, "NS": 30, "IGA": 4, "FD": 1}.get(na_op[-1], 6)
    config = {"gm_op": list(gm_op), "na_op": list(na_op), "lower_iters": iters,
              "return_grad": True, "data_parallel": data_parallel,
              "accumulate_grad": tasks > 1,
              "CG": {"k": 4, "tolerance": 0.0}, "FD": {"r": 0.01},
              "RGT": {"truncate_iter": 2}, "DI": {"lr": 0.2},
              "lower_level_model": lower, "upper_level_model": upper,
              "lower_level_var": list(lower.parameters()),
              "upper_level_var": list(upper.parameters()),
              "lower_level_opt": jt.optim.SGD(list(lower.parameters()), lr=0.3),
              "upper_level_opt": jt.optim.SGD(list(upper.parameters()), lr=0.1)}
    if "GDA" in gm_op:
        config["GDA"] = {"alpha_init": 0.3, "alpha_decay": 0.9}
    config.update(options or {})
    problem = jboat.Problem(config, {"lower_level_loss": l2_lower,
                                     "upper_level_loss": l2_upper, "gda_loss": l2_gda})
    problem.build_ll_solver().build_ul_solver()
    lls, uls = [], []
    for task in range(tasks):
        X, y, Xv, yv = l2_data(seed=5 + task)
        lls.append({"X": jt.array(X[rows]), "y": jt.array(y[rows])})
        uls.append({"X": jt.array(Xv[rows]), "y": jt.array(yv[rows])})
    grads, _ = problem.run_iter(lls if tasks > 1 else lls[0], uls if tasks > 1 else uls[0], 0)
    # the LL model now holds y_K (warm start) or, with DI, y_0 after the DI step
    return {"hypergradient": grads[0].numpy(), "lower": lower.value.numpy(),
            "ul_loss": np.float32(problem.loss_history[-1]["ul_loss"])}


def ls_loss(feed, upper_model, lower_model, **kwargs):
    w = lower_model(**kwargs)
    r = jt.matmul(feed["X"], w) - feed["y"]
    return 0.5 * (r * r).mean() + 0.05 * (w * w).sum()


def run_meta_data(share, na_op=("IAD",)):
    """MAML-style (LL model = UL model) with the rows of one task sharded: the
    meta-gradient w.r.t. the initial weights (return_grad)."""
    X, y, Xv, yv = l2_data(seed=8)
    rows = part(list(range(N_ROWS)), share)
    model = Vector(np.full(4, 0.2))
    params = list(model.parameters())
    config = {"gm_op": ["NGD"], "na_op": list(na_op), "lower_iters": 4, "return_grad": True,
              "data_parallel": True, "CG": {"k": 4, "tolerance": 0.0},
              "lower_level_model": model, "upper_level_model": model,
              "lower_level_var": params, "upper_level_var": params,
              "lower_level_opt": jt.optim.SGD(params, lr=0.2),
              "upper_level_opt": jt.optim.SGD(params, lr=0.1)}
    problem = jboat.Problem(config, {"lower_level_loss": ls_loss, "upper_level_loss": ls_loss})
    problem.build_ll_solver().build_ul_solver()
    grads, _ = problem.run_iter({"X": jt.array(X[rows]), "y": jt.array(y[rows])},
                                {"X": jt.array(Xv[rows]), "y": jt.array(yv[rows])}, 0)
    return {"meta_gradient": grads[0].numpy()}


#: (result key, na_op, RAD section) of the checkpointed data-parallel cases
CHECKPOINTED_CASES = (
    ("data_RAD_ckpt", ("RAD",), {"checkpoint_every": 2}),
    ("data_PTT_RAD_ckpt", ("PTT", "RAD"), {"checkpoint_every": 4, "replay": "step"}),
)


def case_name(ops):
    return "data_" + "_".join(ops)


def _say(text):
    if os.environ.get("CASES_TRACE"):
        print(f"case {text}", flush=True)


def correctness(share):
    results = {}
    for name, run in (("maml", run_maml), ("di", run_di), ("fo", run_fo),
                      ("maml_bn", run_maml_bn), ("bn_data", run_bn_data)):
        _say(name)
        results[name] = run(share)
    for ops in DATA_PARALLEL_CASES:
        _say(case_name(ops))
        results[case_name(ops)] = run_l2(share, na_op=ops)
    _say("rest")
    results[case_name(("GDA",))] = run_l2(share, gm_op=("NGD", "GDA"), na_op=("RAD",))
    results[case_name(("DI",))] = run_l2(share, gm_op=("NGD", "DI"), na_op=("RAD",))
    results["data_2tasks"] = run_l2(share, na_op=("RAD",), tasks=2)
    results["meta_data_IAD"] = run_meta_data(share, ("IAD",))
    results["meta_data_IAD_CG"] = run_meta_data(share, ("IAD", "CG"))
    # control: without data_parallel each rank differentiates its own shard's problem
    results["replica_RAD"] = run_l2(share, na_op=("RAD",), data_parallel=False)
    # checkpointed reverse mode: the replays run the same collectives on every rank
    for name, ops, checkpoint in CHECKPOINTED_CASES:
        _say(name)
        results[name] = run_l2(share, na_op=ops, options={"RAD": checkpoint})
    results["maml_ckpt"] = run_maml(share, options={"IAD": {"checkpoint_every": 2}})
    return results


def _to_json(results):
    return {k: ({kk: np.asarray(vv).tolist() for kk, vv in v.items()} if isinstance(v, dict)
                else v) for k, v in results.items()}


def main(out_dir, mode):
    rank, world = jboat.distributed.rank(), jboat.distributed.world_size()
    results = {"rank": rank, "world": world}
    if mode == "correctness":
        results.update(correctness((rank, world)))
    elif mode in ("fail", "hang"):
        # healthy collectives first; generous bound: a loaded machine may delay one
        # rank's start (imports, kernel compilation) by more than the 5 s tested below
        run_maml((rank, world), iters=1, mpi_timeout=120.0)
        if rank == 1:
            if mode == "fail":
                raise RuntimeError("rank 1 failed on purpose (test of jboat's abort)")
            time.sleep(600)                       # never reaches the next collective
        start = time.time()
        try:
            run_maml((rank, world), iters=1, mpi_timeout=5.0)
        finally:
            results["waited"] = time.time() - start
    with open(os.path.join(out_dir, f"{mode}.rank{rank}.json"), "w") as handle:
        json.dump(_to_json(results), handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
