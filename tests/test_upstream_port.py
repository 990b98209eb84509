"""A port of upstream JBOAT 1.1.1's L2-regularisation example pattern, unchanged but for
the import and the data (tiny, synthetic): its config keys (a JSON-style dict naming
every operator's section, ``return_grad: true``, ``lower_iters: 5``, DM ``strategy: s3``),
its CLI defaults ``gm_op DI,GDA,NGD`` / ``na_op CG`` passed even beside ``fo_op``, and
its loop that sets the DM strategy on the built solver before each ``run_iter``.

Checks that each path runs and returns upstream's ``(grads, run_time)`` shape with
finite values; the numbers themselves are tested elsewhere (tests/gm_ol/test_dm.py,
tests/fo_ol/)."""

import copy
import json

import jittor as jt
import numpy as np
import pytest

import jboat

N_FEATS, N_CLASSES, N_SAMPLES = 6, 3, 24

# the keys of upstream's boat_config_l2.json (values chosen here)
UPSTREAM_STYLE_CONFIG = json.loads("""{
    "fo_op": null, "gm_op": ["NGD"], "na_op": ["RAD"],
    "return_grad": true, "lower_iters": 5, "device": "cpu", "accumulate_grad": false,
    "DI": {"lr": 0.1}, "loss_log_path": "PLACEHOLDER", "copy_last_param": true,
    "fogm_batch_input": false,
    "GDA": {"alpha_init": 0.5, "alpha_decay": 0.9},
    "DM": {"auxiliary_v_lr": 0.1, "tau": 0.01, "p": 100, "mu0": 0.9, "eta0": 0.5,
           "strategy": "s3"},
    "RGT": {"truncate_iter": 0},
    "CG": {"k": 2, "tolerance": 1e-10},
    "FD": {"r": 1e-2},
    "VSO": {"z_loop": 3, "z_lr": 0.01, "ll_l2_reg": 0.1, "ul_l2_reg": 0.01,
            "ul_ln_reg": 10.0, "reg_decay": true},
    "PGDO": {"y_hat_lr": 0.1, "gamma_init": 0.0, "gamma_max": 0.2,
             "gamma_argmax_step": 50000, "updata_y_ahead": false, "penalty": "difference"},
    "VFO": {"eta": 0.5, "u1": 0.1, "y_hat_lr": 0.1},
    "MESO": {"eta": 0.001, "gamma_1": 0.01, "c0": 0.2, "y_hat_lr": 0.1}
}""")


def lower_loss(ll_feed_dict, upper_model, lower_model, **kwargs):
    y = lower_model(**kwargs)
    logits = jt.matmul(ll_feed_dict["data"], y)
    penalty = 0.5 * (y * y * jt.exp(upper_model()).reshape(-1, 1)).mean()
    return jt.nn.cross_entropy_loss(logits, ll_feed_dict["target"]) + penalty


def upper_loss(ul_feed_dict, upper_model, lower_model, **kwargs):
    logits = jt.matmul(ul_feed_dict["data"], lower_model(**kwargs))
    return jt.nn.cross_entropy_loss(logits, ul_feed_dict["target"])


def gda_loss(ll_feed_dict, ul_feed_dict, upper_model, lower_model, **kwargs):
    alpha = ll_feed_dict["alpha"]
    return (alpha * upper_loss(ul_feed_dict, upper_model, lower_model, **kwargs)
            + (1 - alpha) * lower_loss(ll_feed_dict, upper_model, lower_model, **kwargs))


LOSS_CONFIG = {name: {"function": f"test_upstream_port.{name}", "params": {}}
               for name in ("lower_level_loss", "upper_level_loss", "gda_loss")}
LOSS_CONFIG["lower_level_loss"]["function"] = "test_upstream_port.lower_loss"
LOSS_CONFIG["upper_level_loss"]["function"] = "test_upstream_port.upper_loss"


