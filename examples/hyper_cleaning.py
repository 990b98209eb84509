"""Data hyper-cleaning: learn per-sample weights that switch off corrupted labels.

Upper level: one logit u_i per training sample, weight sigmoid(u_i); loss = cross-
entropy of the classifier on a small clean validation set. Lower level: multinomial
logistic regression trained on the weighted training loss
    f(u, W) = mean_i sigmoid(u_i) CE(W; x_i, noisy y_i) + reg |W|^2,
where a fraction of the training labels was replaced by a wrong class. A sample whose
weight ends below 0.5 is flagged as corrupted.

Data (no download): scikit-learn's bundled 8x8 digits (pip install 'jboat[examples]');
without scikit-learn a synthetic data set, with a message; or MNIST / Fashion-MNIST
idx files you already have, with --mnist-dir.

    python examples/hyper_cleaning.py                        # RHG (NGD+RAD), warm start
    python examples/hyper_cleaning.py --config configs/cg.yaml
    python examples/hyper_cleaning.py --mnist-dir ~/data/fashion --n-train 2000 --plot hc.png

Reported: test accuracy of the cleaned classifier, of a baseline trained on the noisy
labels without weights (same model, same number of SGD steps, same learning rate),
and precision / recall / F1 of the corrupted-label detection.
"""

from _common import jboat, jt, np, parser, progress, save_plot, setup
from _data import corrupt_labels, load_classification, split, to_feed

CLASSES = 10


class LogisticRegression(jt.Module):
    def __init__(self, features, classes):
        self.weight = jt.zeros((features, classes))
        self.bias = jt.zeros((classes,))

    def execute(self, x):
        return jt.matmul(x, self.weight) + self.bias


class SampleLogits(jt.Module):
    """Upper-level variables: one weight logit per training sample."""

    def __init__(self, n, init=0.0):
        self.logits = jt.full((n,), init)

    def execute(self):
        return self.logits


def per_sample_ce(logits, onehot):
    return -(jt.nn.log_softmax(logits, dim=1) * onehot).sum(1)


def lower_loss(feed, upper_model, lower_model, reg=1e-3, **kwargs):
    weight = jt.sigmoid(upper_model())
    ce = per_sample_ce(lower_model(feed["x"], **kwargs), feed["onehot"])
    w = kwargs["params"][0] if "params" in kwargs else lower_model.weight
    return (weight * ce).mean() + reg * (w * w).sum()


def upper_loss(feed, upper_model, lower_model, **kwargs):
    return per_sample_ce(lower_model(feed["x"], **kwargs), feed["onehot"]).mean()


def aggregated_loss(ll_feed, ul_feed, upper_model, lower_model, reg=1e-3, **kwargs):
    """BDA's aggregation alpha F + (1 - alpha) f (for recipes with GDA)."""
    alpha = ll_feed["alpha"]
    return (alpha * upper_loss(ul_feed, upper_model, lower_model, **kwargs)
            + (1 - alpha) * lower_loss(ll_feed, upper_model, lower_model, reg=reg, **kwargs))


def accuracy(model, data):
    with jt.no_grad():
        pred = model(data["x"]).numpy().argmax(1)
    return float((pred == data["y"].numpy()).mean())


def detection_scores(flagged, corrupted):
    tp = float(np.sum(flagged & corrupted))
    precision = tp / max(float(flagged.sum()), 1.0)
    recall = tp / max(float(corrupted.sum()), 1.0)
    f1 = 0.0 if tp == 0 else 2 * precision * recall / (precision + recall)
    return precision, recall, f1


def train_baseline(train, features, steps, lr, reg):
    """The same classifier trained on the noisy labels with uniform weights."""
    model = LogisticRegression(features, CLASSES)
    opt = jt.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        ce = per_sample_ce(model(train["x"]), train["onehot"]).mean()
        opt.step(ce + reg * (model.weight * model.weight).sum())
    return model


