"""The L2 problem for upstream JBOAT (PyPI ``boat-jit``), Jittor.

Loaded by bench/worker.py only when ``boat_jit`` imports; same models and losses
as jittor_l2.py (upstream calls ``loss(feed, upper_model, lower_model)`` with its
patched model, whose attributes are the fast weights).
"""

import jittor as jt

import l2_problem as P
from upstream_config import upstream_config


class LogisticRegression(jt.Module):
    def __init__(self, features, classes):
        self.weight = jt.zeros((features, classes))
        self.bias = jt.zeros((classes,))

    def execute(self, x):
        return jt.matmul(x, self.weight) + self.bias


class LogStrength(jt.Module):
    def __init__(self, features):
        self.log_strength = jt.full((features,), P.INIT_LOG_STRENGTH)

    def execute(self):
        return self.log_strength


def lower_loss(feed, upper_model, lower_model, **kwargs):
    penalty = (jt.exp(upper_model()).reshape(-1, 1) * lower_model.weight * lower_model.weight).sum()
    return jt.nn.cross_entropy_loss(lower_model(feed["x"]), feed["y"]) + 0.5 * penalty


def upper_loss(feed, upper_model, lower_model, **kwargs):
    return jt.nn.cross_entropy_loss(lower_model(feed["x"]), feed["y"])


def gda_loss(ll_feed, ul_feed, upper_model, lower_model, **kwargs):
    alpha = ll_feed["alpha"]
    return (alpha * upper_loss(ul_feed, upper_model, lower_model)
            + (1 - alpha) * lower_loss(ll_feed, upper_model, lower_model))


def boat_jit_problem(combo, lower_iters, size, data):
    import boat_jit

    _, _, features, classes = P.SIZES[size]
    lower, upper = LogisticRegression(features, classes), LogStrength(features)
    config = upstream_config(combo.split("+"), lower_iters, lower, upper,
                             jt.optim.SGD(lower.parameters(), lr=P.LL_LR),
                             jt.optim.Adam(upper.parameters(), lr=P.UL_LR))
    losses = {"lower_level_loss": {"function": "boatjit_l2.lower_loss"},
              "upper_level_loss": {"function": "boatjit_l2.upper_loss"},
              "gda_loss": {"function": "boatjit_l2.gda_loss"}}
    problem = boat_jit.Problem(config, losses)
    problem.build_ll_solver()
    problem.build_ul_solver()
    train = {"x": jt.array(data[0]["x"]), "y": jt.array(data[0]["y"])}
    val = {"x": jt.array(data[1]["x"]), "y": jt.array(data[1]["y"])}
    return lambda it: problem.run_iter(train, val, it)
