"""The DARTS search space in Jittor: candidate operations, mixed edges, cells, network.

Liu, Simonyan, Yang, "DARTS: Differentiable architecture search", ICLR 2019, search
space of its CIFAR-10 experiments: a stem convolution, ``layers`` cells (reduction
cells at 1/3 and 2/3 of the depth), global average pooling and a linear classifier.
A cell takes the outputs of the two previous cells, has ``steps`` intermediate nodes,
each the sum of one mixed edge from every earlier node, and outputs the concatenation
of its last ``multiplier`` nodes. A mixed edge is the softmax-weighted sum of the
candidate operations, with one row of architecture logits per edge (14 edges for 4
steps), one matrix for normal and one for reduction cells.

The network weights are the lower-level variables: every module is registered
(``jt.nn.ModuleList``), so ``network.parameters()`` holds all of them. The logits
live in :class:`Architecture`, the upper-level model. ``primitives`` restricts the
candidates to a subset (tests use small subsets and sizes).

Used by ``examples/nas_darts.py``, ``bench/bench_darts.py`` and the whole-architecture
tests.
"""

import jittor as jt
import numpy as np

PRIMITIVES = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
              "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")


class Zero(jt.Module):
    """The ``none`` candidate: zeros of the output's shape (subsampled when reducing)."""

    def __init__(self, stride):
        self.stride = stride

    def execute(self, x):
        if self.stride == 1:
            return x * 0.0
        return x[:, :, ::self.stride, ::self.stride] * 0.0


class ReLUConvBN(jt.Module):
    def __init__(self, c_in, c_out, kernel, stride, padding, affine):
        self.ops = jt.nn.Sequential(
            jt.nn.ReLU(), jt.nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False),
            jt.nn.BatchNorm2d(c_out, affine=affine))

    def execute(self, x):
        return self.ops(x)


class DilConv(jt.Module):
    """ReLU, depthwise (dilated) convolution, pointwise convolution, BatchNorm."""

    def __init__(self, c_in, c_out, kernel, stride, padding, dilation, affine):
        self.ops = jt.nn.Sequential(
            jt.nn.ReLU(),
            jt.nn.Conv2d(c_in, c_in, kernel, stride, padding, dilation=dilation,
                         groups=c_in, bias=False),
            jt.nn.Conv2d(c_in, c_out, 1, bias=False),
            jt.nn.BatchNorm2d(c_out, affine=affine))

    def execute(self, x):
        return self.ops(x)


class SepConv(jt.Module):
    """Two :class:`DilConv` blocks without dilation, the first one strided."""

    def __init__(self, c_in, c_out, kernel, stride, padding, affine):
        self.ops = jt.nn.Sequential(
            DilConv(c_in, c_in, kernel, stride, padding, 1, affine),
            DilConv(c_in, c_out, kernel, 1, padding, 1, affine))

    def execute(self, x):
        return self.ops(x)


