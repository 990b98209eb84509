"""fogm_batch_input accumulation, option validation, state and error handling."""

import jittor as jt
import numpy as np
import pytest

import jboat
from fo_reference import build, feeds, load_recipe, square_quadratic
from quadratic import Quadratic, adam_first_step

FO_OPS = ["VSO", "VFO", "MESO", "PGDO", "ALTO", "GAFFO"]


def problem_for(op):
    return square_quadratic() if op == "GAFFO" else Quadratic()


@pytest.mark.parametrize("op", FO_OPS)
def test_batch_gradient_is_the_sum_of_per_task_gradients(op):
    """With a list of tasks the UL gradient before the single UL step equals the sum of
    the gradients of the tasks run one after the other from the same state (each task
    updates the LL variables and the operator state, which the next task starts from)."""
    key = "fo_ol_batch_input" if op in ("ALTO", "GAFFO") else "fogm_batch_input"
    q_batch, q_single = problem_for(op), problem_for(op)
    other_t = q_batch.t + np.array([0.7, -0.4] + [0.2] * (q_batch.t.size - 2))
    tasks = [feeds(q_batch, offset=5.0), feeds(q_batch, offset=5.0, t=other_t, scale=1.3)]
    tasks[1][1]["mu"] = 0.3                          # ALTO's gradient μx differs too
    batched = build(q_batch, op, lower_iters=3, return_grad=True, **{key: True})
    single = build(q_single, op, lower_iters=3, return_grad=True)

    grads, _ = batched.run_iter([t[0] for t in tasks], [t[1] for t in tasks], 3)
    per_task = [single.run_iter(ll, ul, 3)[0][0].numpy() for ll, ul in tasks]

    assert len(batched._log_results) == 2              # one record per task
    assert np.linalg.norm(per_task[0] - per_task[1]) > 1e-2 * np.linalg.norm(per_task[0])
    np.testing.assert_allclose(grads[0].numpy(), per_task[0] + per_task[1],
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(q_batch.lower.value.numpy(), q_single.lower.value.numpy(),
                               rtol=1e-5, atol=1e-6)


def test_batch_mode_takes_one_upper_step_with_the_summed_gradient():
    q = Quadratic()
    tasks = [feeds(q, offset=5.0), feeds(q, offset=5.0, scale=1.3)]
    probe = build(Quadratic(), "PGDO", return_grad=True, fogm_batch_input=True)
    expected, _ = probe.run_iter([t[0] for t in tasks], [t[1] for t in tasks], 0)
    problem = build(q, "PGDO", fogm_batch_input=True,
                    ul_opt=lambda ps: jt.optim.SGD(ps, lr=0.3))
    problem.run_iter([t[0] for t in tasks], [t[1] for t in tasks], 0)
    np.testing.assert_allclose(q.upper.value.numpy(), q.x0 - 0.3 * expected[0].numpy(),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", FO_OPS)
def test_upper_step_is_the_user_optimizers_rule(op):
    """The operator only writes the UL gradient; Problem steps the user's optimizer with
    its own rule (Adam's first step)."""
    lr, betas, eps = 0.01, (0.9, 0.999), 1e-8
    probe = build(problem_for(op), op, return_grad=True)
    grad, _ = probe.run_iter(*feeds(problem_for(op), offset=5.0), 0)
    g = grad[0].numpy().astype(float)
    q = problem_for(op)
    problem = build(q, op, ul_opt=lambda ps: jt.optim.Adam(ps, lr=lr, betas=betas, eps=eps))
    problem.run_iter(*feeds(q, offset=5.0), 0)
    np.testing.assert_allclose(q.upper.value.numpy(), adam_first_step(q.x0, g, lr, betas, eps),
                               rtol=1e-5, atol=1e-6)
    assert np.abs(g).min() > 1e-3                   # a sign-like step, unlike SGD's lr·g


# -- configuration ------------------------------------------------------------------------
def test_gaffo_rejects_mismatched_levels_at_build_time():
    q = Quadratic()                                  # x in R^3, y in R^4
    with pytest.raises(jboat.ConfigError, match=r"lower_level_var\[0\] and upper_level_var\[0\]"):
        build(q, "GAFFO")
    with pytest.raises(jboat.ConfigError, match="same length"):
        build(q, "GAFFO", upper_level_var=[q.upper.value, jt.zeros(4)])


def test_snapshot_operators_need_lower_vars_that_are_model_parameters():
    q = Quadratic()
    with pytest.raises(jboat.ConfigError, match="not parameters of lower_level_model"):
        build(q, "VFO", lower_level_var=[jt.array(np.zeros(4, np.float32))])


@pytest.mark.parametrize("op, section, error", [
    ("VSO", {"reg_decay": "yes"}, jboat.ConfigTypeError),
    ("VSO", {"reg_decay": -1.0}, jboat.ConfigError),
    ("VSO", {"z_lr": 0.0}, jboat.ConfigError),
    ("PGDO", {"penalty": "hinge"}, jboat.ConfigError),
    ("PGDO", {"gamma_argmax_step": 0}, jboat.ConfigError),
    ("MESO", {"c0": -0.2}, jboat.ConfigError),
    ("VFO", {"mu": 1.0}, jboat.ConfigError),
    ("GAFFO", {"lower_step_size": "big"}, jboat.ConfigTypeError),
    ("GAFFO", {"projection": 3}, jboat.ConfigTypeError),
])
def test_bad_options_are_rejected_at_build_time(op, section, error):
    q = square_quadratic() if op == "GAFFO" else Quadratic()
    with pytest.raises(error, match=op):
        build(q, op, **{op: section})


def test_defaults_and_aliases_are_filled_in():
    q = square_quadratic()
    cfg = build(q, "GAFFO", GAFFO={"gap_lambda": 0.5, "lower_step_size": None}).boat_configs
    assert cfg["GAFFO"]["lambda"] == 0.5 and cfg["GAFFO"]["maximize"] is False
    assert cfg["GAFFO"]["lower_step_size"] is None
    cfg = build(Quadratic(), "VSO").boat_configs
    assert cfg["VSO"] == {"z_loop": 20, "z_lr": 0.01, "ll_l2_reg": 0.0, "ul_l2_reg": 0.0,
                          "ul_ln_reg": 50.0, "reg_decay": 0.0}
    cfg = build(Quadratic(), "PGDO", PGDO={"updata_y_ahead": True}).boat_configs
    assert cfg["PGDO"]["update_y_ahead"] is True and cfg["PGDO"]["penalty"] == "difference"


@pytest.mark.parametrize("op", ["VSO", "VFO", "MESO", "PGDO", "GAFFO"])
def test_recipe_sections_equal_the_declared_defaults(op):
    """configs/ recipes and the defaults a config without the section gets agree."""
    section = load_recipe(op)[op]
    defaults = {o.name: o.default for o in jboat.Operation_REGISTRY[op].options}
    assert section == {key: defaults[key] for key in section}
    assert set(section) == set(defaults)


# -- runtime behaviour --------------------------------------------------------------------
def test_vso_with_non_positive_value_rolls_back_and_names_the_fix():
    q = Quadratic()
    problem = build(q, "VSO", VSO={"ll_l2_reg": 0.0})
    before = q.lower.value.numpy().copy()
    with pytest.raises(FloatingPointError, match="add a constant"):
        problem.run_iter(*feeds(q, offset=-100.0), 0)
    np.testing.assert_array_equal(q.lower.value.numpy(), before)   # z-loop undone


@pytest.mark.parametrize("op, names", [("MESO", ("theta",)), ("PGDO", ("y_hat", "gamma"))])
def test_operator_state_round_trip(op, names):
    q = Quadratic()
    problem = build(q, op, lower_iters=2)
    ll, ul = feeds(q)
    problem.run_iter(ll, ul, 0)
    solver = problem._fo_op_solver
    saved = {k: ([v.numpy().copy() for v in val] if isinstance(val, list) else val)
             for k, val in solver.state_dict().items()}
    assert set(saved) == set(names)
    problem.run_iter(ll, ul, 1)
    solver.load_state_dict(saved)
    for k, val in solver.state_dict().items():
        if isinstance(val, list):
            for a, b in zip(val, saved[k]):
                np.testing.assert_array_equal(a.numpy(), b)
        else:
            assert val == saved[k]


def test_fo_operators_are_registered_with_role_fo():
    from jboat.base import SingleLoopSolver

    assert set(FO_OPS) <= set(jboat.operators_by_role("fo"))
    for name in FO_OPS:
        cls = jboat.get_registered_operation(name)
        # the single-loop protocol, not the gm base with another optimize signature
        assert issubclass(cls, SingleLoopSolver) and cls.role == "fo"
        assert not issubclass(cls, jboat.gm_ol.DynamicalSystem)
    assert issubclass(jboat.get_registered_operation("DM"), SingleLoopSolver)


@pytest.mark.parametrize("op", FO_OPS)
def test_shared_model_meta_learning_layout_runs(op):
    """``upper_level_model is lower_level_model`` (the meta-learning examples): x and y
    are the same Vars; every operator runs a batch and keeps values finite."""
    from fo_reference import LOSSES
    from quadratic import Vector

    q = square_quadratic()
    model = Vector(q.y0)
    params = list(model.parameters())
    config = {"fo_op": op, "gm_op": None, "na_op": None, "lower_iters": 2,
              "fogm_batch_input": True, "track_losses": False,
              "lower_level_model": model, "upper_level_model": model,
              "lower_level_var": params, "upper_level_var": params,
              "lower_level_opt": jt.optim.SGD(params, lr=0.05),
              "upper_level_opt": jt.optim.SGD(params, lr=0.05)}
    problem = jboat.Problem(config, LOSSES).build_ll_solver().build_ul_solver()
    # scaled A keeps f(y, y) = ½yᵀ(sA − B − Bᵀ)y bounded below; the offset keeps VSO's V > 0
    tasks = [feeds(q, offset=20.0, scale=3.0), feeds(q, offset=20.0, scale=3.5)]
    for k in range(2):
        records, _ = problem.run_iter([t[0] for t in tasks], [t[1] for t in tasks], k)
        assert len(records) == 2 and all(np.isfinite(r["upper_loss"]) for r in records)
    assert np.isfinite(model.value.numpy()).all()
    assert not np.allclose(model.value.numpy(), q.y0)
