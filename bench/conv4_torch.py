"""Conv4 meta-learning in PyTorch + ``higher`` (the peer), for bench/bench_conv4.py.

The usual way to write MAML with ``higher``: ``innerloop_ctx`` over the stock module
(nn.Conv2d, nn.BatchNorm2d in training mode, nn.ReLU, nn.MaxPool2d, nn.Linear),
``copy_initial_weights=False``, one ``backward`` of the query loss per task into the
real parameters, one Adam step per meta-batch. FOMAML: the step gradients detached
(``grad_callback``), as jboat's FOA. iMAML: the implicit meta-gradient of jboat's
NGD + CG, ``lam x`` with ``x`` from CG on ``(Hess f + lam I) x = grad F`` at the last
iterate (the inner loop untracked: no path through the trajectory).
"""

import higher
import torch
import torch.nn.functional as F

import conv4_problem as P


class Conv4(torch.nn.Module):
    def __init__(self, channels, ways=P.WAYS):
        super().__init__()
        layers = []
        in_channels = 1
        for _ in range(4):
            layers += [torch.nn.Conv2d(in_channels, channels, 3, padding=1),
                       torch.nn.BatchNorm2d(channels), torch.nn.ReLU(),
                       torch.nn.MaxPool2d(2, 2)]
            in_channels = channels
        self.features = torch.nn.Sequential(*layers)
        self.head = torch.nn.Linear(channels * P.FINAL_SIDE ** 2, ways)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def make_torch(setting, data, weights, dtype=torch.float32):
    method, K = setting["method"], setting["K"]
    model = Conv4(P.channels(weights)).to(dtype)
    with torch.no_grad():
        for p, w in zip(model.parameters(), weights):
            p.copy_(torch.from_numpy(w).to(dtype))
    meta_opt = torch.optim.Adam(model.parameters(), lr=P.META_LR)
    inner_opt = torch.optim.SGD(model.parameters(), lr=P.INNER_LR)
    feeds = [[{k: torch.from_numpy(v).long() if k.startswith("y") else torch.from_numpy(v).to(dtype)
               for k, v in task.items()} for task in batch] for batch in data]
    detach = (lambda grads: [g.detach() for g in grads]) if method == "fomaml" else None

    def inner_loss(fmodel, params, theta, task):
        loss = F.cross_entropy(fmodel(task["xs"], params=params), task["ys"])
        if method == "imaml":
            loss = loss + 0.5 * P.PROXIMAL * sum(((p - t) ** 2).sum()
                                                 for p, t in zip(params, theta))
        return loss

    def task_step(task):
        implicit = method == "imaml"
        with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False,
                                  track_higher_grads=not implicit) as (fmodel, diffopt):
            theta = list(model.parameters())
            for _ in range(K):
                # a list: the forward would exhaust a generator before the proximal sum
                loss = inner_loss(fmodel, list(fmodel.parameters()), theta, task)
                diffopt.step(loss, grad_callback=detach)
            if not implicit:
                F.cross_entropy(fmodel(task["xq"]), task["yq"]).backward()
                return
            # iMAML: lam x, x from CG on (H + lam I) x = grad F(y_K), at y_K only
            y = [p.detach().requires_grad_() for p in fmodel.parameters()]
            outer = F.cross_entropy(fmodel(task["xq"], params=y), task["yq"])
            b = list(torch.autograd.grad(outer, y))
            inner = torch.autograd.grad(inner_loss(fmodel, y, theta, task), y,
                                        create_graph=True)

            def matvec(u):
                return [h.detach() for h in
                        torch.autograd.grad(inner, y, grad_outputs=u, retain_graph=True)]

            x = [torch.zeros_like(bi) for bi in b]
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
            for t, xi in zip(theta, x):
                g = P.PROXIMAL * xi
                t.grad = g if t.grad is None else t.grad + g

    def step(it, update=True):
        meta_opt.zero_grad()
        for task in feeds[it % len(feeds)]:
            task_step(task)
        if update:
            meta_opt.step()
        return [p.grad for p in model.parameters()]
    return step


def meta_gradients(setting, data, weights, dtype="float32"):
    """The first meta-batch's meta-gradient as NumPy arrays (computed in ``dtype``)."""
    grads = make_torch(setting, data, weights, getattr(torch, dtype))(0, update=False)
    return [g.detach().numpy() for g in grads]


def sync():
    pass


def cleanup():
    import gc
    gc.collect()
