"""DARTS' search network and one second-order search step in PyTorch (the peer), for
bench/bench_darts.py.

The network mirrors ``examples/darts_space.py`` module for module, with the same
attribute names, so that ``named_parameters()`` matches the Jittor network's trainable
parameters name for name and shape for shape (``bench_darts --check`` copies the
weights across by name). One deliberate detail: the average-pooling candidate uses
``count_include_pad=True``. ``darts_space`` asks Jittor for ``count_include_pad=False``,
but Jittor 1.3.11's ``AvgPool2d`` honours that flag only with ``ceil_mode`` and
otherwise divides every window by 9; the peer computes that same function.

The step, written the usual way with ``torch.func.functional_call``: the training loss
at ``w``, its gradient with ``create_graph=True``, ``w1 = w - lr * b1`` with the
momentum buffer ``b1 = momentum * b + g + weight_decay * w``, the validation loss at
``w1``, ``torch.autograd.grad`` of it w.r.t. the architecture logits (so through ``w1``
too: the exact one-step hyper-gradient), a ``torch.optim.Adam`` step on the logits,
then ``w <- w1`` and ``b <- b1``.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

PRIMITIVES = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
              "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")


class Zero(nn.Module):
    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        if self.stride == 1:
            return x * 0.0
        return x[:, :, ::self.stride, ::self.stride] * 0.0


def relu_conv_bn(c_in, c_out, kernel, stride, padding, affine):
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False),
                         nn.BatchNorm2d(c_out, affine=affine))


class ReLUConvBN(nn.Module):
    def __init__(self, c_in, c_out, kernel, stride, padding, affine):
        super().__init__()
        self.ops = relu_conv_bn(c_in, c_out, kernel, stride, padding, affine)

    def forward(self, x):
        return self.ops(x)


class DilConv(nn.Module):
    def __init__(self, c_in, c_out, kernel, stride, padding, dilation, affine):
        super().__init__()
        self.ops = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(c_in, c_in, kernel, stride, padding, dilation=dilation, groups=c_in,
                      bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine))

    def forward(self, x):
        return self.ops(x)


class SepConv(nn.Module):
    def __init__(self, c_in, c_out, kernel, stride, padding, affine):
        super().__init__()
        self.ops = nn.Sequential(DilConv(c_in, c_in, kernel, stride, padding, 1, affine),
                                 DilConv(c_in, c_out, kernel, 1, padding, 1, affine))

    def forward(self, x):
        return self.ops(x)


class FactorizedReduce(nn.Module):
    def __init__(self, c_in, c_out, affine):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x):
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


def make_operation(name, c, stride, affine=False):
    if name == "none":
        return Zero(stride)
    if name == "max_pool_3x3":
        return nn.Sequential(nn.MaxPool2d(3, stride, 1), nn.BatchNorm2d(c, affine=False))
    if name == "avg_pool_3x3":
        # Jittor's function (see the module docstring), not DARTS' count_include_pad=False
        return nn.Sequential(nn.AvgPool2d(3, stride, 1, count_include_pad=True),
                             nn.BatchNorm2d(c, affine=False))
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine)
    if name in ("sep_conv_3x3", "sep_conv_5x5"):
        k = int(name[-1])
        return SepConv(c, c, k, stride, k // 2, affine)
    if name in ("dil_conv_3x3", "dil_conv_5x5"):
        k = int(name[-1])
        return DilConv(c, c, k, stride, k - 1, 2, affine)
    raise ValueError(f"unknown DARTS primitive {name!r}; known: {', '.join(PRIMITIVES)}")


class MixedOp(nn.Module):
    def __init__(self, c, stride, primitives):
        super().__init__()
        self.ops = nn.ModuleList([make_operation(p, c, stride) for p in primitives])

    def forward(self, x, weights):
        return sum(weights[k] * op(x) for k, op in enumerate(self.ops))


class Cell(nn.Module):
    def __init__(self, steps, multiplier, c_pp, c_p, c, reduction, reduction_prev, primitives):
        super().__init__()
        self.reduction = reduction
        self.steps, self.multiplier = steps, multiplier
        self.preprocess0 = (FactorizedReduce(c_pp, c, affine=False) if reduction_prev
                            else ReLUConvBN(c_pp, c, 1, 1, 0, affine=False))
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList()
        for i in range(steps):
            for j in range(2 + i):
                self.edges.append(MixedOp(c, 2 if reduction and j < 2 else 1, primitives))

    def forward(self, s0, s1, weights):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.steps):
            states.append(sum(self.edges[offset + j](h, weights[offset + j])
                              for j, h in enumerate(states)))
            offset += len(states) - 1
        return torch.cat(states[-self.multiplier:], dim=1)


class Network(nn.Module):
    """``forward(x, alphas)`` with ``alphas = (normal, reduce)`` logits, each
    ``(edges, len(primitives))``; BatchNorm in training mode (batch statistics)."""

    def __init__(self, c=16, classes=10, layers=8, steps=4, multiplier=4, stem_multiplier=3,
                 primitives=PRIMITIVES, in_channels=3):
        super().__init__()
        c_curr = stem_multiplier * c
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, c
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c_curr *= 2
            self.cells.append(Cell(steps, multiplier, c_pp, c_p, c_curr, reduction,
                                   reduction_prev, primitives))
            reduction_prev = reduction
            c_pp, c_p = c_p, multiplier * c_curr
        self.classifier = nn.Linear(c_p, classes)

    def forward(self, x, alphas):
        normal, reduce = (F.softmax(a, dim=-1) for a in alphas)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, reduce if cell.reduction else normal)
        return self.classifier(s1.mean(dim=(2, 3)))


class SearchStep:
    """One DARTS search step (see the module docstring) on ``network``; ``feeds`` is a
    list of ``(train, val)`` pairs of ``{"x": float32 array, "y": int array}``."""

    def __init__(self, network, alphas, feeds, lower_lr, momentum, weight_decay,
                 upper_lr, betas, upper_weight_decay, eps):
        self.network = network.train()
        self.names = [n for n, _ in network.named_parameters()]
        self.weights = [p for _, p in network.named_parameters()]
        self.buffers = [torch.zeros_like(w) for w in self.weights]
        self.alphas = [torch.tensor(a, requires_grad=True) for a in alphas]
        self.adam = torch.optim.Adam(self.alphas, lr=upper_lr, betas=betas, eps=eps,
                                     weight_decay=upper_weight_decay)
        self.lower = (lower_lr, momentum, weight_decay)
        self.feeds = [tuple({"x": torch.from_numpy(f["x"]), "y": torch.from_numpy(f["y"]).long()}
                            for f in pair) for pair in feeds]

    def loss_at(self, weights, feed):
        logits = functional_call(self.network, dict(zip(self.names, weights)),
                                 (feed["x"], tuple(self.alphas)))
        return F.cross_entropy(logits, feed["y"])

    def hypergradient(self, it, stage=None):
        """(hyper-gradient, stepped weights, new momentum buffers) of step ``it``;
        ``stage(name)``, when given, is called after each of the four parts (train
        forward, first backward, validation forward, second backward)."""
        stage = stage or (lambda name: None)
        lr, momentum, weight_decay = self.lower
        train, val = self.feeds[it % len(self.feeds)]
        train_loss = self.loss_at(self.weights, train)
        stage("train forward")
        grads = torch.autograd.grad(train_loss, self.weights, create_graph=True)
        stage("first backward")
        buffers = [momentum * b + g + weight_decay * w
                   for b, g, w in zip(self.buffers, grads, self.weights)]
        stepped = [w - lr * b for w, b in zip(self.weights, buffers)]
        val_loss = self.loss_at(stepped, val)
        stage("validation forward")
        hyper = torch.autograd.grad(val_loss, self.alphas)
        stage("second backward")
        return hyper, stepped, buffers

    def step(self, it):
        hyper, stepped, buffers = self.hypergradient(it)
        for a, g in zip(self.alphas, hyper):
            a.grad = g
        self.adam.step()
        with torch.no_grad():
            for w, s in zip(self.weights, stepped):
                w.copy_(s)
        self.buffers = [b.detach() for b in buffers]
