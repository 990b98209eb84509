"""Differentiable architecture search (DARTS) with convolutional cells.

The search space is the one of DARTS' CIFAR-10 experiments (``examples/darts_space.py``):
a stem convolution, ``--layers`` cells (reduction cells at 1/3 and 2/3 of the depth),
each cell with ``--steps`` intermediate nodes, every edge a softmax-weighted mixture of
the 8 candidates (none, 3x3 max / average pooling, skip connection, 3x3 / 5x5 separable
and dilated convolutions). Upper level: the architecture logits of the normal and of
the reduction cell (their own module, not among the network's parameters), trained
with Adam on the validation loss. Lower level: the network weights, trained with SGD
(momentum 0.9, weight decay 3e-4) on the training loss. Every iteration takes one
architecture step through ``problem.run_iter``, on a training and a validation
minibatch, and that call also takes the weight step.

``--recipe`` picks the hyper-gradient:

* ``first-order`` (DARTS-V1): ``NGD`` + ``[FOA, RAD]``, one lower step whose step
  gradient is a constant, so the architecture gradient is the validation gradient at
  the stepped weights (no second-order term);
* ``second-order-fd`` (DARTS-V2, default): ``configs/darts.yaml``, one unrolled step and
  DARTS' finite-difference Hessian-vector product;
* ``second-order-rad``: ``configs/rhg.yaml`` with ``lower_iters: 1``, the exact
  one-step unrolled hyper-gradient by reverse mode.

``--config`` replaces the recipe by any YAML/JSON file, used as it is.

Data (never downloaded): ``--data-dir`` reads CIFAR-10's python pickles
(``data_batch_1`` ... ``data_batch_5``), only as many images as ``--n-train`` and
``--n-val`` ask for; without it, scikit-learn's bundled 8x8 digits become small colour
images (upsampled, placed at a random offset, random foreground and background
colours), or a synthetic data set of the same form when scikit-learn is missing.

    python examples/nas_darts.py
    python examples/nas_darts.py --recipe first-order --iters 100 --plot alphas.png
    python examples/nas_darts.py --data-dir ~/cifar-10-batches-py --image-size 32 \
        --channels 16 --layers 8 --batch-size 64 --iters 1000

Printed: the genotype (two strongest inputs of each node, ``none`` excluded, as in
DARTS) of the normal and reduction cells, and the validation accuracy of the
searched (mixed) network.
"""

import os
import pickle
import sys
import time

from _common import jboat, jt, np, parser, progress, pyplot, setup
from _data import load_digits, synthetic_classification
from darts_space import PRIMITIVES, Architecture, MixedOp, Network, edge_count, genotype

CLASSES = 10
HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = os.path.join(os.path.dirname(HERE), "configs")

#: recipe name -> (YAML file in configs/, overrides)
RECIPES = {
    "first-order": ("rhg.yaml", {"na_op": ["FOA", "RAD"], "lower_iters": 1}),
    "second-order-fd": ("darts.yaml", {"lower_iters": 1}),
    "second-order-rad": ("rhg.yaml", {"lower_iters": 1}),
}


# -- data ------------------------------------------------------------------------------------
def _interpolation(n_in, n_out):
    """(n_out, n_in) linear interpolation matrix (pixel centres aligned)."""
    matrix = np.zeros((n_out, n_in), dtype=np.float32)
    for i in range(n_out):
        pos = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1.0)
        lo = int(np.floor(pos))
        hi = min(lo + 1, n_in - 1)
        matrix[i, lo] += 1.0 - (pos - lo)
        matrix[i, hi] += pos - lo
    return matrix


def resize(images, size):
    """Bilinear resize of ``(n, c, h, w)`` images to ``size x size``."""
    n, c, h, w = images.shape
    if (h, w) == (size, size):
        return images
    rows, cols = _interpolation(h, size), _interpolation(w, size)
    return np.einsum("ih,nchw,jw->ncij", rows, images, cols).astype(np.float32)


