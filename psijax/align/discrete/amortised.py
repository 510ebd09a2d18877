r"""Training the amortised proposal by the log-variance loss (docs/algorithms.md §10.5).

The amortised proposal ``q_φ`` is the reverse kernel of a second denoiser
``logits_fn(params, E, t)`` (:class:`~psijax.align.discrete.proposals.Amortised`). Along a
trajectory ``x_0 = m^L → x_1 → … → x_T`` the log-weight of step ``i`` is

.. math::

    ℓw_i(φ) = \log p̃_i(x_{i+1} \mid x_i) − \log q_φ(x_{i+1} \mid x_i) + ρ_{i+1}(x_{i+1}) − ρ_i(x_i),

and the loss is the **log-variance** divergence with a learned per-step baseline ``F_i``,

.. math::

    \mathcal L(φ, F) = \textstyle\sum_i \mathbb E_{ν}\big[(ℓw_i(φ) − F_i)^2\big]
      + w_{KL}\, \mathbb E_ν \textstyle\sum_i \mathrm{KL}(μ_φ \,\|\, μ_θ)(x_i)
      − w_H\, \mathbb E_ν \textstyle\sum_i H(q_φ(\cdot \mid x_i)),

over trajectories from ``ν``: **on-policy** (``q_φ`` itself, the samples held constant),
**off-policy** (the model's reverse kernel ``p_θ``) or **mixed** (half of each batch from each).
The gradient flows only through ``log q_φ`` (and the optional KL and entropy terms): the
states, the twists and ``log p̃`` are constants. At zero loss ``ℓw_i`` is the constant ``F_i``
for every move, i.e. ``q_φ = q*``, the locally optimal proposal for the twist. The loop is a
``lax.scan`` over optimizer steps (optax).

Use the trained proposal with the corrected weights ``p̃/q_φ`` (``smc_amortised``), which
keeps the target ``P_θ e^{r/β}`` whatever ``q_φ`` is. (Running the reverse proposal of the
fine-tuned model instead, as the paper's LM and image scripts did, targets the fine-tuned
model's tilt.)
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from blackjax.types import Array, ArrayTree, PRNGKey

from psijax._checks import check_choice, check_int, check_real
from psijax.align.denoising import _checked_schedule
from psijax.align.discrete.problem import DiscreteProblem, check_discrete_problem
from psijax.align.discrete.targets import RewardTilt, check_target
from psijax.align.discrete.twists import NoTwist, Soft, check_twist, evaluate
from psijax.discrete.kernels import check_kernel
from psijax.discrete.masking import denoiser_log_probs, is_masked, one_hot
from psijax.discrete.sampling import check_one_token_steps, sampler_grid

__all__ = ["TrainState", "TrainInfo", "log_variance_loss", "train"]


class TrainState(NamedTuple):
    """The trained proposal's parameters, the per-step baseline ``F`` and the optimizer state."""

    params: ArrayTree
    baseline: Array
    opt_state: ArrayTree


class TrainInfo(NamedTuple):
    """Per optimizer step: ``loss`` (the whole objective) and ``log_weight_variance``, the
    variance of the summed log-weights ``Σ_i ℓw_i`` over the batch's trajectories."""

    loss: Array
    log_weight_variance: Array


def _setup(problem, kernel, schedule, num_steps, twist, target, annealing):
    problem = check_discrete_problem(problem)
    kernel = check_kernel(kernel)
    times, alpha = sampler_grid(num_steps, schedule)
    num_steps = times.shape[0] - 1
    check_one_token_steps(kernel, num_steps, problem.num_free)
    twist = check_twist(
        (Soft() if problem.reward_fn is not None else NoTwist()) if twist is None else twist
    )
    target = check_target(RewardTilt() if target is None else target)
    kappas = jnp.asarray(_checked_schedule(annealing, num_steps) / problem.beta, jnp.float32)
    return (
        problem,
        kernel,
        jnp.asarray(times, jnp.float32),
        jnp.asarray(alpha, jnp.float32),
        twist,
        target,
        kappas,
    )


