"""Few-shot image classification with a Conv4 network: MAML, FOMAML, ANIL and iMAML.

N-way K-shot tasks: N classes drawn from a pool, K labelled images of each (support
set) and Q more of each to score the adapted network (query set). The network is the
standard Conv4 of the few-shot literature, built from stock Jittor layers:
4 x [Conv2d 3x3 -> BatchNorm2d -> ReLU -> MaxPool2d 2x2] -> Linear (N outputs).
The lower level adapts it to one task with ``lower_iters`` SGD steps on the support
cross-entropy; the upper level learns the initialisation that minimises the query
cross-entropy after adaptation, summed over a meta-batch of tasks.

    python examples/few_shot.py                                 # MAML (NGD + IAD)
    python examples/few_shot.py --config configs/fomaml.yaml    # first-order MAML
    python examples/few_shot.py --adapt head                    # ANIL: adapt the head only
    python examples/few_shot.py --config configs/imaml_implicit.yaml  # iMAML (CG)
    python examples/few_shot.py --config configs/imaml.yaml     # upstream's IAD + CG
    python examples/few_shot.py --channels 64 --iters 2000      # the paper-sized Conv4

ANIL (Raghu et al., ICLR 2020) is MAML's recipe with other lower-level variables, so it
is a switch, not a recipe file: with ``--adapt head`` the lower-level variables are the
final Linear layer only (``lower_level_var`` and the lower-level optimizer hold the
head), the upper level still learns every weight (with configs/fomaml.yaml: first-order
ANIL).

Data (nothing is downloaded): scikit-learn's bundled digits (8x8) upsampled to 28x28,
with rotations by 90/180/270 degrees as extra classes (the Omniglot practice). Digits
0-6 give the meta-training classes, 7-9 the meta-test classes; 0, 1 and 8 look alike
after a half turn, so they only get the 0 and 90 degree classes. ``--data-dir DIR``
reads arrays you already have instead (Omniglot, miniImageNet): ``DIR/train.npy`` and
``DIR/test.npy`` (optionally ``DIR/val.npy``, unused), each of shape
``(classes, examples_per_class, H, W)`` for grey images or
``(classes, examples_per_class, H, W, 3)`` for colour, dtype uint8 (0-255) or float
(0-1); H = W is any size (28 for Omniglot, 84 for miniImageNet).

BatchNorm runs in training mode throughout (batch statistics of the support set while
adapting and of the query set when scoring, as in MAML): the running statistics are
never used.

Reported on meta-test tasks: query accuracy after adapting the meta-learned network
with the same number of SGD steps (lower_iters, same learning rate) on the support
set, against two non-meta-learned baselines: the randomly initialised network adapted
the same way, and a network pre-trained by plain supervised learning on all
meta-training classes (same number of Adam steps and images) whose head is replaced
by a new linear layer trained on the support set (``--baseline-steps`` SGD steps).
"""

import time

from _common import jboat, jt, meta_train, np, parser, progress, save_plot, setup

#: default proximal strength of iMAML's regulariser (CG/NS in na_op); with the default
#: inner lr 0.1 the proximal part of each step shrinks y - theta by 1 - 0.1 * 5 = 0.5
IMPLICIT_PROXIMAL = 5.0
#: digits whose half turn looks like the digit itself: only 0 and 90 degrees
SYMMETRIC_DIGITS = (0, 1, 8)
TEST_DIGITS = (7, 8, 9)


# -- data ------------------------------------------------------------------------------
def _interpolation_matrix(n_in, n_out):
    """Bilinear resampling ``n_in -> n_out`` (pixel centres aligned), as a matrix."""
    centres = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    centres = np.clip(centres, 0, n_in - 1)
    low = np.floor(centres).astype(int)
    high = np.minimum(low + 1, n_in - 1)
    frac = centres - low
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), low] += 1 - frac
    m[np.arange(n_out), high] += frac
    return m