def coloured_digits(gray, size, seed):
    """Grey ``(n, 8, 8)`` glyphs in [0, 1] -> ``(n, 3, size, size)`` colour images: each
    glyph is upsampled to 3/4 of the side, placed at a random offset and painted with a
    random foreground colour on a random darker background."""
    rng = np.random.RandomState(seed + 4099)
    n = len(gray)
    inner = max(size * 3 // 4, gray.shape[1])
    glyphs = resize(gray[:, None].astype(np.float32), inner)[:, 0]
    canvas = np.zeros((n, size, size), dtype=np.float32)
    offsets = rng.randint(0, size - inner + 1, size=(n, 2))
    for k, (a, b) in enumerate(offsets):
        canvas[k, a:a + inner, b:b + inner] = glyphs[k]
    foreground = rng.uniform(0.5, 1.0, size=(n, 3, 1, 1))
    background = rng.uniform(0.0, 0.35, size=(n, 3, 1, 1))
    canvas = np.clip(canvas, 0.0, 1.0)[:, None]
    return (background + (foreground - background) * canvas).astype(np.float32)


def load_offline(size, seed, quiet=False):
    """The default data: digits as colour images, or the synthetic stand-in."""
    try:
        x, y = load_digits()
        source = "scikit-learn digits as colour images"
    except ImportError:
        if not quiet:
            print("scikit-learn is not installed: using a synthetic data set instead "
                  "(pip install 'jboat[examples]' for the digits).", file=sys.stderr)
        x, y = synthetic_classification(seed, n=1800, features=64)
        x = 1.0 / (1.0 + np.exp(-x))   # into [0, 1] like the digits' pixels
        source = "synthetic 8x8 patterns as colour images"
    images = coloured_digits(x.reshape(-1, 8, 8), size, seed)
    return images, y.astype(np.int32), source


def load_cifar10(directory, count, size):
    """The first ``count`` training images of CIFAR-10's python pickles in
    ``directory`` (``data_batch_1`` ... ``data_batch_5``, read only as far as needed),
    as float32 ``(count, 3, size, size)`` in [0, 1] and int32 labels."""
    images, labels, have = [], [], 0
    for k in range(1, 6):
        if have >= count:
            break
        path = os.path.join(directory, f"data_batch_{k}")
        if not os.path.exists(path) and k > 1:
            break
        if not os.path.exists(path):
            raise SystemExit(f"{path} not found: --data-dir must be the folder holding "
                             "CIFAR-10's python pickles (data_batch_1 ... data_batch_5).")
        with open(path, "rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)[:count - have]
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int32)[:count - have])
        have += len(data)
    if have < count:
        raise SystemExit(f"asked for {count} images but the training batches in "
                         f"{directory} hold {have}; lower --n-train / --n-val.")
    x = np.concatenate(images).astype(np.float32) / 255.0
    return resize(x, size), np.concatenate(labels)


def search_data(args):
    """``(train, val, description)``: each ``(x, y)`` NumPy arrays, the images
    standardised per channel with the training split's statistics."""
    count = args.n_train + args.n_val
    if args.data_dir:
        x, y = load_cifar10(args.data_dir, count, args.image_size)
        source = f"CIFAR-10 from {args.data_dir}"
    else:
        x, y, source = load_offline(args.image_size, args.seed, quiet=args.quiet)
        if count > len(y):
            raise SystemExit(f"asked for {count} images but the offline data set has "
                             f"{len(y)}; lower --n-train / --n-val.")
    order = np.random.RandomState(args.seed).permutation(len(y))[:count]
    x, y = x[order], y[order]
    mean = x[:args.n_train].mean(axis=(0, 2, 3), keepdims=True)
    std = x[:args.n_train].std(axis=(0, 2, 3), keepdims=True) + 1e-6
    x = ((x - mean) / std).astype(np.float32)
    return ((x[:args.n_train], y[:args.n_train]), (x[args.n_train:], y[args.n_train:]),
            source)


