"""Checkpointed reverse mode through Problem: ``RAD``/``IAD`` with ``checkpoint_every``
give plain reverse mode's hyper-gradient (and the closed forms) wherever RAD runs."""

import jittor as jt
import numpy as np
import pytest

import jboat
from jboat import ConfigError, ConfigTypeError
from jboat.plan import ReplayTrajectory
from na_problems import MetaRegression
from quadratic import (Quadratic, Vector, gda_unrolled_hypergradient, initial_point_gradient,
                       rel_err)

K = 10
SETTINGS = [(1, "segment"), (3, "segment"), (K, "segment"), ("auto", "segment"),
            (3, "step")]


def checkpointing(every, replay="segment", section="RAD"):
    return {section: {"checkpoint_every": every, "replay": replay}}


def quadratic_grad(q, every=None, replay="segment", **options):
    if every is not None:
        options.update(checkpointing(every, replay))
    problem = q.build(lower_iters=options.pop("lower_iters", K), return_grad=True, **options)
    grads, _ = problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    return grads[0].numpy(), problem


@pytest.mark.parametrize("every,replay", SETTINGS)
def test_quadratic_equals_plain_rad_and_the_closed_form(every, replay):
    q = Quadratic()
    plain, _ = quadratic_grad(q)
    got, problem = quadratic_grad(q, every, replay)
    assert rel_err(got, plain) < 1e-5
    assert rel_err(got, q.unrolled_hypergradient(q.x0, q.y0, K)) < 1e-5
    # the LL model is warm-started from y_K, as with plain RAD
    assert rel_err(q.lower.value.numpy(), q.trajectory(q.x0, q.y0, K)[-1]) < 1e-5


def test_the_trajectory_is_replayed_from_checkpoints_not_recorded():
    q = Quadratic()
    problem = q.build(lower_iters=K, return_grad=True, **checkpointing(3))
    seen = {}
    solver = problem._ll_solver.gradient_instances[-1]
    run = solver.run

    def spy(*args, **kwargs):
        trajectory = run(*args, **kwargs)
        seen["trajectory"] = trajectory
        seen["history"] = trajectory.model.history_length()
        return trajectory

    solver.run = spy
    problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    trajectory = seen["trajectory"]
    assert isinstance(trajectory, ReplayTrajectory)
    assert sorted(trajectory.checkpoints.checkpoints) == [0, 3, 6, 9]
    # initial and final fast weights only: no graph of the K steps is kept
    assert seen["history"] == 2


def test_loss_record_and_nan_guard_see_every_step():
    q = Quadratic()
    plain = q.build(lower_iters=K, track_losses=True)
    plain.run_iter(q.ll_feed(), q.ul_feed(), 0)
    q2 = Quadratic()
    ckpt = q2.build(lower_iters=K, track_losses=True, nan_guard=True, **checkpointing(4))
    ckpt.run_iter(q2.ll_feed(), q2.ul_feed(), 0)
    a, b = plain.loss_history[-1], ckpt.loss_history[-1]
    assert abs(a["ll_loss"] - b["ll_loss"]) < 1e-5 * max(1.0, abs(a["ll_loss"]))
    assert abs(a["ul_loss"] - b["ul_loss"]) < 1e-5 * max(1.0, abs(a["ul_loss"]))
    # the UL step was taken with the same hyper-gradient
    assert rel_err(q2.upper.value.numpy(), q.upper.value.numpy()) < 1e-5


@pytest.mark.parametrize("every,replay", [(3, "segment"), (3, "step"), (K, "segment")])
def test_ptt_differentiates_at_the_selected_step(every, replay):
    # y_0 far from the optimum of F, so that the worst step is not the last one
    q = Quadratic()
    y0 = q.y0 * 0 + np.array([3.0, -3.0, 3.0, -3.0])
    plain, _ = quadratic_grad(q, na_op=("PTT", "RAD"), y0=y0)
    got, _ = quadratic_grad(q, every, replay, na_op=("PTT", "RAD"), y0=y0)
    ys = q.trajectory(q.x0, y0, K)
    k_star = 1 + int(np.argmax([q.F(q.x0, y) for y in ys[1:]]))
    expected = q.unrolled_hypergradient(q.x0, y0, K, select=k_star)
    assert rel_err(got, plain) < 1e-5
    assert rel_err(got, expected) < 1e-5


@pytest.mark.parametrize("every", [1, 3, K])
def test_rgt_starts_the_recording_after_the_truncated_steps(every):
    q = Quadratic()
    options = {"na_op": ("RGT", "RAD"), "RGT": {"truncate_iter": 4}}
    plain, _ = quadratic_grad(q, **options)
    got, _ = quadratic_grad(q, every, **options)
    assert rel_err(got, plain) < 1e-5
    assert rel_err(got, q.unrolled_hypergradient(q.x0, q.y0, K, start=4)) < 1e-5


