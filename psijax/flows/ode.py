"""Deterministic sampling: the probability-flow ODE and the flow map.

The flow ODE ``dx/dt = v(x, t)`` transports the marginal ``p_t`` of the interpolant to ``p_s``
for any ``s``. Integrating it from ``t`` down to ``0`` gives the **flow map**

.. math::

    Φ_t(x) = x + \\int_t^0 v(x_τ, τ)\\, dτ, \\qquad x_t = x,

which pushes ``p_t`` forward to the data distribution ``p_0``; in particular ``Φ_1`` pushes
``N(0, I)`` to ``p_0``. It is the x0-predictor that makes the reward-aware initial posterior
of Ψ-Sampler non-trivial for exact (non-distilled) models (docs/algorithms.md §3).

:func:`euler_sample` is the fixed-grid Euler scheme (one model evaluation per step);
:func:`solve` and :func:`flow_map` use diffrax's adaptive explicit Runge–Kutta solvers and
report the exact number of velocity evaluations (NFE) they made.
"""

from typing import Callable

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.types import Array, ArrayLike, ArrayLikeTree, ArrayTree

from psijax._checks import check_int, check_real
from psijax._tree import accumulation_dtype
from psijax.flows.sde import check_grid

__all__ = ["euler_sample", "solve", "flow_map", "flow_map_predictor", "distilled_velocity"]

_DEFAULT_DT0 = 0.01  # magnitude of the first attempted step; the PID controller adapts it


def euler_sample(velocity_fn: Callable, x1: ArrayLikeTree, grid: ArrayLike) -> ArrayTree:
    """Fixed-step Euler integration of the flow ODE along ``grid`` (``t_0 > t_1 > … > t_T``).

    .. math::

        x_{i+1} = x_i + (t_{i+1} − t_i)\\, v(x_i, t_i)

    ``lax.scan`` over the ``T = len(grid) − 1`` steps; NFE = T. Returns the sample at ``t_T``
    with the dtypes of ``x1`` (arithmetic in at least float32).
    """
    check_grid(grid)
    grid = jnp.asarray(grid, accumulation_dtype(grid))

    def body(x, times):
        t, t_next = times
        v = velocity_fn(x, t)

        def leaf(xi, vi):
            dtype = accumulation_dtype(xi, vi, t)
            return (xi.astype(dtype) + (t_next - t) * vi.astype(dtype)).astype(xi.dtype)

        return jax.tree.map(leaf, x, v), None

    x1 = jax.tree.map(jnp.asarray, x1)
    x0, _ = jax.lax.scan(body, x1, (grid[:-1], grid[1:]))
    return x0


def _check_solver(solver) -> None:
    if not isinstance(solver, diffrax.AbstractERK):
        raise TypeError(
            "`solver` must be an adaptive explicit Runge–Kutta solver of diffrax "
            f"(a diffrax.AbstractERK, e.g. Tsit5, Dopri5, Bosh3, Heun), got {solver!r}."
        )


def _check_time(value, name: str) -> None:
    check_real(value, name, ge=0.0, le=1.0)  # a scalar time; traced values pass


