"""The L2 problem for upstream BOAT (PyPI ``boat-torch``), PyTorch on the CPU.

Loaded by bench/worker.py only when ``boat_torch`` imports. Upstream calls
``loss(feed, upper_model, lower_model)``; the patched model of ``higher`` exposes the
fast weights as attributes, so ``lower_model.weight`` is the current iterate.
"""

import torch
import torch.nn.functional as F

import l2_problem as P
from upstream_config import upstream_config


class LogisticRegression(torch.nn.Module):
    def __init__(self, features, classes):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(features, classes))
        self.bias = torch.nn.Parameter(torch.zeros(classes))

    def forward(self, x):
        return x @ self.weight + self.bias


class LogStrength(torch.nn.Module):
    def __init__(self, features):
        super().__init__()
        self.log_strength = torch.nn.Parameter(torch.full((features,), P.INIT_LOG_STRENGTH))

    def forward(self):
        return self.log_strength


def lower_loss(feed, upper_model, lower_model, **kwargs):
    penalty = (torch.exp(upper_model()).reshape(-1, 1) * lower_model.weight ** 2).sum()
    return F.cross_entropy(lower_model(feed["x"]), feed["y"]) + 0.5 * penalty


def upper_loss(feed, upper_model, lower_model, **kwargs):
    return F.cross_entropy(lower_model(feed["x"]), feed["y"])


def gda_loss(ll_feed, ul_feed, upper_model, lower_model, **kwargs):
    alpha = ll_feed["alpha"]
    return (alpha * upper_loss(ul_feed, upper_model, lower_model)
            + (1 - alpha) * lower_loss(ll_feed, upper_model, lower_model))


def boat_torch_problem(combo, lower_iters, size, data):
    """``step(it)``: one upstream ``run_iter`` of the combination."""
    import boat_torch

    _, _, features, classes = P.SIZES[size]
    lower, upper = LogisticRegression(features, classes), LogStrength(features)
    config = upstream_config(combo.split("+"), lower_iters, lower, upper,
                             torch.optim.SGD(lower.parameters(), lr=P.LL_LR),
                             torch.optim.Adam(upper.parameters(), lr=P.UL_LR))
    losses = {"lower_level_loss": {"function": "torch_l2.lower_loss"},
              "upper_level_loss": {"function": "torch_l2.upper_loss"},
              "gda_loss": {"function": "torch_l2.gda_loss"}}
    problem = boat_torch.Problem(config, losses)
    problem.build_ll_solver()
    problem.build_ul_solver()
    train = {"x": torch.from_numpy(data[0]["x"]), "y": torch.from_numpy(data[0]["y"]).long()}
    val = {"x": torch.from_numpy(data[1]["x"]), "y": torch.from_numpy(data[1]["y"]).long()}
    return lambda it: problem.run_iter(train, val, it)