def test_gda_aggregated_steps():
    q = Quadratic()
    options = {"gm_op": ("GDA", "NGD"), "GDA": {"alpha_init": 0.6, "alpha_decay": 0.9}}
    plain, _ = quadratic_grad(q, **options)
    got, _ = quadratic_grad(q, 3, **options)
    assert rel_err(got, plain) < 1e-5
    expected = gda_unrolled_hypergradient(q, q.x0, q.y0, K, 0.6, 0.9)
    assert rel_err(got, expected) < 1e-5


def test_dynamic_initialization_steps_the_initial_point():
    K_di, di_lr = 4, 0.3
    q = Quadratic()
    problem = q.build(["DI", "NGD"], ["RAD"], lower_iters=K_di, DI={"lr": di_lr},
                      copy_last_param=False, **checkpointing(3))
    problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    # y_0 took DI's step along dF/dy_0 = (M^K)ᵀ∇_yF(y_K); x its step along the RAD one
    expected_y = q.y0 - di_lr * initial_point_gradient(q, q.x0, q.y0, K_di)
    expected_x = q.x0 - 0.1 * q.unrolled_hypergradient(q.x0, q.y0, K_di)
    assert rel_err(q.lower.value.numpy(), expected_y) < 1e-5
    assert rel_err(q.upper.value.numpy(), expected_x) < 1e-5


@pytest.mark.parametrize("make_opt", [
    lambda ps: jt.optim.SGD(ps, lr=0.05, momentum=0.9),
    lambda ps: jt.optim.SGD(ps, lr=0.05, momentum=0.5, nesterov=True, weight_decay=0.01),
    lambda ps: jt.optim.Adam(ps, lr=0.05),
    lambda ps: jt.optim.AdamW(ps, lr=0.05, weight_decay=0.1),
    lambda ps: jt.optim.RMSprop(ps, lr=0.01),
], ids=["momentum", "nesterov", "adam", "adamw", "rmsprop"])
@pytest.mark.parametrize("every,replay", [(3, "segment"), (3, "step")])
def test_stateful_inner_optimizers_carry_their_state_in_the_checkpoints(
        make_opt, every, replay):
    q = Quadratic()
    plain, _ = quadratic_grad(q, ll_opt=make_opt)
    got, _ = quadratic_grad(q, every, replay, ll_opt=make_opt)
    assert np.linalg.norm(plain) > 1e-3
    assert rel_err(got, plain) < 1e-5


def test_stateful_optimizer_after_truncation_resumes_its_state():
    q = Quadratic()
    options = {"na_op": ("RGT", "RAD"), "RGT": {"truncate_iter": 3},
               "ll_opt": lambda ps: jt.optim.Adam(ps, lr=0.05)}
    plain, _ = quadratic_grad(q, **options)
    got, _ = quadratic_grad(q, 2, **options)
    assert rel_err(got, plain) < 1e-5


# -- MAML (IAD) ---------------------------------------------------------------------------------
@pytest.mark.parametrize("every,replay", [(1, "segment"), (2, "step"), (K, "segment")])
def test_iad_is_the_maml_meta_gradient(every, replay):
    meta = MetaRegression()
    problem = meta.build(["NGD"], ["IAD"], lower_iters=K,
                         **checkpointing(every, replay, section="IAD"))
    grads, _ = problem.run_iter(*meta.feeds(), 0)
    assert rel_err(grads[0].numpy(), meta.meta_gradient(K)) < 1e-5
    assert rel_err(meta.model.value.numpy(), meta.theta) < 1e-6


def test_first_order_maml():
    meta = MetaRegression()
    problem = meta.build(["NGD"], ["FOA", "IAD"], lower_iters=K,
                         **checkpointing(3, section="IAD"))
    grads, _ = problem.run_iter(*meta.feeds(), 0)
    assert rel_err(grads[0].numpy(), meta.meta_gradient(K, first_order=True)) < 1e-5


def test_iad_with_ptt_matches_plain():
    def run(options):
        meta = MetaRegression()
        problem = meta.build(["NGD"], ["PTT", "IAD"], lower_iters=6, **options)
        grads, _ = problem.run_iter(*meta.feeds(), 0)
        return grads[0].numpy()

    assert rel_err(run(checkpointing(2, section="IAD")), run({})) < 1e-5


# -- a small MLP ----------------------------------------------------------------------------------
class MLP(jt.nn.Module):
    def __init__(self, seed):
        rng = np.random.RandomState(seed)
        self.w1 = jt.array((rng.randn(4, 5) * 0.5).astype(np.float32))
        self.b1 = jt.array(np.zeros(5, np.float32))
        self.w2 = jt.array((rng.randn(5, 2) * 0.5).astype(np.float32))

    def execute(self, x):
        return jt.matmul(jt.tanh(jt.matmul(x, self.w1) + self.b1), self.w2)


