"""Differentiable architecture search (DARTS) on a tiny cell.

The network: a linear stem maps the input to node 0 of a cell with two more nodes,
node 1 = op(0,1)(node 0) and node 2 = op(0,2)(node 0) + op(1,2)(node 1), and a linear
classifier reads node 2. Each edge (i,j) is a mixed operation, the softmax-weighted
sum of the candidates {identity, tanh-linear, relu-linear, zero} with weights
softmax(alpha_(i,j)). Upper level: the architecture weights alpha (held by their own
module, not among the network's parameters) minimise the validation loss. Lower level:
the network weights are trained on the training split. The default recipe is DARTS'
second-order approximation (one unrolled step + finite-difference Hessian-vector
product, configs/darts.yaml), alternating one weight step and one architecture step.

Data (no download): scikit-learn's bundled 8x8 digits, or a synthetic data set when
scikit-learn is missing (--data synthetic forces it).

    python examples/nas_darts.py
    python examples/nas_darts.py --config configs/rhg.yaml --iters 100 --plot darts.png

Reported: the operation chosen on each edge (largest alpha, "zero" excluded as in
DARTS), the softmax weights, and the validation / test accuracy of the searched
network (the mixed cell with the learned weights).
"""

from _common import jboat, jt, np, parser, progress, save_plot, setup
from _data import load_classification, split, to_feed

OPERATIONS = ("identity", "tanh-linear", "relu-linear", "zero")
EDGES = ((0, 1), (0, 2), (1, 2))
CLASSES = 10


class MixedEdge(jt.Module):
    """Candidate operations of one edge; ``execute(z, weights)`` mixes them."""

    def __init__(self, width):
        self.tanh_linear = jt.nn.Linear(width, width)
        self.relu_linear = jt.nn.Linear(width, width)

    def execute(self, z, weights):
        candidates = (z, jt.tanh(self.tanh_linear(z)), jt.nn.relu(self.relu_linear(z)))
        # the "zero" candidate contributes weights[3] * 0
        return sum(weights[k] * c for k, c in enumerate(candidates))


class Network(jt.Module):
    """The lower-level model: its parameters are the network weights only."""

    def __init__(self, features, width, classes):
        self.stem = jt.nn.Linear(features, width)
        self.edges = jt.nn.ModuleList([MixedEdge(width) for _ in EDGES])
        self.classifier = jt.nn.Linear(width, classes)

    def execute(self, x, alphas):
        weights = jt.nn.softmax(alphas, dim=1)
        nodes = [jt.tanh(self.stem(x))]
        for j in (1, 2):
            nodes.append(sum(self.edges[e](nodes[i], weights[e])
                             for e, (i, jj) in enumerate(EDGES) if jj == j))
        return self.classifier(nodes[2])


class Architecture(jt.Module):
    """The upper-level variables: one row of operation logits per edge."""

    def __init__(self, seed):
        init = np.random.RandomState(seed).randn(len(EDGES), len(OPERATIONS)) * 1e-3
        self.alphas = jt.array(init.astype(np.float32))

    def execute(self):
        return self.alphas


def cross_entropy(feed, upper_model, lower_model, **kwargs):
    return jt.nn.cross_entropy_loss(lower_model(feed["x"], upper_model(), **kwargs), feed["y"])


def lower_loss(feed, upper_model, lower_model, **kwargs):
    return cross_entropy(feed, upper_model, lower_model, **kwargs)


def upper_loss(feed, upper_model, lower_model, **kwargs):
    return cross_entropy(feed, upper_model, lower_model, **kwargs)


def aggregated_loss(ll_feed, ul_feed, upper_model, lower_model, **kwargs):
    """BDA's alpha F + (1 - alpha) f (for recipes with GDA)."""
    alpha = ll_feed["alpha"]
    return (alpha * upper_loss(ul_feed, upper_model, lower_model, **kwargs)
            + (1 - alpha) * lower_loss(ll_feed, upper_model, lower_model, **kwargs))