def build_parser():
    p = parser(__doc__.splitlines()[0], "rhg.yaml", iters=150)
    p.add_argument("--data", choices=("digits", "synthetic"), default="digits",
                   help="bundled digits (needs scikit-learn) or a synthetic data set")
    p.add_argument("--mnist-dir", default=None, metavar="PATH",
                   help="use local MNIST/Fashion-MNIST idx files (raw or .gz) instead")
    p.add_argument("--n-train", type=int, default=600)
    p.add_argument("--n-val", type=int, default=200)
    p.add_argument("--n-test", type=int, default=None, help="default: the rest (<= 5000)")
    p.add_argument("--corruption", type=float, default=0.4,
                   help="fraction of training labels replaced by a wrong class")
    p.add_argument("--lower-lr", type=float, default=1.0, help="LL SGD learning rate")
    p.add_argument("--upper-lr", type=float, default=0.3, help="UL Adam learning rate")
    p.add_argument("--reg", type=float, default=1e-3, help="L2 strength on the classifier")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    solver = setup(args)
    x, y, source = load_classification(args.data, args.seed, args.mnist_dir, args.quiet)
    n_test = args.n_test
    if n_test is None:
        n_test = min(len(y) - args.n_train - args.n_val, 5000)
    (xtr, ytr), (xva, yva), (xte, yte) = split(x, y, [args.n_train, args.n_val, n_test],
                                               args.seed)
    noisy, corrupted = corrupt_labels(ytr, args.corruption, CLASSES, args.seed)
    train, val, test = (to_feed(xtr, noisy, CLASSES), to_feed(xva, yva, CLASSES),
                        to_feed(xte, yte, CLASSES))
    features = x.shape[1]

    lower, upper = LogisticRegression(features, CLASSES), SampleLogits(args.n_train)
    solver.update({
        "lower_level_model": lower, "upper_level_model": upper,
        "lower_level_var": list(lower.parameters()), "upper_level_var": list(upper.parameters()),
        "lower_level_opt": jt.optim.SGD(lower.parameters(), lr=args.lower_lr),
        "upper_level_opt": jt.optim.Adam(upper.parameters(), lr=args.upper_lr),
    })
    solver.setdefault("track_losses", False)
    params = {"reg": args.reg}
    problem = jboat.Problem(solver, {
        "lower_level_loss": {"function": lower_loss, "params": params},
        "upper_level_loss": upper_loss,
        "gda_loss": {"function": aggregated_loss, "params": params}})
    problem.build_ll_solver().build_ul_solver()
    lower_steps = problem.boat_configs["lower_iters"]

    history = {"validation loss": []}
    bar = progress(range(args.iters), args.quiet, desc="hyper-cleaning", unit="it")
    for it in bar:
        problem.run_iter(train, val, it)
        with jt.no_grad():
            val_loss = float(upper_loss(val, upper, lower).item())
        history["validation loss"].append(val_loss)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(val_loss=f"{val_loss:.4f}")

    flagged = upper.logits.numpy() < 0.0          # sigmoid(u) < 0.5
    precision, recall, f1 = detection_scores(flagged, corrupted)
    steps = args.iters * lower_steps
    baseline = train_baseline(train, features, steps, args.lower_lr, args.reg)
    metrics = {
        "test_accuracy": accuracy(lower, test),
        "baseline_test_accuracy": accuracy(baseline, test),
        "f1": f1, "precision": precision, "recall": recall,
        "val_loss": history["validation loss"][-1] if history["validation loss"] else
        float(upper_loss(val, upper, lower).item()),
        "lower_steps": steps, "data": source,
    }
    print(f"data: {source}; {args.n_train} training samples, "
          f"{int(corrupted.sum())} with corrupted labels; {args.n_val} validation, "
          f"{n_test} test")
    print(f"test accuracy: bilevel {metrics['test_accuracy']:.3f}  vs  baseline on noisy "
          f"labels {metrics['baseline_test_accuracy']:.3f} ({steps} SGD steps each)")
    print(f"corrupted-label detection (weight < 0.5): precision {precision:.3f}  "
          f"recall {recall:.3f}  F1 {f1:.3f}")
    if args.plot:
        save_plot(history, args.plot, "Data hyper-cleaning")
    return metrics


if __name__ == "__main__":
    main()
