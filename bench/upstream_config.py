"""Upstream BOAT/JBOAT config dicts for the L2 problem (framework-free)."""

import l2_problem as P


def upstream_config(names, lower_iters, lower, upper, ll_opt, ul_opt):
    """Upstream's full config dict (it reads every section, selected or not)."""
    gm = [n for n in names if n in ("NGD", "GDA", "DI", "DM")]
    na = [n for n in names if n not in gm]
    return {
        "fo_op": None, "gm_op": gm, "na_op": na, "lower_iters": lower_iters,
        "lower_level_model": lower, "upper_level_model": upper,
        "lower_level_var": list(lower.parameters()), "upper_level_var": list(upper.parameters()),
        "lower_level_opt": ll_opt, "upper_level_opt": ul_opt, "device": "cpu",
        "loss_log_path": "/dev/null", "accumulate_grad": False, "return_grad": False,
        "copy_last_param": True, "fo_ol_batch_input": False, "fogm_batch_input": False,
        "GDA": {"alpha_init": 0.5 if "GDA" in gm else 0.0, "alpha_decay": 0.9 if "GDA" in gm else 1.0},
        "RGT": {"truncate_iter": P.rgt_truncate(lower_iters) if "RGT" in na else 0},
        "DI": {"lr": P.UL_LR}, "CG": {"k": P.CG_K, "tolerance": P.CG_TOLERANCE},
        "FD": {"r": P.FD_R}, "PTT": {}, "IAD": {}, "FOA": {},
    }
