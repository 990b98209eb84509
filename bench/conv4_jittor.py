"""Conv4 meta-learning in Jittor: jboat, and a hand-written floor (no jboat).

Loaded by bench/bench_conv4.py's worker. ``make_jboat(setting, data)`` and
``make_floor(setting, data)`` return ``step(it)``: one meta-iteration (a meta-batch
of tasks, the meta-gradient, one Adam step), left lazy; the caller synchronises.

The floor is the same computation written directly with ``jt.grad`` on a functional
Conv4 (convolution, training-mode batch normalisation with Jittor's formula, ReLU, a
2x2 max-pool, linear head) whose weights are plain Vars: no module patching, no
operator chain, no bookkeeping. Its max-pool is the cheapest correct one for the
order of derivatives needed: Jittor's own pooling kernel for first-order MAML, and a
crop + reshape + max for the second-order recipes (Jittor's pooling kernel has no
second derivative: its backward's own derivative is zero).

The floor leaves the whole meta-batch lazy (one graph of all tasks, run at the caller's
synchronisation: Jittor's fastest schedule here). ``make_floor(..., sync_tasks=True)``
runs each task's graph before building the next, as PyTorch's per-task ``backward()``
and jboat's ``accumulate_grad`` do: the memory floor.
"""

import jboat  # noqa: F401  (environment defaults before Jittor)
import jittor as jt

import conv4_problem as P


# -- the stock-layer network (what a user writes; jboat's input) -------------------------
class Conv4(jt.Module):
    def __init__(self, channels, ways=P.WAYS):
        layers = []
        in_channels = 1
        for _ in range(4):
            layers += [jt.nn.Conv2d(in_channels, channels, 3, padding=1),
                       jt.nn.BatchNorm2d(channels), jt.nn.ReLU(), jt.nn.MaxPool2d(2, 2)]
            in_channels = channels
        self.features = jt.nn.Sequential(*layers)
        self.head = jt.nn.Linear(channels * P.FINAL_SIDE ** 2, ways)

    def execute(self, x):
        return self.head(self.features(x).reshape(x.shape[0], -1))


def _trainable(model):
    return [p for p in model.parameters() if not p.is_stop_grad()]


def _feeds(data):
    """Jittor copies of the meta-batches: [(supports, queries)] with lists of dicts."""
    out = []
    for batch in data:
        supports = [{"x": jt.array(t["xs"]), "y": jt.array(t["ys"])} for t in batch]
        queries = [{"x": jt.array(t["xq"]), "y": jt.array(t["yq"])} for t in batch]
        out.append((supports, queries))
    return out


def _load_weights(model, weights):
    for p, w in zip(_trainable(model), weights):
        p.assign(jt.array(w))


# -- jboat ------------------------------------------------------------------------------
def make_jboat(setting, data, weights, lean=True, return_grad=False):
    model = Conv4(P.channels(weights))
    _load_weights(model, weights)
    params = _trainable(model)
    recipe = {"gm_op": ["NGD"], "na_op": P.NA_OPS[setting["method"]],
              "lower_iters": setting["K"], "accumulate_grad": True}
    if setting["method"] == "imaml":
        recipe["CG"] = {"k": P.CG_K, "tolerance": P.CG_TOLERANCE}
    if lean:
        recipe.update(track_losses=False, nan_guard=False)
    if return_grad:
        recipe["return_grad"] = True
    recipe.update({
        "lower_level_model": model, "upper_level_model": model,
        "lower_level_var": params, "upper_level_var": params,
        "lower_level_opt": jt.optim.SGD(params, lr=P.INNER_LR),
        "upper_level_opt": jt.optim.Adam(params, lr=P.META_LR)})
    proximal = P.PROXIMAL if setting["method"] == "imaml" else 0.0

    def ce(model_, feed, **kwargs):
        return jt.nn.cross_entropy_loss(model_(feed["x"], **kwargs), feed["y"])

    def lower_loss(feed, upper_model, lower_model, **kwargs):
        loss = ce(lower_model, feed, **kwargs)
        if proximal:
            fast = kwargs.get("params")
            if fast is None:
                fast = lower_model.parameters()
            loss = loss + 0.5 * proximal * sum(
                ((f - m) ** 2).sum() for f, m in zip(fast, upper_model.parameters())
                if not m.is_stop_grad())
        return loss

    def upper_loss(feed, upper_model, lower_model, **kwargs):
        return ce(lower_model, feed, **kwargs)

    problem = jboat.Problem(recipe, {"lower_level_loss": lower_loss,
                                     "upper_level_loss": upper_loss})
    problem.build_ll_solver().build_ul_solver()
    feeds = _feeds(data)

    def step(it):
        supports, queries = feeds[it % len(feeds)]
        return problem.run_iter(supports, queries, it)[0]
    return step


def meta_gradients(setting, data, weights):
    """{jboat, floor}: the first meta-batch's meta-gradient as NumPy arrays."""
    grads = make_jboat(setting, data, weights, return_grad=True)(0)
    floor = Floor(setting, data, weights).meta_gradient(0)
    return {"jboat": [g.numpy() for g in grads], "floor": [g.numpy() for g in floor]}


# -- the floor --------------------------------------------------------------------------
def _pool_reshape(x):
    n, c, h, w = x.shape
    h2, w2 = h // 2, w // 2
    return x[:, :, :2 * h2, :2 * w2].reshape(n, c, h2, 2, w2, 2).max(dims=(3, 5))