class FactorizedReduce(jt.Module):
    """Halves the resolution with two stride-2 1x1 convolutions on offset grids."""

    def __init__(self, c_in, c_out, affine):
        self.relu = jt.nn.ReLU()
        self.conv_1 = jt.nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = jt.nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = jt.nn.BatchNorm2d(c_out, affine=affine)

    def execute(self, x):
        x = self.relu(x)
        return self.bn(jt.concat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


def make_operation(name, c, stride, affine=False):
    """One candidate operation on ``c`` channels."""
    if name == "none":
        return Zero(stride)
    if name == "max_pool_3x3":
        return jt.nn.Sequential(jt.nn.MaxPool2d(3, stride, 1),
                                jt.nn.BatchNorm2d(c, affine=False))
    if name == "avg_pool_3x3":
        return jt.nn.Sequential(jt.nn.AvgPool2d(3, stride, 1, count_include_pad=False),
                                jt.nn.BatchNorm2d(c, affine=False))
    if name == "skip_connect":
        return jt.nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine)
    if name in ("sep_conv_3x3", "sep_conv_5x5"):
        k = int(name[-1])
        return SepConv(c, c, k, stride, k // 2, affine)
    if name in ("dil_conv_3x3", "dil_conv_5x5"):
        k = int(name[-1])
        return DilConv(c, c, k, stride, k - 1, 2, affine)
    raise ValueError(f"unknown DARTS primitive {name!r}; known: {', '.join(PRIMITIVES)}")


class MixedOp(jt.Module):
    def __init__(self, c, stride, primitives):
        self.ops = jt.nn.ModuleList([make_operation(p, c, stride) for p in primitives])

    def execute(self, x, weights):
        return sum(weights[k] * op(x) for k, op in enumerate(self.ops))


class Cell(jt.Module):
    def __init__(self, steps, multiplier, c_pp, c_p, c, reduction, reduction_prev, primitives):
        self.reduction = reduction
        self.steps, self.multiplier = steps, multiplier
        self.preprocess0 = (FactorizedReduce(c_pp, c, affine=False) if reduction_prev
                            else ReLUConvBN(c_pp, c, 1, 1, 0, affine=False))
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=False)
        self.edges = jt.nn.ModuleList()
        for i in range(steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self.edges.append(MixedOp(c, stride, primitives))

    def execute(self, s0, s1, weights):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.steps):
            states.append(sum(self.edges[offset + j](h, weights[offset + j])
                              for j, h in enumerate(states)))
            offset += len(states) - 1
        return jt.concat(states[-self.multiplier:], dim=1)


def edge_count(steps):
    return sum(2 + i for i in range(steps))


class Network(jt.Module):
    """DARTS' search network; ``execute(x, alphas)`` with ``alphas = (normal, reduce)``
    logits, each of shape ``(edges, len(primitives))``."""

    def __init__(self, c=16, classes=10, layers=8, steps=4, multiplier=4, stem_multiplier=3,
                 primitives=PRIMITIVES, in_channels=3):
        self.primitives = tuple(primitives)
        self.steps = steps
        c_curr = stem_multiplier * c
        self.stem = jt.nn.Sequential(jt.nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False),
                                     jt.nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, c
        self.cells = jt.nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c_curr *= 2
            cell = Cell(steps, multiplier, c_pp, c_p, c_curr, reduction, reduction_prev,
                        self.primitives)
            reduction_prev = reduction
            self.cells.append(cell)
            c_pp, c_p = c_p, multiplier * c_curr
        self.classifier = jt.nn.Linear(c_p, classes)

    def execute(self, x, alphas):
        normal, reduce = (jt.nn.softmax(a, dim=-1) for a in alphas)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, reduce if cell.reduction else normal)
        return self.classifier(s1.mean(dims=(2, 3)))


class Architecture(jt.Module):
    """The upper-level variables: normal and reduction cell logits."""

    def __init__(self, steps=4, primitives=PRIMITIVES, seed=0, scale=1e-3):
        rng = np.random.RandomState(seed)
        shape = (edge_count(steps), len(primitives))
        self.normal = jt.array((rng.randn(*shape) * scale).astype(np.float32))
        self.reduce = jt.array((rng.randn(*shape) * scale).astype(np.float32))

    def execute(self):
        return self.normal, self.reduce


def genotype(alphas, primitives=PRIMITIVES, steps=4):
    """DARTS' discrete cell: for each node, the two strongest incoming edges (by their
    strongest non-``none`` weight) and that operation. ``alphas``: one (edges, ops)
    array; returns ``[(operation, input node), ...]``, two per node."""
    weights = np.exp(alphas - alphas.max(1, keepdims=True))
    weights /= weights.sum(1, keepdims=True)
    keep = [k for k, p in enumerate(primitives) if p != "none"]
    chosen, start = [], 0
    for i in range(steps):
        end = start + 2 + i
        rows = weights[start:end]
        strength = [rows[j, keep].max() if keep else 0.0 for j in range(len(rows))]
        for j in sorted(range(len(rows)), key=lambda j: -strength[j])[:2]:
            k = keep[int(np.argmax(rows[j, keep]))] if keep else 0
            chosen.append((primitives[k], j))
        start = end
    return chosen