def digit_classes(size=28):
    """{(digit, quarter_turns): images (n, 1, size, size)} from scikit-learn's digits."""
    from _data import load_digits

    try:
        x, y = load_digits()
    except ImportError:
        raise SystemExit("The default data set is scikit-learn's digits: pip install "
                         "'jboat[examples]' (or scikit-learn), or pass --data-dir.")
    m = _interpolation_matrix(8, size)
    images = np.einsum("ij,njk,lk->nil", m, x.reshape(-1, 8, 8), m).astype(np.float32)
    classes = {}
    for digit in range(10):
        own = images[y == digit]
        for turns in ((0, 1) if digit in SYMMETRIC_DIGITS else (0, 1, 2, 3)):
            classes[(digit, turns)] = np.ascontiguousarray(
                np.rot90(own, turns, axes=(1, 2)))[:, None]
    return classes


def digits_split(size=28):
    """(meta-train pool, meta-test pool): lists of per-class image arrays."""
    classes = digit_classes(size)
    train = [v for (d, _), v in sorted(classes.items()) if d not in TEST_DIGITS]
    test = [v for (d, _), v in sorted(classes.items()) if d in TEST_DIGITS]
    return train, test


def _as_images(array, name):
    array = np.asarray(array)
    if array.ndim == 5 and array.shape[-1] in (1, 3):
        array = np.moveaxis(array, -1, 2)          # (C, N, H, W, ch) -> (C, N, ch, H, W)
    elif array.ndim == 4:
        array = array[:, :, None]
    else:
        raise SystemExit(f"{name}: expected shape (classes, examples, H, W) or "
                         f"(classes, examples, H, W, 3), got {array.shape}.")
    if array.shape[-1] != array.shape[-2]:
        raise SystemExit(f"{name}: images must be square, got {array.shape[-2:]}.")
    array = array.astype(np.float32)
    if array.max() > 1.5:
        array /= 255.0
    return [array[c] for c in range(array.shape[0])]


def load_data_dir(path):
    """(meta-train pool, meta-test pool) from ``path/train.npy`` and ``path/test.npy``."""
    import os

    pools = []
    for part in ("train", "test"):
        name = os.path.join(path, part + ".npy")
        if not os.path.exists(name):
            raise SystemExit(f"--data-dir: {name} is missing (see the docstring of "
                             "examples/few_shot.py for the format).")
        pools.append(_as_images(np.load(name, mmap_mode="r"), name))
    if pools[0][0].shape[1:] != pools[1][0].shape[1:]:
        raise SystemExit("--data-dir: train.npy and test.npy hold images of different "
                         "shapes.")
    return pools[0], pools[1]


class TaskSampler:
    """N-way K-shot tasks from a pool of classes (numpy RandomState, reproducible)."""

    def __init__(self, pool, ways, shots, query, seed):
        too_small = [len(c) for c in pool if len(c) < shots + query]
        if len(pool) < ways or too_small:
            raise SystemExit(f"{ways}-way {shots}-shot tasks with {query} queries need "
                             f">= {ways} classes of >= {shots + query} images; the pool "
                             f"has {len(pool)} classes, the smallest with "
                             f"{min(len(c) for c in pool)} images.")
        self.pool, self.ways, self.shots, self.query = pool, ways, shots, query
        self.rng = np.random.RandomState(seed)

    def sample_arrays(self):
        chosen = self.rng.choice(len(self.pool), self.ways, replace=False)
        support, query = [], []
        for label, c in enumerate(chosen):
            idx = self.rng.choice(len(self.pool[c]), self.shots + self.query, replace=False)
            images = np.asarray(self.pool[c][np.sort(idx)])
            order = self.rng.permutation(len(idx))
            support.append(images[order[:self.shots]])
            query.append(images[order[self.shots:]])

        def pack(parts, per_class):
            x = np.concatenate(parts).astype(np.float32)
            y = np.repeat(np.arange(self.ways), per_class).astype(np.int32)
            return x, y
        return pack(support, self.shots), pack(query, self.query)

    def sample(self):
        return tuple({"x": jt.array(x), "y": jt.array(y)} for x, y in self.sample_arrays())

    def batch(self, n):
        tasks = [self.sample() for _ in range(n)]
        return [t[0] for t in tasks], [t[1] for t in tasks]