def _trajectories(
    key,
    problem,
    kernel,
    times,
    alpha,
    twist,
    target,
    kappas,
    logits_q,
    params,
    num_trajectories,
    policy,
):
    """States ``(B, T + 1, L)``, constants ``c_i = log p̃ + ρ_{i+1} − ρ_i`` ``(B, T)``."""
    vocab, frozen, num_steps = problem.vocab_size, problem.frozen, times.shape[0] - 1
    fixed = jax.lax.stop_gradient(params)

    def one(key, on_policy):
        def body(carry, inputs):
            x, rho = carry
            k, t, a_t, a_s, k_here, k_next, level, last = inputs
            k_move, k_twist = jax.random.split(k)
            e = one_hot(x, vocab)
            log_mus = (denoiser_log_probs(problem.logits_fn(e, t), x, vocab),) + tuple(
                denoiser_log_probs(f(e, t), x, vocab) for f in target.extra_logits_fns
            )
            tables = tuple(kernel.frozen_table(x, lm, a_t, a_s, frozen) for lm in log_mus)
            q_mu = denoiser_log_probs(logits_q(fixed, e, t), x, vocab)
            q_table = kernel.frozen_table(x, q_mu, a_t, a_s, frozen)
            table = jnp.where(on_policy, q_table, target.proposal_table(kernel, tables))
            x_next = kernel.sample(k_move, table, x)
            log_p = target.log_kernel(kernel, tables, x, x_next, a_t, a_s, vocab, frozen)
            rho_hat = evaluate(
                twist, problem, k_twist, x_next, times[level], k_next, k_next, level, False
            ).log_twist
            rho_end = (
                jnp.asarray(problem.reward(one_hot(x_next, vocab)), jnp.float32) / problem.beta
            )
            rho_next = jnp.where(last, rho_end, rho_hat)
            return (x_next, rho_next), (x, log_p + rho_next - rho)

        start = jnp.asarray(problem.start)
        rho0 = evaluate(
            twist, problem, key, start, times[0], kappas[0], kappas[0], 0, False
        ).log_twist
        levels = jnp.arange(1, num_steps + 1)
        last = levels == num_steps
        keys = jax.random.split(key, num_steps)
        (x_end, _), (xs, consts) = jax.lax.scan(
            body,
            (start, rho0),
            (keys, times[:-1], alpha[:-1], alpha[1:], kappas[:-1], kappas[1:], levels, last),
        )
        return jnp.concatenate([xs, x_end[None]]), consts

    keys = jax.random.split(key, num_trajectories)
    if policy == "on":
        flags = jnp.ones((num_trajectories,), bool)
    elif policy == "off":
        flags = jnp.zeros((num_trajectories,), bool)
    else:
        flags = jnp.arange(num_trajectories) < num_trajectories // 2
    states, consts = jax.vmap(one)(keys, flags)
    return jax.lax.stop_gradient(states), jax.lax.stop_gradient(consts)


