"""Few-shot sinusoid regression: MAML, first-order MAML and iMAML-style meta-learning.

Each task is a sine wave a·sin(x - φ) with amplitude a in [0.1, 5] and phase φ in
[0, π], observed at K points x in [-5, 5] (support set) and evaluated on other points
(query set). The model, a small MLP (1-40-40-1), is both the upper- and the lower-level
model: the lower level adapts it to one task with a few SGD steps on the support
loss, the upper level learns the initialisation (meta-parameters) that minimises the
query loss after adaptation, summed over a meta-batch of tasks
(accumulate_grad: one LL/UL feed per task). The tasks are generated here.
With an implicit recipe (CG or NS in na_op, e.g. configs/imaml_implicit.yaml) the LL
loss gets iMAML's proximal term (lambda/2)||y - theta||^2 (--proximal, default 50) in
the linear solve (the inner SGD steps stay unregularised: with it there, lambda = 50
anchors the 5 steps at theta and meta-training stalls); without it the LL Hessian of
this non-convex task is indefinite and the solve unreliable (and the implicit
meta-gradient of configs/imaml_implicit.yaml is zero).

    python examples/meta_learning.py                               # MAML (NGD+IAD)
    python examples/meta_learning.py --config configs/fomaml.yaml  # first-order MAML
    python examples/meta_learning.py --config configs/imaml_implicit.yaml  # iMAML (CG)
    python examples/meta_learning.py --config configs/imaml.yaml   # upstream's IAD+CG

Reported on held-out tasks: query MSE after adapting the meta-learned initialisation
with the same number of SGD steps (lower_iters) on the support set, before adapting
it, and after adapting the non-meta-learned (random) initialisation the same way.
"""

import math

from _common import jboat, jt, meta_train, np, parser, save_plot, setup

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)
#: default proximal strength when the recipe differentiates implicitly (CG/NS: iMAML)
IMPLICIT_PROXIMAL = 50.0


class MLP(jt.Module):
    def __init__(self, hidden=40):
        self.layer1 = jt.nn.Linear(1, hidden)
        self.layer2 = jt.nn.Linear(hidden, hidden)
        self.out = jt.nn.Linear(hidden, 1)

    def execute(self, x):
        return self.out(jt.nn.relu(self.layer2(jt.nn.relu(self.layer1(x)))))


def mse(model, feed, **kwargs):
    diff = model(feed["x"], **kwargs) - feed["y"]
    return (diff * diff).mean()


def lower_loss(feed, upper_model, lower_model, proximal=0.0, **kwargs):
    """Support MSE, optionally + proximal/2 ||y - θ||² (iMAML's regulariser)."""
    loss = mse(lower_model, feed, **kwargs)
    if proximal and "params" in kwargs:
        loss = loss + 0.5 * proximal * sum(
            ((fast - meta) ** 2).sum()
            for fast, meta in zip(kwargs["params"], upper_model.parameters()))
    return loss


def upper_loss(feed, upper_model, lower_model, **kwargs):
    return mse(lower_model, feed, **kwargs)


def aggregated_loss(ll_feed, ul_feed, upper_model, lower_model, proximal=0.0, **kwargs):
    """BDA's alpha F + (1 - alpha) f (for recipes with GDA)."""
    alpha = ll_feed["alpha"]
    return (alpha * upper_loss(ul_feed, upper_model, lower_model, **kwargs)
            + (1 - alpha) * lower_loss(ll_feed, upper_model, lower_model, proximal, **kwargs))


class SinusoidTasks:
    """Generator of sinusoid regression tasks (numpy RandomState, reproducible)."""

    def __init__(self, seed, shots, query):
        self.rng = np.random.RandomState(seed)
        self.shots, self.query = shots, query

    def sample(self):
        amp = self.rng.uniform(*AMPLITUDE)
        phase = self.rng.uniform(*PHASE)

        def points(n):
            x = self.rng.uniform(*X_RANGE, size=(n, 1)).astype(np.float32)
            y = (amp * np.sin(x - phase)).astype(np.float32)
            return {"x": jt.array(x), "y": jt.array(y)}

        return points(self.shots), points(self.query)

    def batch(self, n):
        tasks = [self.sample() for _ in range(n)]
        return [t[0] for t in tasks], [t[1] for t in tasks]


def adapted_query_loss(model, init, support, query, steps, lr):
    """Query MSE of ``model`` set to ``init`` and adapted with ``steps`` SGD steps."""
    for p, v in zip(model.parameters(), init):
        p.assign(v)
    opt = jt.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.step(mse(model, support))
    with jt.no_grad():
        return float(mse(model, query).item())