# -- model -----------------------------------------------------------------------------
def conv_block(in_channels, channels):
    return jt.nn.Sequential(
        jt.nn.Conv2d(in_channels, channels, 3, padding=1),
        jt.nn.BatchNorm2d(channels),
        jt.nn.ReLU(),
        jt.nn.MaxPool2d(2, 2))


class Conv4(jt.Module):
    """4 x [Conv 3x3 -> BatchNorm -> ReLU -> MaxPool 2x2] -> Linear, stock layers."""

    def __init__(self, ways, channels=64, in_channels=1, image_size=28):
        self.features = jt.nn.Sequential(
            conv_block(in_channels, channels), conv_block(channels, channels),
            conv_block(channels, channels), conv_block(channels, channels))
        side = image_size
        for _ in range(4):
            # Jittor's MaxPool2d refuses an input no larger than its 2x2 window
            if side <= 2:
                raise SystemExit(f"images of {image_size} pixels are too small for Conv4 "
                                 "(four 2x2 max-poolings need at least 24).")
            side //= 2
        self.head = jt.nn.Linear(channels * side * side, ways)

    def embed(self, x):
        return self.features(x).reshape(x.shape[0], -1)

    def execute(self, x):
        return self.head(self.embed(x))


def trainable(model):
    """The parameters that carry gradients (BatchNorm's running statistics do not)."""
    return [p for p in model.parameters() if not p.is_stop_grad()]


def head_parameters(model):
    return [model.head.weight, model.head.bias]


# -- losses ----------------------------------------------------------------------------
def cross_entropy(model, feed, **kwargs):
    return jt.nn.cross_entropy_loss(model(feed["x"], **kwargs), feed["y"])


def lower_loss(feed, upper_model, lower_model, proximal=0.0, **kwargs):
    """Support cross-entropy, + proximal/2 ||y - theta||^2 with iMAML's regulariser."""
    loss = cross_entropy(lower_model, feed, **kwargs)
    if proximal:
        fast = kwargs.get("params")
        if fast is None:
            fast = lower_model.parameters()
        terms = [((f - m) ** 2).sum() for f, m in zip(fast, upper_model.parameters())
                 if not m.is_stop_grad() and f is not m]
        if terms:
            loss = loss + 0.5 * proximal * sum(terms)
    return loss


def upper_loss(feed, upper_model, lower_model, **kwargs):
    return cross_entropy(lower_model, feed, **kwargs)


# -- evaluation ------------------------------------------------------------------------
def snapshot(params):
    """Host copies of the values (immune to later optimizer updates)."""
    return [p.numpy().copy() for p in params]


def load(params, values):
    for p, v in zip(params, values):
        p.assign(jt.array(v))


def accuracy(logits, y):
    return float((np.argmax(logits.numpy(), axis=1) == y.numpy()).mean())


def adapted_accuracy(model, init, task, steps, lr, head_only):
    """Query accuracy of ``model`` set to ``init`` after ``steps`` SGD steps on the
    support set (all weights, or the head only)."""
    support, query = task
    load(trainable(model), init)
    opt = jt.optim.SGD(head_parameters(model) if head_only else trainable(model), lr=lr)
    for _ in range(steps):
        opt.step(cross_entropy(model, support))
    with jt.no_grad():
        return accuracy(model(query["x"]), query["y"])