def evaluate(network, architecture, data):
    with jt.no_grad():
        logits = network(data["x"], architecture())
        loss = float(jt.nn.cross_entropy_loss(logits, data["y"]).item())
        accuracy = float((logits.numpy().argmax(1) == data["y"].numpy()).mean())
    return loss, accuracy


def derive(alphas):
    """DARTS' discrete cell: the strongest non-zero operation of each edge."""
    keep = [k for k, name in enumerate(OPERATIONS) if name != "zero"]
    return [OPERATIONS[keep[int(np.argmax(row[keep]))]] for row in alphas]


def build_parser():
    p = parser(__doc__.splitlines()[0], "darts.yaml", iters=300)
    p.add_argument("--data", choices=("digits", "synthetic"), default="digits")
    p.add_argument("--n-train", type=int, default=500)
    p.add_argument("--n-val", type=int, default=500)
    p.add_argument("--width", type=int, default=32, help="cell width")
    p.add_argument("--lower-lr", type=float, default=0.5, help="weights' SGD learning rate")
    p.add_argument("--upper-lr", type=float, default=0.01, help="architecture Adam lr")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    solver = setup(args)
    x, y, source = load_classification(args.data, args.seed, quiet=args.quiet)
    (xtr, ytr), (xva, yva), (xte, yte) = split(x, y, [args.n_train, args.n_val, None],
                                               args.seed)
    train, val, test = (to_feed(xtr, ytr, CLASSES), to_feed(xva, yva, CLASSES),
                        to_feed(xte, yte, CLASSES))
    network = Network(x.shape[1], args.width, CLASSES)
    architecture = Architecture(args.seed)
    solver.update({
        "lower_level_model": network, "upper_level_model": architecture,
        "lower_level_var": list(network.parameters()),
        "upper_level_var": [architecture.alphas],
        "lower_level_opt": jt.optim.SGD(network.parameters(), lr=args.lower_lr),
        "upper_level_opt": jt.optim.Adam([architecture.alphas], lr=args.upper_lr),
    })
    solver.setdefault("track_losses", False)
    problem = jboat.Problem(solver, {"lower_level_loss": lower_loss,
                                     "upper_level_loss": upper_loss,
                                     "gda_loss": aggregated_loss})
    problem.build_ll_solver().build_ul_solver()

    history = {"validation loss": [], "training loss": []}
    bar = progress(range(args.iters), args.quiet, desc="DARTS", unit="it")
    for it in bar:
        problem.run_iter(train, val, it)
        with jt.no_grad():
            history["validation loss"].append(float(upper_loss(val, architecture, network).item()))
            history["training loss"].append(float(lower_loss(train, architecture, network).item()))
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(val_loss=f"{history['validation loss'][-1]:.4f}")

    alphas = architecture.alphas.numpy()
    weights = np.exp(alphas - alphas.max(1, keepdims=True))
    weights = weights / weights.sum(1, keepdims=True)
    genotype = derive(alphas)
    val_loss, val_acc = evaluate(network, architecture, val)
    _, test_acc = evaluate(network, architecture, test)
    print(f"data: {source}; {args.n_train} train, {args.n_val} validation, "
          f"{len(yte)} test samples")
    for (i, j), op, row in zip(EDGES, genotype, weights):
        mix = "  ".join(f"{name} {w:.2f}" for name, w in zip(OPERATIONS, row))
        print(f"edge {i}->{j}: {op:<12s} (softmax: {mix})")
    print(f"validation loss {val_loss:.4f}  accuracy {val_acc:.3f};  test accuracy {test_acc:.3f}")
    if args.plot:
        save_plot(history, args.plot, "DARTS (tiny cell)")
    return {"genotype": genotype, "op_weights": weights.tolist(), "val_loss": val_loss,
            "val_accuracy": val_acc, "test_accuracy": test_acc}


if __name__ == "__main__":
    main()
