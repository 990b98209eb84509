"""Per-feature L2 regularisation learned by bilevel optimisation.

Lower level: multinomial logistic regression on a small training set with an L2
penalty of per-feature strength exp(w_j). Upper level: cross-entropy on a
validation set, w.r.t. the log-strengths w. The data are synthetic (generated
here, no download): a few informative features among many noisy ones, with few
training samples, so a good per-feature penalty matters.

    python examples/l2_regularization.py                 # RHG (NGD+RAD), CPU
    python examples/l2_regularization.py --config configs/cg.yaml --iters 50
"""

from _common import jboat, jt, np, parser, progress, save_plot, setup


class LogisticRegression(jt.Module):
    def __init__(self, features, classes):
        self.weight = jt.zeros((features, classes))
        self.bias = jt.zeros((classes,))

    def execute(self, x):
        return jt.matmul(x, self.weight) + self.bias


class LogStrength(jt.Module):
    """Upper-level variables: log of the per-feature L2 strengths."""

    def __init__(self, features, init=-2.0):
        self.log_strength = jt.full((features,), init)

    def execute(self):
        return self.log_strength


def lower_loss(feed, upper_model, lower_model, **kwargs):
    logits = lower_model(feed["x"], **kwargs)
    weight = kwargs["params"][0] if "params" in kwargs else lower_model.weight
    penalty = (jt.exp(upper_model()).reshape(-1, 1) * weight * weight).sum()
    return jt.nn.cross_entropy_loss(logits, feed["y"]) + 0.5 * penalty


def upper_loss(feed, upper_model, lower_model, **kwargs):
    return jt.nn.cross_entropy_loss(lower_model(feed["x"], **kwargs), feed["y"])


def make_data(seed, n_train=100, n_val=200, n_test=1000, informative=10, noise=40, classes=10):
    rng = np.random.RandomState(seed)
    centers = rng.randn(classes, informative) * 1.2
    def draw(n):
        y = rng.randint(classes, size=n)
        x = np.concatenate([centers[y] + rng.randn(n, informative),
                            rng.randn(n, noise) * 2.0], axis=1)
        return {"x": jt.array(x.astype(np.float32)), "y": jt.array(y.astype(np.int32))}
    return draw(n_train), draw(n_val), draw(n_test)


def accuracy(model, data):
    with jt.no_grad():
        pred = model(data["x"]).numpy().argmax(1)
    return float((pred == data["y"].numpy()).mean())


def main(argv=None):
    args = parser(__doc__.splitlines()[0], "rhg.yaml", iters=60).parse_args(argv)
    solver = setup(args)
    train, val, test = make_data(args.seed)
    features, classes = train["x"].shape[1], 10
    lower, upper = LogisticRegression(features, classes), LogStrength(features)
    solver.update({
        "lower_level_model": lower, "upper_level_model": upper,
        "lower_level_var": list(lower.parameters()), "upper_level_var": list(upper.parameters()),
        "lower_level_opt": jt.optim.SGD(lower.parameters(), lr=0.5),
        "upper_level_opt": jt.optim.Adam(upper.parameters(), lr=0.1),
    })
    solver.setdefault("track_losses", False)
    problem = jboat.Problem(solver, {"lower_level_loss": lower_loss,
                                     "upper_level_loss": upper_loss})
    problem.build_ll_solver().build_ul_solver()

    history = {"UL loss": []}
    bar = progress(range(args.iters), args.quiet, desc="bilevel", unit="it")
    for it in bar:
        results, _ = problem.run_iter(train, val, it)
        ul = next(r["gradient_operator_results"]["upper_loss"] for r in results
                  if "gradient_operator_results" in r) if not solver.get("fo_op") else results[0]["upper_loss"]
        history["UL loss"].append(ul)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(ul_loss=f"{ul:.4f}")
    with jt.no_grad():
        ll = float(lower_loss(train, upper, lower).item())
        ul = float(upper_loss(val, upper, lower).item())
    strengths = np.exp(upper.log_strength.numpy())
    print(f"final LL loss {ll:.4f}  UL (validation) loss {ul:.4f}")
    print(f"held-out test accuracy {accuracy(lower, test):.3f}")
    print(f"mean learned strength: informative features {strengths[:10].mean():.3g}, "
          f"noise features {strengths[10:].mean():.3g}")
    if args.plot:
        save_plot(history, args.plot, "L2 regularisation (validation loss)")
    return {"test_accuracy": accuracy(lower, test), "ul_loss": ul}


if __name__ == "__main__":
    main()