def _diffeqsolve(
    velocity_fn: Callable,
    x: ArrayLikeTree,
    t_start: ArrayLike,
    t_end: ArrayLike,
    *,
    solver=None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    dt0: float | None = None,
    max_steps: int = 4096,
    adjoint=None,
    throw: bool = True,
) -> tuple[diffrax.Solution, Array]:
    """:func:`solve`, returning the diffrax ``Solution`` itself next to the NFE."""
    solver = diffrax.Tsit5() if solver is None else solver
    adjoint = diffrax.RecursiveCheckpointAdjoint() if adjoint is None else adjoint
    _check_solver(solver)
    checked = (("rtol", rtol), ("atol", atol)) + ((("dt0", dt0),) if dt0 is not None else ())
    for name, value in checked:
        if check_real(value, name, gt=0.0) is None:
            raise ValueError(f"`{name}` must be concrete (not traced).")
    check_int(max_steps, "max_steps")
    if not isinstance(throw, (bool, np.bool_)):
        raise TypeError(f"`throw` must be a bool, got {throw!r}.")
    _check_time(t_start, "t_start")
    _check_time(t_end, "t_end")

    leaves = jax.tree.leaves(x)
    dtype = accumulation_dtype(t_start, t_end, *leaves)
    y0 = jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype), x)
    t0, t1 = jnp.asarray(t_start, dtype), jnp.asarray(t_end, dtype)

    def vector_field(t, y, args):
        del args
        return jax.tree.map(lambda vi: jnp.asarray(vi, dtype), velocity_fn(y, t))

    # Always pass the initial step (diffrax wants it signed): its own initial-step selection
    # would make the NFE depend on diffrax internals (it is skipped for wrapped terms anyway).
    dt0 = _DEFAULT_DT0 if dt0 is None else dt0
    dt0 = jnp.where(t1 < t0, -dt0, dt0).astype(dtype)

    # Seed the first-same-as-last stage ourselves (1 evaluation), in diffrax's RK solver-state
    # layout (first_step, f0): the solver then never re-evaluates the first stage, even when
    # its first attempted steps are rejected, so the NFE below is an exact function of the
    # number of attempted steps (tests/flows/test_ode.py counts the calls to verify it).
    stages = len(solver.tableau.c) + 1
    fsal = bool(solver.tableau.fsal)
    solver_state = (jnp.array(False), vector_field(t0, y0, None)) if fsal else None

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        solver,
        t0,
        t1,
        dt0,
        y0,
        saveat=diffrax.SaveAt(t1=True),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        adjoint=adjoint,
        max_steps=max_steps,
        solver_state=solver_state,
        throw=bool(throw),
    )
    attempted = jnp.asarray(sol.stats["num_steps"], jnp.int32)
    nfe = 1 + attempted * (stages - 1) if fsal else attempted * stages
    return sol, nfe


def solve(
    velocity_fn: Callable,
    x: ArrayLikeTree,
    t_start: ArrayLike,
    t_end: ArrayLike,
    *,
    solver=None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    dt0: float | None = None,
    max_steps: int = 4096,
    adjoint=None,
    throw: bool = True,
) -> tuple[ArrayTree, Array]:
    """Integrate ``dx/dt = v(x, t)`` from ``t_start`` to ``t_end`` with adaptive steps.

    .. math::

        x(t_{end}) = x + \\int_{t_{start}}^{t_{end}} v(x(τ), τ)\\, dτ

    Either direction works (``t_end < t_start`` is the denoising direction). diffrax's
    ``diffeqsolve`` with a PID step-size controller; arithmetic in at least float32, the
    velocity receives that dtype and its output is cast to it.

    Parameters
    ----------
    velocity_fn
        ``velocity_fn(x, t)`` on a single sample (array or pytree).
    x
        The state at ``t_start``.
    t_start, t_end
        Scalar times in ``[0, 1]`` (may be traced; equal times return ``x``).
    solver
        An explicit Runge–Kutta solver of diffrax (``diffrax.AbstractERK``); default
        ``diffrax.Tsit5()``.
    rtol, atol
        Tolerances of the PID controller.
    dt0
        Magnitude of the first attempted step; ``None`` means 0.01 (the controller adapts it).
    max_steps
        Maximum number of attempted steps; exceeding it raises at run time (diffrax's ``throw``).
    adjoint
        How to differentiate; default ``diffrax.RecursiveCheckpointAdjoint()`` (reverse mode
        through the solver).
    throw
        ``True`` (default): a failed solve (``max_steps`` reached, a non-finite state) raises at
        run time. ``False``: its state is NaN instead, so that a sampler gives the particle
        weight zero rather than stopping the run.

    Returns
    -------
    ``(x_end, nfe)``: the state at ``t_end`` (dtypes of ``x``) and the exact number of velocity
    evaluations of the forward solve, an int32 scalar. With ``S`` stages and ``N`` attempted
    (accepted + rejected) steps, ``nfe = 1 + N·(S − 1)`` for first-same-as-last solvers (Tsit5,
    Dopri5, Bosh3, …: their first stage is the last one of the previous step) and ``N·S``
    otherwise. Under ``vmap`` each sample reports its own count;
    the batched solve runs until the slowest sample is done. Evaluations made by a backward pass
    are not counted.

    """
    sol, nfe = _diffeqsolve(
        velocity_fn,
        x,
        t_start,
        t_end,
        solver=solver,
        rtol=rtol,
        atol=atol,
        dt0=dt0,
        max_steps=max_steps,
        adjoint=adjoint,
        throw=throw,
    )
    ok = sol.result == diffrax.RESULTS.successful

    def end(ys, leaf):
        return jnp.where(ok, ys[-1], jnp.nan).astype(jnp.result_type(leaf))

    return jax.tree.map(end, sol.ys, x), nfe