class Batches:
    """Endless minibatches of a fixed size, reshuffled at every epoch."""

    def __init__(self, x, y, size, rng):
        if size > len(y):
            raise SystemExit(f"--batch-size {size} is larger than a split ({len(y)} images).")
        self.x, self.y, self.size, self.rng = x, y, size, rng
        self.order, self.pos = rng.permutation(len(y)), 0

    def next(self):
        if self.pos + self.size > len(self.order):
            self.order, self.pos = self.rng.permutation(len(self.y)), 0
        idx = self.order[self.pos:self.pos + self.size]
        self.pos += self.size
        return {"x": jt.array(self.x[idx]), "y": jt.array(self.y[idx])}


# -- network -------------------------------------------------------------------------------------
class StackedMixedOp(MixedOp):
    """:class:`darts_space.MixedOp` with the weighted sum taken as one product of the
    stacked candidate outputs and the weight vector: the same values and derivatives.
    Jittor 1.3.11 generates a fused kernel it cannot compile (``'range1' was not
    declared``) for the finite-difference recipe's architecture gradient of the
    candidate-by-candidate sum at some sizes (C=2, 2 steps, batch 2, for one); the
    stacked form compiles, and with fewer kernels."""

    def execute(self, x, weights):
        outputs = jt.stack([op(x) for op in self.ops], dim=0)
        return (outputs * weights.reshape((-1, 1, 1, 1, 1))).sum(dim=0)


def search_network(args):
    network = Network(c=args.channels, classes=CLASSES, layers=args.layers, steps=args.steps,
                      multiplier=args.steps, primitives=PRIMITIVES, in_channels=3)
    for cell in network.cells:
        for edge in cell.edges:
            edge.__class__ = StackedMixedOp
    network.train()
    return network


# -- losses ----------------------------------------------------------------------------------
def cross_entropy(feed, upper_model, lower_model, **kwargs):
    return jt.nn.cross_entropy_loss(lower_model(feed["x"], upper_model(), **kwargs), feed["y"])


def lower_loss(feed, upper_model, lower_model, **kwargs):
    return cross_entropy(feed, upper_model, lower_model, **kwargs)


def upper_loss(feed, upper_model, lower_model, **kwargs):
    return cross_entropy(feed, upper_model, lower_model, **kwargs)


def aggregated_loss(ll_feed, ul_feed, upper_model, lower_model, **kwargs):
    """BDA's alpha F + (1 - alpha) f, for a ``--config`` with GDA."""
    alpha = ll_feed["alpha"]
    return (alpha * upper_loss(ul_feed, upper_model, lower_model, **kwargs)
            + (1 - alpha) * lower_loss(ll_feed, upper_model, lower_model, **kwargs))


# -- evaluation and reporting --------------------------------------------------------------------
def evaluate(network, architecture, x, y, batch):
    """Loss and accuracy of the mixed network (BatchNorm running statistics), in
    chunks of ``batch`` images (the remainder, if any, in one more chunk)."""
    network.eval()
    total, correct = 0.0, 0
    try:
        with jt.no_grad():
            for start in range(0, len(y), batch):
                labels = y[start:start + batch]
                logits = network(jt.array(x[start:start + batch]), architecture())
                loss = jt.nn.cross_entropy_loss(logits, jt.array(labels))
                total += float(loss.item()) * len(labels)
                correct += int((logits.numpy().argmax(1) == labels).sum())
    finally:
        network.train()
    return total / len(y), correct / len(y)


def softmax(logits):
    weights = np.exp(logits - logits.max(1, keepdims=True))
    return weights / weights.sum(1, keepdims=True)


def edge_names(steps):
    names = []
    for node in range(steps):
        names += [f"{src}->{node + 2}" for src in range(node + 2)]
    return names