def log_variance_loss(
    params: ArrayTree,
    baseline: Array,
    rng_key: PRNGKey,
    problem: DiscreteProblem,
    logits_fn: Callable,
    *,
    num_steps: int,
    num_trajectories: int = 32,
    policy: str = "mixed",
    kernel="mdlm",
    schedule="linear",
    twist=None,
    target=None,
    annealing=None,
    kl_weight: float = 0.0,
    entropy_weight: float = 0.0,
) -> tuple[Array, Array]:
    r"""``(loss, var)``: the objective of the module docstring on one batch of trajectories
    and the variance of the summed log-weights.

    Parameters
    ----------
    params
        The proposal denoiser's parameters (any pytree).
    baseline
        ``(T,)`` the per-step baseline ``F``.
    rng_key
        PRNG key of the batch.
    problem
        The :class:`~psijax.align.discrete.problem.DiscreteProblem`.
    logits_fn
        ``logits_fn(params, E, t) -> (L, V + 1)``, the proposal's denoiser.
    num_steps, kernel, schedule, twist, target, annealing
        As for :func:`~psijax.align.discrete.smc.run_discrete_smc` (the SMC the proposal is
        trained for).
    num_trajectories
        ``B``, trajectories per batch.
    policy
        ``"on"``, ``"off"`` or ``"mixed"``.
    kl_weight, entropy_weight
        ``w_KL, w_H ≥ 0``.

    """
    policy = check_choice(policy, "policy", ("on", "off", "mixed"))
    num_trajectories = check_int(num_trajectories, "num_trajectories")
    kl_weight = check_real(kl_weight, "kl_weight", ge=0.0)
    entropy_weight = check_real(entropy_weight, "entropy_weight", ge=0.0)
    problem, kernel, times, alpha, twist, target, kappas = _setup(
        problem, kernel, schedule, num_steps, twist, target, annealing
    )
    states, consts = _trajectories(
        rng_key,
        problem,
        kernel,
        times,
        alpha,
        twist,
        target,
        kappas,
        logits_fn,
        params,
        num_trajectories,
        policy,
    )
    vocab, frozen = problem.vocab_size, problem.frozen

    def step_terms(x, x_next, t, a_t, a_s):
        e = one_hot(x, vocab)
        log_mu_q = denoiser_log_probs(logits_fn(params, e, t), x, vocab)
        table = kernel.frozen_table(x, log_mu_q, a_t, a_s, frozen)
        log_q = kernel.log_prob(table, x, x_next)
        extra = jnp.zeros((), jnp.float32)
        masked = is_masked(x, vocab)
        if kl_weight:
            log_mu = denoiser_log_probs(problem.logits_fn(e, t), x, vocab)
            p_q = jnp.exp(log_mu_q)
            kl = jnp.sum(jnp.where(p_q > 0, p_q * (log_mu_q - log_mu), 0.0), axis=-1)
            extra = extra + kl_weight * jnp.sum(jnp.where(masked, kl, 0.0))
        if entropy_weight:
            p = jnp.exp(table)
            entropy = -jnp.sum(jnp.where(p > 0, p * table, 0.0))
            extra = extra - entropy_weight * entropy
        return log_q, extra

    def per_trajectory(xs, c):
        log_q, extra = jax.vmap(step_terms)(xs[:-1], xs[1:], times[:-1], alpha[:-1], alpha[1:])
        log_w = c - log_q
        return jnp.sum((log_w - baseline) ** 2) + jnp.sum(extra), jnp.sum(log_w)

    losses, totals = jax.vmap(per_trajectory)(states, consts)
    return jnp.mean(losses), jnp.var(jax.lax.stop_gradient(totals))


def train(
    rng_key: PRNGKey,
    problem: DiscreteProblem,
    logits_fn: Callable,
    params: ArrayTree,
    *,
    num_steps: int,
    num_iterations: int,
    optimizer: optax.GradientTransformation | None = None,
    **loss_options,
) -> tuple[TrainState, TrainInfo]:
    """Minimise :func:`log_variance_loss` with ``optimizer`` (default ``optax.adam(1e-2)``)
    for ``num_iterations`` steps in ``lax.scan``, a fresh batch each step.

    Returns the final :class:`TrainState` and the :class:`TrainInfo` of every step. The
    trained proposal is ``Amortised(lambda E, t: logits_fn(state.params, E, t))``.
    """
    num_iterations = check_int(num_iterations, "num_iterations")
    optimizer = optax.adam(1e-2) if optimizer is None else optimizer
    baseline = jnp.zeros((check_int(num_steps, "num_steps"),), jnp.float32)
    # the arguments are checked once, before the loop
    jax.eval_shape(
        lambda: log_variance_loss(
            params, baseline, rng_key, problem, logits_fn, num_steps=num_steps, **loss_options
        )
    )
    grad_fn = jax.value_and_grad(
        lambda p, f, k: log_variance_loss(
            p, f, k, problem, logits_fn, num_steps=num_steps, **loss_options
        ),
        argnums=(0, 1),
        has_aux=True,
    )

    def body(state, key):
        (loss, var), grads = grad_fn(state.params, state.baseline, key)
        updates, opt_state = optimizer.update(
            grads, state.opt_state, (state.params, state.baseline)
        )
        params, baseline = optax.apply_updates((state.params, state.baseline), updates)
        return TrainState(params, baseline, opt_state), TrainInfo(loss, var)

    state = TrainState(params, baseline, optimizer.init((params, baseline)))
    return jax.lax.scan(body, state, jax.random.split(rng_key, num_iterations))