def flow_map(
    velocity_fn: Callable, x: ArrayLikeTree, t: ArrayLike, **solver_kwargs
) -> tuple[ArrayTree, Array]:
    """The flow map ``Φ_t(x)``: the ODE solution from ``t`` down to ``0``, and its NFE.

    .. math::

        Φ_t(x) = x + \\int_t^0 v(x_τ, τ)\\, dτ, \\qquad x_t = x

    Differentiable with respect to ``x`` (reverse mode through diffrax's checkpointed solve).
    ``solver_kwargs`` are those of :func:`solve`. Returns ``(Φ_t(x), nfe)``.
    """
    return solve(velocity_fn, x, t, 0.0, **solver_kwargs)


def flow_map_predictor(velocity_fn: Callable, **solver_kwargs) -> Callable:
    """An x0-predictor ``fn(x, t) -> Φ_t(x)`` from the flow map (see :func:`flow_map`).

    A drop-in replacement of the Tweedie prediction ``x − t·v(x, t)``: exact for the data
    distribution (``Φ_1`` pushes ``N(0, I)`` to ``p_0``) at the cost of one ODE solve. Use
    :func:`flow_map` itself where the NFE is needed.
    """
    solver = solver_kwargs.get("solver")
    if solver is not None:
        _check_solver(solver)

    def predictor(x: ArrayLikeTree, t: ArrayLike) -> ArrayTree:
        return flow_map(velocity_fn, x, t, **solver_kwargs)[0]

    return predictor


def distilled_velocity(velocity_fn: Callable, **solver_kwargs) -> Callable:
    """The ideal distilled model of ``velocity_fn``: a velocity field whose one-step
    prediction is the flow map, ``x − t·u(x, t) = Φ_t(x)``.

    .. math::

        u(x, t) = \\frac{x − Φ_t(x)}{t} \\quad (t > 0), \\qquad u(x, 0) = v(x, 0)

    (the limit). Each call is one adaptive ODE solve (:func:`flow_map`), differentiable in
    ``x``; an **oracle** for tests and studies of the kernel of a distilled model
    (:class:`psijax.flows.distilled.Renoising`), not a cheap model: a sampler counts each call
    as one model evaluation. ``solver_kwargs`` are those of :func:`solve` (tighten ``rtol``
    and ``atol`` for an accurate oracle); ``throw`` defaults to ``False`` here, so that a
    solve that fails (a particle thrown far off) gives a NaN velocity, which a sampler turns
    into a zero-weight particle, instead of stopping the run.
    """
    solver = solver_kwargs.get("solver")
    if solver is not None:
        _check_solver(solver)
    solver_kwargs = {"throw": False, **solver_kwargs}

    def velocity(x: ArrayLikeTree, t: ArrayLike) -> ArrayTree:
        t = jnp.asarray(t)
        # a safe time for the branch not taken (both run under vmap): no 0/0, no NaN gradient
        positive = jnp.where(t > 0, t, jnp.ones_like(t))

        def from_flow_map(x):
            x0, _ = flow_map(velocity_fn, x, positive, **solver_kwargs)
            dtype = accumulation_dtype(t, *jax.tree.leaves(x))
            return jax.tree.map(
                lambda a, b: ((a.astype(dtype) - b.astype(dtype)) / positive).astype(a.dtype),
                x,
                x0,
            )

        return jax.lax.cond(t > 0, from_flow_map, lambda x: velocity_fn(x, t), x)

    return velocity