def linear_probe_accuracy(model, body, task, ways, steps, lr):
    """Pre-trained features (``body`` values), a new zero-initialised linear head
    trained with ``steps`` SGD steps on the support features."""
    support, query = task
    load(trainable(model.features), body)
    with jt.no_grad():
        train_features = model.embed(support["x"]).detach()
        test_features = model.embed(query["x"]).detach()
    weight = jt.zeros((ways, train_features.shape[1]))
    bias = jt.zeros((ways,))
    opt = jt.optim.SGD([weight, bias], lr=lr)
    for _ in range(steps):
        logits = jt.matmul(train_features, weight.transpose()) + bias
        opt.step(jt.nn.cross_entropy_loss(logits, support["y"]))
    with jt.no_grad():
        return accuracy(jt.matmul(test_features, weight.transpose()) + bias, query["y"])


def pretrain(pool, channels, in_channels, size, iters, images_per_iter, lr, seed, quiet):
    """Supervised training of a Conv4 on every meta-training class (the baseline's
    feature extractor); returns the values of its feature layers."""
    rng = np.random.RandomState(seed + 7)
    net = Conv4(len(pool), channels, in_channels, size)
    opt = jt.optim.Adam(trainable(net), lr=lr)
    per_class = max(1, images_per_iter // len(pool))
    for _ in progress(range(iters), quiet, desc="pre-training baseline", unit="it"):
        xs, ys = [], []
        for label in rng.choice(len(pool), min(len(pool), images_per_iter), replace=False):
            idx = rng.choice(len(pool[label]), per_class, replace=False)
            xs.append(np.asarray(pool[label][np.sort(idx)]))
            ys.append(np.full(per_class, label, np.int32))
        opt.step(jt.nn.cross_entropy_loss(net(jt.array(np.concatenate(xs))),
                                          jt.array(np.concatenate(ys))))
    return snapshot(trainable(net.features))


# -- main ------------------------------------------------------------------------------
def build_parser():
    p = parser(__doc__.splitlines()[0], "maml.yaml", iters=300)
    p.add_argument("--ways", type=int, default=5, help="N: classes per task")
    p.add_argument("--shots", type=int, default=1, help="K: support images per class")
    p.add_argument("--query", type=int, default=5,
                   help="query images per class of a training task")
    p.add_argument("--meta-batch", type=int, default=4, help="tasks per UL iteration")
    p.add_argument("--channels", type=int, default=32,
                   help="channels of every conv layer (64 in the papers; smaller is faster "
                        "on a CPU)")
    p.add_argument("--inner-lr", type=float, default=0.1, help="LL (adaptation) SGD lr")
    p.add_argument("--meta-lr", type=float, default=0.003, help="UL Adam lr")
    p.add_argument("--adapt", choices=("all", "head"), default="all",
                   help="what the inner loop adapts (head: ANIL)")
    p.add_argument("--proximal", type=float, default=None,
                   help="iMAML's proximal strength lambda in the LL loss; default: %s with "
                        "CG/NS in na_op, else 0" % IMPLICIT_PROXIMAL)
    p.add_argument("--data-dir", default=None,
                   help="folder with train.npy / test.npy class arrays (see the docstring)")
    p.add_argument("--eval-tasks", type=int, default=100)
    p.add_argument("--eval-query", type=int, default=15, help="query images per class "
                                                              "of a meta-test task")
    p.add_argument("--baseline-steps", type=int, default=100,
                   help="SGD steps of the pre-trained baseline's new head")
    p.add_argument("--no-baselines", action="store_true", help="skip both baselines")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    solver = setup(args)
    adapt = args.adapt
    if args.data_dir:
        train_pool, test_pool = load_data_dir(args.data_dir)
        source = args.data_dir
    else:
        train_pool, test_pool = digits_split()
        source = "scikit-learn digits, 28x28, rotated classes"
    in_channels, size = train_pool[0].shape[1], train_pool[0].shape[-1]

    def new_model(ways=args.ways):
        return Conv4(ways, args.channels, in_channels, size)

    model = new_model()
    eval_model = new_model()
    random_init = snapshot(trainable(model))
    params = trainable(model)
    ll_params = head_parameters(model) if adapt == "head" else params
    solver.update({
        "lower_level_model": model, "upper_level_model": model,
        "lower_level_var": ll_params, "upper_level_var": params,
        "lower_level_opt": jt.optim.SGD(ll_params, lr=args.inner_lr),
        "upper_level_opt": jt.optim.Adam(params, lr=args.meta_lr),
    })
    solver.setdefault("track_losses", False)
    proximal = args.proximal
    if proximal is None:
        implicit = {"CG", "NS"} & {n.upper() for n in solver.get("na_op") or ()}
        proximal = IMPLICIT_PROXIMAL if implicit else 0.0
    problem = jboat.Problem(solver, {
        "lower_level_loss": {"function": lower_loss, "params": {"proximal": proximal}},
        "upper_level_loss": upper_loss})
    problem.build_ll_solver().build_ul_solver()
    steps = problem.boat_configs["lower_iters"]

    train_tasks = TaskSampler(train_pool, args.ways, args.shots, args.query, args.seed)
    test_tasks = TaskSampler(test_pool, args.ways, args.shots, args.eval_query,
                             10**6 + args.seed)
    eval_set = [test_tasks.sample() for _ in range(args.eval_tasks)]

    start = time.perf_counter()
    history = {"meta-batch query loss": meta_train(problem, train_tasks, args.iters,
                                                   args.meta_batch, args.quiet, digits=3)}
    train_seconds = time.perf_counter() - start

    head_only = adapt == "head"
    meta_init = snapshot(trainable(model))
    meta_acc = [adapted_accuracy(eval_model, meta_init, t, steps, args.inner_lr, head_only)
                for t in eval_set]
    metrics = {"meta_test_accuracy": float(np.mean(meta_acc)),
               "meta_test_accuracy_ci95": float(1.96 * np.std(meta_acc)
                                                / np.sqrt(max(1, len(meta_acc)))),
               "adaptation_steps": steps, "adapt": adapt, "proximal": proximal,
               "train_seconds": train_seconds, "data": source,
               "final_train_query_loss": history["meta-batch query loss"][-1]
               if args.iters else float("nan")}
    if not args.no_baselines:
        scratch = [adapted_accuracy(eval_model, random_init, t, steps, args.inner_lr, False)
                   for t in eval_set]
        body = pretrain(train_pool, args.channels, in_channels, size, args.iters,
                        args.meta_batch * args.ways * (args.shots + args.query),
                        args.meta_lr, args.seed, args.quiet)
        probe = [linear_probe_accuracy(eval_model, body, t, args.ways, args.baseline_steps,
                                       args.inner_lr) for t in eval_set]
        metrics["random_init_accuracy"] = float(np.mean(scratch))
        metrics["pretrained_baseline_accuracy"] = float(np.mean(probe))

    print(f"data: {source}; {len(train_pool)} meta-train / {len(test_pool)} meta-test "
          f"classes; Conv4 with {args.channels} channels")
    print(f"meta-test: {args.eval_tasks} tasks, {args.ways}-way {args.shots}-shot, "
          f"{args.eval_query} queries per class; {steps} SGD steps (lr {args.inner_lr}) "
          f"adapting {'the head' if head_only else 'every weight'}"
          + (f"; proximal lambda {proximal:g}" if proximal else ""))
    print(f"accuracy  meta-learned:                 {metrics['meta_test_accuracy']:.3f} "
          f"+- {metrics['meta_test_accuracy_ci95']:.3f}   ({args.iters} iterations, "
          f"{train_seconds:.0f} s)")
    if not args.no_baselines:
        print(f"accuracy  random init, adapted alike:   {metrics['random_init_accuracy']:.3f}")
        print(f"accuracy  pre-trained + new head ({args.baseline_steps} steps): "
              f"{metrics['pretrained_baseline_accuracy']:.3f}")
    if args.plot:
        save_plot(history, args.plot, "Few-shot classification (Conv4)")
    return metrics


if __name__ == "__main__":
    main()