class UpperModel(jt.Module):
    def __init__(self, n_feats):
        self.x = jt.init.constant([n_feats], "float32", 0.0).clone()

    def execute(self):
        return self.x


class LowerModel(jt.Module):
    def __init__(self, n_feats, num_classes):
        self.y = jt.array(np.random.RandomState(1).randn(n_feats, num_classes)
                          .astype(np.float32) * 0.3)

    def execute(self):
        return self.y


def _data(seed):
    rng = np.random.RandomState(seed)
    return {"data": jt.array(rng.randn(N_SAMPLES, N_FEATS).astype(np.float32)),
            "target": jt.array(rng.randint(0, N_CLASSES, N_SAMPLES).astype(np.int64))}


def _run_script(tmp_path, gm_op, na_op, fo_op):
    """What upstream's main() does after parsing its arguments."""
    boat_config = copy.deepcopy(UPSTREAM_STYLE_CONFIG)
    boat_config["loss_log_path"] = str(tmp_path / "loss_log.json")
    upper_model = UpperModel(N_FEATS)
    lower_model = LowerModel(N_FEATS, N_CLASSES)
    upper_opt = jt.nn.Adam(upper_model.parameters(), lr=0.01)
    lower_opt = jt.nn.SGD(lower_model.parameters(), lr=0.01)
    gm_op = gm_op.split(",") if gm_op else None
    na_op = na_op.split(",") if na_op else None
    boat_config["gm_op"] = gm_op
    boat_config["na_op"] = na_op
    boat_config["fo_op"] = fo_op
    boat_config["lower_level_model"] = lower_model
    boat_config["upper_level_model"] = upper_model
    boat_config["lower_level_opt"] = lower_opt
    boat_config["upper_level_opt"] = upper_opt
    boat_config["lower_level_var"] = list(lower_model.parameters())
    boat_config["upper_level_var"] = list(upper_model.parameters())
    b_optimizer = jboat.Problem(boat_config, LOSS_CONFIG)
    b_optimizer.build_ll_solver()
    b_optimizer.build_ul_solver()
    ul_feed_dict, ll_feed_dict = _data(0), _data(1)
    iterations = 3 if "DM" in gm_op and "GDA" in gm_op else 2
    outputs = []
    for x_itr in range(iterations):
        if "DM" in gm_op and fo_op is None and "GDA" in gm_op:
            b_optimizer._ll_solver.gradient_instances[-1].strategy = "s" + str(x_itr % 3 + 1)
        elif "DM" in gm_op and fo_op is None and "GDA" not in gm_op:
            b_optimizer._ll_solver.gradient_instances[-1].strategy = "s" + str(1)
        loss, run_time = b_optimizer.run_iter(ll_feed_dict, ul_feed_dict, current_iter=x_itr)
        outputs.append((loss, run_time))
    return b_optimizer, outputs


CASES = [("DI,GDA,NGD", "CG", None), ("DM,NGD", "RAD", None), ("DM,GDA,NGD", "CG", None)] + [
    ("DI,GDA,NGD", "CG", fo) for fo in ("VSO", "VFO", "MESO", "PGDO")]


@pytest.mark.parametrize("gm_op,na_op,fo_op", CASES,
                         ids=[c[2] or c[0].replace(",", "+") + "-" + c[1] for c in CASES])
def test_upstream_l2_script_pattern_runs(tmp_path, gm_op, na_op, fo_op):
    problem, outputs = _run_script(tmp_path, gm_op, na_op, fo_op)
    for grads, run_time in outputs:
        assert isinstance(run_time, float) and run_time > 0
        assert len(grads) == 1 and grads[0].shape == (N_FEATS,)
        assert np.all(np.isfinite(grads[0].numpy()))
    if fo_op is None:   # (VFO's direction may vanish here: F does not depend on x directly)
        assert any(np.abs(grads[0].numpy()).sum() > 0 for grads, _ in outputs)
    with open(tmp_path / "loss_log.json", encoding="utf-8") as handle:
        assert len(json.load(handle)) == len(outputs)