def format_genotype(cell, steps):
    """``node 2: sep_conv_3x3(0) + skip_connect(1)``-style lines."""
    lines = []
    for node in range(steps):
        pair = cell[2 * node:2 * node + 2]
        lines.append(f"  node {node + 2}: " + " + ".join(f"{op}({src})" for op, src in pair))
    return lines


def save_alpha_plot(history, primitives, steps, path, title):
    """One panel per edge, normal cell above reduction cell: the softmax weight of each
    candidate over the iterations."""
    plt = pyplot()
    names = edge_names(steps)
    fig, axes = plt.subplots(2, len(names), figsize=(2.2 * len(names) + 1.5, 4.8),
                             sharex=True, sharey=True, squeeze=False)
    for row, cell in enumerate(("normal", "reduce")):
        weights = np.asarray(history[cell])   # (iters + 1, edges, ops)
        for e, name in enumerate(names):
            ax = axes[row, e]
            for k, primitive in enumerate(primitives):
                ax.plot(weights[:, e, k], label=primitive, lw=1.2)
            ax.set_title(f"{cell} {name}", fontsize=8)
            ax.tick_params(labelsize=7)
    for ax in axes[1]:
        ax.set_xlabel("iteration", fontsize=8)
    axes[0, 0].set_ylabel("softmax weight", fontsize=8)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1 - 1.4 / fig.get_figwidth(), 1))
    fig.savefig(path)
    plt.close(fig)


# -- main --------------------------------------------------------------------------------------
def build_parser():
    p = parser(__doc__.splitlines()[0], "darts.yaml", iters=50)
    p.set_defaults(config=None)
    p.add_argument("--recipe", choices=tuple(RECIPES), default="second-order-fd",
                   help="first-order (DARTS-V1, NGD+FOA+RAD), second-order-fd (DARTS-V2, "
                        "NGD+FD) or second-order-rad (NGD+RAD); --config overrides it")
    p.add_argument("--data-dir", default=None,
                   help="folder with CIFAR-10's python pickles (data_batch_1..5); "
                        "default: offline digits as colour images")
    p.add_argument("--n-train", type=int, default=500)
    p.add_argument("--n-val", type=int, default=500)
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--channels", type=int, default=4, help="initial channels C")
    p.add_argument("--layers", type=int, default=3, help="cells (2 of them reduction cells)")
    p.add_argument("--steps", type=int, default=4, help="intermediate nodes per cell")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lower-lr", type=float, default=0.025, help="weights' SGD lr")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=3e-4)
    p.add_argument("--upper-lr", type=float, default=3e-4, help="architecture Adam lr")
    p.add_argument("--upper-weight-decay", type=float, default=1e-3)
    return p


def solver_config(args):
    """The recipe's configuration and its label."""
    if args.config is not None:
        return setup(args), os.path.basename(args.config)
    name, overrides = RECIPES[args.recipe]
    args.config = os.path.join(CONFIGS, name)
    solver = setup(args)
    solver.update(overrides)
    return solver, args.recipe