def evaluate(model, init, tasks, steps, lr):
    """Mean query MSE over ``tasks`` before and after adapting from ``init``."""
    before, after = [], []
    for support, query in tasks:
        for p, v in zip(model.parameters(), init):
            p.assign(v)
        with jt.no_grad():
            before.append(float(mse(model, query).item()))
        after.append(adapted_query_loss(model, init, support, query, steps, lr))
    return float(np.mean(before)), float(np.mean(after))


def snapshot(model):
    """Host copies of the parameter values (immune to later optimizer updates)."""
    return [jt.array(p.numpy().copy()) for p in model.parameters()]


def build_parser():
    p = parser(__doc__.splitlines()[0], "maml.yaml", iters=500)
    p.add_argument("--shots", type=int, default=10, help="K: support points per task")
    p.add_argument("--query", type=int, default=10, help="query points per training task")
    p.add_argument("--meta-batch", type=int, default=5, help="tasks per UL iteration")
    p.add_argument("--inner-lr", type=float, default=0.01, help="LL (adaptation) SGD lr")
    p.add_argument("--meta-lr", type=float, default=0.005, help="UL Adam lr")
    p.add_argument("--hidden", type=int, default=40)
    p.add_argument("--proximal", type=float, default=None,
                   help="proximal strength lambda of the LL loss (iMAML's regulariser); "
                        "default: %s with CG/NS in na_op (iMAML), else 0" % IMPLICIT_PROXIMAL)
    p.add_argument("--eval-tasks", type=int, default=50)
    p.add_argument("--eval-query", type=int, default=50, help="query points per eval task")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    solver = setup(args)
    model = MLP(args.hidden)
    eval_model = MLP(args.hidden)
    random_init = snapshot(model)
    params = list(model.parameters())
    solver.update({
        "lower_level_model": model, "upper_level_model": model,
        "lower_level_var": params, "upper_level_var": params,
        "lower_level_opt": jt.optim.SGD(params, lr=args.inner_lr),
        "upper_level_opt": jt.optim.Adam(params, lr=args.meta_lr),
    })
    solver.setdefault("track_losses", False)
    if solver.get("fo_op"):
        solver.setdefault("fogm_batch_input", True)
    else:
        solver.setdefault("accumulate_grad", True)
    proximal = args.proximal
    if proximal is None:
        implicit = {"CG", "NS"} & {n.upper() for n in solver.get("na_op") or ()}
        proximal = IMPLICIT_PROXIMAL if implicit else 0.0
    static = {"proximal": proximal}
    problem = jboat.Problem(solver, {
        "lower_level_loss": {"function": lower_loss, "params": static},
        "upper_level_loss": upper_loss,
        "gda_loss": {"function": aggregated_loss, "params": static}})
    problem.build_ll_solver().build_ul_solver()
    steps = problem.boat_configs["lower_iters"]

    train_tasks = SinusoidTasks(args.seed, args.shots, args.query)
    held_out = SinusoidTasks(10**6 + args.seed, args.shots, args.eval_query)
    eval_tasks = [held_out.sample() for _ in range(args.eval_tasks)]

    history = {"meta-batch query loss": meta_train(problem, train_tasks, args.iters,
                                                   args.meta_batch, args.quiet)}

    meta_init = snapshot(model)
    pre, post = evaluate(eval_model, meta_init, eval_tasks, steps, args.inner_lr)
    scratch_pre, scratch_post = evaluate(eval_model, random_init, eval_tasks, steps,
                                         args.inner_lr)
    metrics = {"post_adaptation_loss": post, "pre_adaptation_loss": pre,
               "random_init_post_adaptation_loss": scratch_post,
               "random_init_pre_adaptation_loss": scratch_pre,
               "adaptation_steps": steps, "proximal": proximal,
               "final_train_query_loss": history["meta-batch query loss"][-1]
               if args.iters else float("nan")}
    trained = f"; meta-trained with proximal lambda {proximal:g}" if proximal else ""
    print(f"held-out tasks: {args.eval_tasks}, {args.shots}-shot, "
          f"{steps} SGD steps (lr {args.inner_lr}) of adaptation{trained}")
    print(f"query MSE  meta-learned init: {pre:.3f} before -> {post:.3f} after adaptation")
    print(f"query MSE  random init:       {scratch_pre:.3f} before -> {scratch_post:.3f} "
          f"after adaptation")
    if args.plot:
        save_plot(history, args.plot, "Sinusoid meta-learning")
    return metrics


if __name__ == "__main__":
    main()