def mlp_lower_loss(feed, upper_model, lower_model, **kwargs):
    r = lower_model(feed["X"], **kwargs) - feed["Y"]
    params = kwargs.get("params") or list(lower_model.parameters())
    decay = jt.exp(upper_model())
    return (r * r).mean() + 0.5 * (decay[0] * (params[0] * params[0]).sum()
                                   + decay[1] * (params[2] * params[2]).sum())


def mlp_upper_loss(feed, upper_model, lower_model, **kwargs):
    r = lower_model(feed["X"], **kwargs) - feed["Y"]
    return (r * r).mean()


def mlp_feeds(seed):
    rng = np.random.RandomState(seed)

    def feed():
        X = rng.randn(6, 4).astype(np.float32)
        return {"X": jt.array(X), "Y": jt.array(np.tanh(X[:, :2] - X[:, 2:]))}

    return feed(), feed()


def mlp_grad(ll_opt, na_op=("RAD",), **options):
    lower, upper = MLP(0), Vector([-1.0, -2.0])
    config = {"gm_op": ["NGD"], "na_op": list(na_op), "lower_iters": K, "return_grad": True,
              "lower_level_model": lower, "upper_level_model": upper,
              "lower_level_var": list(lower.parameters()),
              "upper_level_var": list(upper.parameters()),
              "lower_level_opt": ll_opt(list(lower.parameters())),
              "upper_level_opt": jt.optim.SGD(list(upper.parameters()), lr=0.1)}
    config.update(options)
    problem = jboat.Problem(config, {"lower_level_loss": mlp_lower_loss,
                                     "upper_level_loss": mlp_upper_loss})
    problem.build_ll_solver().build_ul_solver()
    grads, _ = problem.run_iter(*mlp_feeds(1), 0)
    return grads[0].numpy()


@pytest.mark.parametrize("every,replay", SETTINGS[:3] + SETTINGS[4:])
def test_mlp_equals_plain_rad(every, replay):
    def sgd(ps):
        return jt.optim.SGD(ps, lr=0.3)
    plain = mlp_grad(sgd)
    got = mlp_grad(sgd, **checkpointing(every, replay))
    assert np.linalg.norm(plain) > 1e-4
    assert rel_err(got, plain) < 1e-5


def test_mlp_with_adam_equals_plain():
    def adam(ps):
        return jt.optim.Adam(ps, lr=0.05)
    plain = mlp_grad(adam)
    got = mlp_grad(adam, **checkpointing(3, "step"))
    assert np.linalg.norm(plain) > 1e-4
    assert rel_err(got, plain) < 1e-5


def test_mlp_rad_matches_finite_differences_of_the_unrolled_loss():
    # an oracle independent of jboat's plain RAD: central differences of F(x, y_K(x))
    def sgd(ps):
        return jt.optim.SGD(ps, lr=0.3)
    got = mlp_grad(sgd, **checkpointing("auto"))
    ll_feed, ul_feed = mlp_feeds(1)

    def unrolled(x):
        model, upper = MLP(0), Vector(x)
        params = list(model.parameters())
        for _ in range(K):
            loss = mlp_lower_loss(ll_feed, upper, model)
            grads = jt.grad(loss, params)
            for p, g in zip(params, grads):
                p.assign((p - 0.3 * g).detach())
        return float(mlp_upper_loss(ul_feed, upper, model).item())

    x0, h = np.array([-1.0, -2.0]), 1e-2
    fd = [(unrolled(x0 + h * e) - unrolled(x0 - h * e)) / (2 * h) for e in np.eye(2)]
    assert rel_err(got, fd) < 2e-2


def test_accumulated_tasks_sum_their_hypergradients():
    meta = MetaRegression(tasks=3)
    problem = meta.build(["NGD"], ["IAD"], lower_iters=4, **checkpointing(2, section="IAD"))
    grads, _ = problem.run_iter(*meta.feeds(), 0)
    assert rel_err(grads[0].numpy(), meta.meta_gradient(4)) < 1e-5


# -- configuration -----------------------------------------------------------------------------
@pytest.mark.parametrize("value,error", [(0, ConfigError), (-2, ConfigError),
                                         ("sqrt", ConfigError), (1.5, ConfigTypeError),
                                         (True, ConfigTypeError)])
def test_bad_checkpoint_interval_is_refused_with_the_fix(value, error):
    q = Quadratic()
    with pytest.raises(error, match="RAD.checkpoint_every"):
        q.build(**checkpointing(value))


def test_bad_replay_is_refused():
    q = Quadratic()
    with pytest.raises(ConfigError, match="replay"):
        q.build(**checkpointing(2, replay="revolve"))


def test_checkpointing_refuses_a_second_terminal_that_needs_the_graph():
    meta = MetaRegression()
    with pytest.raises(ConfigError, match="CG"):
        meta.build(["NGD"], ["IAD", "CG"], **checkpointing(2, section="IAD"))


def test_recipe_with_checkpointing_loads():
    config = jboat.load_config("rhg_checkpointed")
    assert config["RAD"] == {"checkpoint_every": "auto", "replay": "step"}
    assert config["lower_iters"] == 1000