def main(argv=None):
    args = build_parser().parse_args(argv)
    solver, label = solver_config(args)
    (xtr, ytr), (xva, yva), source = search_data(args)
    rng = np.random.RandomState(args.seed + 1)
    train, val = Batches(xtr, ytr, args.batch_size, rng), Batches(xva, yva, args.batch_size, rng)

    network = search_network(args)
    architecture = Architecture(steps=args.steps, primitives=PRIMITIVES, seed=args.seed)
    arch_vars = [architecture.normal, architecture.reduce]
    # BatchNorm's running statistics are parameters with stop_grad in Jittor: not weights
    weights = [p for p in network.parameters() if not p.is_stop_grad()]
    solver.update({
        "lower_level_model": network, "upper_level_model": architecture,
        "lower_level_var": weights, "upper_level_var": arch_vars,
        "lower_level_opt": jt.optim.SGD(weights, lr=args.lower_lr, momentum=args.momentum,
                                        weight_decay=args.weight_decay),
        "upper_level_opt": jt.optim.Adam(arch_vars, lr=args.upper_lr, betas=(0.5, 0.999),
                                         weight_decay=args.upper_weight_decay),
        "track_losses": True,
    })
    problem = jboat.Problem(solver, {"lower_level_loss": lower_loss,
                                     "upper_level_loss": upper_loss,
                                     "gda_loss": aggregated_loss})
    problem.build_ll_solver().build_ul_solver()
    # materialise the initial values and the optimizers' zero buffers: Jittor creates
    # them lazily, and an iteration that has to be rerun (jboat's fallback when Jittor
    # fails to compile a fused kernel) restores them
    pending = list(network.parameters()) + arch_vars
    for opt in (solver["lower_level_opt"], solver["upper_level_opt"]):
        for group in opt.param_groups:
            pending += [v for key in ("values", "m", "grads") for v in group.get(key, [])]
    jt.sync(pending)

    initial = [a.numpy().copy() for a in arch_vars]
    alpha_history = {"normal": [softmax(initial[0])], "reduce": [softmax(initial[1])]}
    step_times = []
    start = time.perf_counter()
    bar = progress(range(args.iters), args.quiet, desc=f"DARTS {label}", unit="it")
    for it in bar:
        _, run_time = problem.run_iter(train.next(), val.next(), it)
        step_times.append(run_time)
        alpha_history["normal"].append(softmax(architecture.normal.numpy()))
        alpha_history["reduce"].append(softmax(architecture.reduce.numpy()))
        if hasattr(bar, "set_postfix") and problem.loss_history:
            record = problem.loss_history[-1]
            bar.set_postfix(train=f"{record['ll_loss']:.3f}", val=f"{record['ul_loss']:.3f}")
    wall = time.perf_counter() - start

    final = [a.numpy() for a in arch_vars]
    normal = genotype(final[0], PRIMITIVES, args.steps)
    reduce = genotype(final[1], PRIMITIVES, args.steps)
    val_loss, val_acc = evaluate(network, architecture, xva, yva, 100)
    # the first iterations compile Jittor kernels: the median is the steady-state cost
    warm = step_times[2:] or step_times
    seconds_per_iter = float(np.median(warm)) if warm else float("nan")

    print(f"data: {source}; {len(ytr)} train / {len(yva)} validation images "
          f"3x{args.image_size}x{args.image_size}")
    print(f"search: {label}, C={args.channels}, {args.layers} cells, {args.steps} steps, "
          f"batch {args.batch_size}, {args.iters} iterations")
    print("normal cell:")
    print("\n".join(format_genotype(normal, args.steps)))
    print("reduction cell:")
    print("\n".join(format_genotype(reduce, args.steps)))
    print(f"validation loss {val_loss:.4f}  accuracy {val_acc:.3f} (mixed network)")
    print(f"{seconds_per_iter:.3f} s per search iteration (median after 2); "
          f"wall {wall:.1f} s")
    if args.plot:
        save_alpha_plot(alpha_history, PRIMITIVES, args.steps, args.plot,
                        f"DARTS ({label}): architecture weights per edge")
    return {
        "recipe": label, "data": source,
        "genotype": {"normal": normal, "reduce": reduce},
        "alphas": {"normal": final[0].tolist(), "reduce": final[1].tolist()},
        "initial_alphas": {"normal": initial[0].tolist(), "reduce": initial[1].tolist()},
        "edges": edge_count(args.steps),
        "val_loss": val_loss, "val_accuracy": val_acc,
        "lower_losses": [r["ll_loss"] for r in problem.loss_history],
        "upper_losses": [r["ul_loss"] for r in problem.loss_history],
        "seconds_per_iter": seconds_per_iter, "wall_seconds": wall,
    }


if __name__ == "__main__":
    main()
