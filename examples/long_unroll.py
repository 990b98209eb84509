"""A thousand lower-level steps in bounded memory: checkpointed reverse mode.

The per-feature L2 problem of l2_regularization.py, made wide and unrolled long:
logistic regression with ``features x 10`` weights (200 010 LL variables by
default) trained by ``lower_iters`` SGD steps (1000), and the validation loss
differentiated through all of them w.r.t. the log-strengths. Plain RAD keeps the
graph of every step (about 1000 x 5 states of 0.8 MB here, several GB); the
``rhg_checkpointed`` recipe (``RAD.checkpoint_every: auto``) keeps every
ceil(sqrt(K))-th state and recomputes the rest in the backward pass: the same
hyper-gradient in a few tens of MB, for about two extra forward passes per step.

    python examples/long_unroll.py                     # K = 1000, 200k LL variables
    python examples/long_unroll.py --plain --lower-iters 100   # plain RAD, for comparison
"""

from _common import jboat, jt, np, parser, progress, save_plot, setup
from l2_regularization import LogisticRegression, LogStrength, accuracy, lower_loss, upper_loss


def _status_mb(field):
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise OSError(field)


def start_peak():
    """Start measuring peak memory here: returns the baseline (MiB), or None where
    /proc (Linux) cannot reset the peak counter."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")            # resets VmHWM to the current resident size
        return _status_mb("VmRSS")
    except OSError:
        return None


def peak_above_mb(baseline):
    """Peak resident memory since :func:`start_peak` above its baseline (MiB)."""
    return float("nan") if baseline is None else _status_mb("VmHWM") - baseline


def make_data(seed, features, n_train=100, n_val=200, n_test=500, informative=10, classes=10):
    rng = np.random.RandomState(seed)
    centers = rng.randn(classes, informative) * 1.2

    def draw(n):
        y = rng.randint(classes, size=n)
        x = np.concatenate([centers[y] + rng.randn(n, informative),
                            rng.randn(n, features - informative) * 0.5], axis=1)
        return {"x": jt.array(x.astype(np.float32)), "y": jt.array(y.astype(np.int32))}

    return draw(n_train), draw(n_val), draw(n_test)


def main(argv=None):
    p = parser(__doc__.splitlines()[0], "rhg_checkpointed.yaml", iters=3)
    p.add_argument("--features", type=int, default=20000,
                   help="input features (LL variables: 10 x features + 10)")
    p.add_argument("--lower-iters", type=int, default=None,
                   help="LL steps per UL iteration (default: the recipe's, 1000)")
    p.add_argument("--plain", action="store_true",
                   help="plain RAD (no checkpointing): memory grows with lower_iters")
    args = p.parse_args(argv)
    solver = setup(args)
    if args.lower_iters is not None:
        solver["lower_iters"] = args.lower_iters
    if args.plain:
        solver.pop("RAD", None)
    train, val, test = make_data(args.seed, args.features)
    lower, upper = LogisticRegression(args.features, 10), LogStrength(args.features)
    solver.update({
        "lower_level_model": lower, "upper_level_model": upper,
        "lower_level_var": list(lower.parameters()), "upper_level_var": list(upper.parameters()),
        "lower_level_opt": jt.optim.SGD(lower.parameters(), lr=0.05),
        "upper_level_opt": jt.optim.Adam(upper.parameters(), lr=0.1),
        "track_losses": False,
    })
    problem = jboat.Problem(solver, {"lower_level_loss": lower_loss,
                                     "upper_level_loss": upper_loss})
    problem.build_ll_solver().build_ul_solver()

    baseline = start_peak()
    history = {"UL loss": []}
    times = []
    bar = progress(range(args.iters), args.quiet, desc="bilevel", unit="it")
    for it in bar:
        results, run_time = problem.run_iter(train, val, it)
        ul = next(r["gradient_operator_results"]["upper_loss"] for r in results
                  if "gradient_operator_results" in r)
        history["UL loss"].append(ul)
        times.append(run_time)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(ul_loss=f"{ul:.4f}")
    rad = solver.get("RAD") or {}
    mode = (f"checkpointed (every {rad['checkpoint_every']}, replay {rad['replay']})"
            if rad.get("checkpoint_every") else "plain RAD")
    peak = peak_above_mb(baseline)
    print(f"{mode}: K = {solver['lower_iters']}, {10 * args.features + 10} LL variables")
    losses = ", ".join(f"{v:.4f}" for v in history["UL loss"])
    print(f"UL (validation) loss per iteration: {losses}")
    print(f"time per UL iteration {np.median(times):.1f} s, peak memory above the start "
          f"{peak:.0f} MiB")
    print(f"held-out test accuracy of the lower-level model {accuracy(lower, test):.3f}")
    if args.plot:
        save_plot(history, args.plot, "long unroll (validation loss)")
    return {"ul_losses": history["UL loss"], "peak_mb": peak, "seconds": float(np.median(times))}


if __name__ == "__main__":
    main()