def _pool_kernel(x):
    return jt.nn.pool(x, 2, "maximum", stride=2)


def forward(params, x, pool):
    """Functional Conv4: params = [conv w, conv b, bn gamma, bn beta] x 4 + [W, b]."""
    for i in range(4):
        w, b, gamma, beta = params[4 * i:4 * i + 4]
        x = jt.nn.conv2d(x, w, b, padding=1)
        mean = jt.mean(x, dims=[0, 2, 3])
        var = (jt.mean(x * x, dims=[0, 2, 3]) - mean * mean).maximum(0.0)
        scale = gamma / jt.sqrt(var + 1e-5)
        shift = beta - mean * scale
        x = x * scale.broadcast(x, [0, 2, 3]) + shift.broadcast(x, [0, 2, 3])
        x = pool(jt.nn.relu(x))
    x = x.reshape(x.shape[0], -1)
    return jt.matmul(x, params[-2].transpose()) + params[-1]


class Floor:
    """MAML / FOMAML / iMAML (the maths of jboat's NGD+IAD, NGD+FOA+IAD, NGD+CG)."""

    def __init__(self, setting, data, weights, sync_tasks=False):
        self.method, self.K = setting["method"], setting["K"]
        self.sync_tasks = sync_tasks
        self.pool = _pool_kernel if self.method == "fomaml" else _pool_reshape
        self.theta = [jt.array(w) for w in weights]   # a parameter order as the module's
        self.m = [jt.zeros_like(t) for t in self.theta]
        self.v = [jt.zeros_like(t) for t in self.theta]
        self.t = 0
        self.feeds = _feeds(data)

    def loss(self, params, feed):
        return jt.nn.cross_entropy_loss(forward(params, feed["x"], self.pool), feed["y"])

    def inner_loss(self, params, feed):
        loss = self.loss(params, feed)
        if self.method == "imaml":
            loss = loss + 0.5 * P.PROXIMAL * sum(((p - t) ** 2).sum()
                                                 for p, t in zip(params, self.theta))
        return loss

    def task_gradient(self, support, query):
        fast = list(self.theta)
        for _ in range(self.K):
            grads = jt.grad(self.inner_loss(fast, support), fast, retain_graph=True)
            if self.method == "fomaml":
                grads = [g.detach() for g in grads]
            fast = [p - P.INNER_LR * g for p, g in zip(fast, grads)]
            if self.method == "imaml":     # no path through the trajectory
                fast = [p.detach() for p in fast]
        if self.method == "imaml":
            return self.implicit(fast, support, query)
        outer = self.loss(fast, query)
        if self.method == "fomaml":
            return jt.grad(outer, fast)
        return jt.grad(outer, self.theta)

    def implicit(self, y, support, query):
        """iMAML: ``lam x`` with ``x`` from CG_K on ``(H + lam I) x = grad F(y)``, ``H + lam I``
        the Hessian of the proximal inner loss at the last iterate ``y``."""
        b = [g.detach() for g in jt.grad(self.loss(y, query), y)]
        inner = jt.grad(self.inner_loss(y, support), y, retain_graph=True)

        def matvec(u):
            dot = sum((g * ui).sum() for g, ui in zip(inner, u))
            return [h.detach() for h in jt.grad(dot, y, retain_graph=True)]

        x = [jt.zeros_like(bi) for bi in b]
        r, p = list(b), list(b)
        rr = sum((ri * ri).sum() for ri in r)
        for _ in range(P.CG_K):
            ap = matvec(p)
            alpha = rr / sum((pi * api).sum() for pi, api in zip(p, ap))
            x = [xi + alpha * pi for xi, pi in zip(x, p)]
            r = [ri - alpha * api for ri, api in zip(r, ap)]
            rr_new = sum((ri * ri).sum() for ri in r)
            p = [ri + (rr_new / rr) * pi for ri, pi in zip(r, p)]
            rr = rr_new
        return [xi * P.PROXIMAL for xi in x]

    def meta_gradient(self, it):
        """The meta-batch's summed meta-gradient (lazy)."""
        supports, queries = self.feeds[it % len(self.feeds)]
        total = None
        for support, query in zip(supports, queries):
            grads = self.task_gradient(support, query)
            total = grads if total is None else [a + g for a, g in zip(total, grads)]
            if self.sync_tasks:   # run this task's graph now, free it before the next
                total = [t.detach() for t in total]
                jt.sync(total)
        return total

    def step(self, it):
        total = self.meta_gradient(it)
        self.t += 1
        b1, b2, eps = 0.9, 0.999, 1e-8
        new_theta = []
        for i, (theta, g) in enumerate(zip(self.theta, total)):
            g = g.detach()
            self.m[i] = (b1 * self.m[i] + (1 - b1) * g).detach()
            self.v[i] = (b2 * self.v[i] + (1 - b2) * g * g).detach()
            m_hat = self.m[i] / (1 - b1 ** self.t)
            v_hat = self.v[i] / (1 - b2 ** self.t)
            new_theta.append((theta - P.META_LR * m_hat / (jt.sqrt(v_hat) + eps)).detach())
        self.theta = new_theta


def make_floor(setting, data, weights, sync_tasks=False):
    floor = Floor(setting, data, weights, sync_tasks=sync_tasks)
    return floor.step


def sync():
    jt.sync_all()


def cleanup():
    jt.sync_all()
    jt.gc()
