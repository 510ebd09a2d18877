r"""The re-noising kernel of a distilled (few-step) model: predict the end, then add noise.

A distilled model (consistency, timestep- or adversarially-distilled, reflowed) predicts the
end of the flow from any noisy point in one step: its Tweedie prediction is the flow map,
``x̂0(x, t) = x − t·v(x, t) ≈ Φ_t(x)``. If ``x_t ~ p_t`` then ``Φ_t(x_t) ~ p_0``, and the
interpolant's forward kernel puts the prediction back at ``t' < t``:

.. math::

    x_{t'} = (1 − t')\, \hat x_0(x_t, t) + t' z, \qquad z \sim N(0, I), \qquad
    p(x_{t'} \mid x_t) = N\big(x_{t'};\ (1 − t')\,\hat x_0(x_t, t),\ t'^2 I\big)

so ``x_{t'} ~ p_{t'}``: a Markov kernel with a Gaussian density, exact for an exact flow map
(the multistep sampler of consistency models and of FLUX-schnell). At ``t' = 0`` it is the
deterministic one-step prediction ``x̂0`` (the Euler ODE step to 0).

**Which kernel for which model.** The stochastic sampler of :mod:`psijax.flows.sde` reads the
score off the velocity, ``s = −(x + (1 − t)v)/t``, which holds for a model trained on
independent (noise, data) pairs, where ``x − t·v = E[x0 | x_t]``. A distilled model's velocity
is not that one (its prediction is a sample, not a mean), so the SDE drifts away from the
model's own distribution. This kernel assumes the opposite, and is the one to use with a
distilled model; with a model trained on independent pairs it would re-noise the conditional
mean (too little spread). :class:`Renoising` is accepted wherever a
:class:`~psijax.flows.sde.Diffusion` is (``flows.sde.sample``, every sampler's ``diffusion=``)
and is best given as the problem's own transition,
``RewardProblem(..., transition=Renoising())``, so that every sampler on that problem uses it.

:func:`psijax.flows.ode.distilled_velocity` is the ideal distilled model of any velocity field
(an ODE solve per call): an oracle for tests and studies.
"""

import dataclasses

import jax
import jax.numpy as jnp
from blackjax.types import ArrayLike, ArrayLikeTree

from psijax._tree import accumulation_dtype
from psijax.flows.sde import Transition, check_step_times

__all__ = ["Renoising"]


@dataclasses.dataclass(frozen=True)
class Renoising:
    r"""The kernel ``N(x'; (1 − t')·(x − t·v), t'² I)`` of a distilled model (module docstring).

    It has no parameters: for an exact flow map, full re-noising is the only choice of this
    form that keeps the model's marginals (keeping part of the predicted noise would be exact
    only for straight trajectories).
    """

    def transition(
        self, x: ArrayLikeTree, v: ArrayLikeTree, t: ArrayLike, t_next: ArrayLike
    ) -> Transition:
        """The Gaussian transition of the step ``t → t'`` given ``v = v(x, t)``.

        Requires ``0 ≤ t' < t ≤ 1`` (checked when concrete). The mean is in the accumulation
        dtype (at least float32); ``σ = t'``.
        """
        check_step_times(t, t_next)
        dtype = accumulation_dtype(t, t_next, *jax.tree.leaves(x), *jax.tree.leaves(v))
        t, t_next = jnp.asarray(t, dtype), jnp.asarray(t_next, dtype)

        def mean_leaf(x, v):
            x, v = jnp.asarray(x, dtype), jnp.asarray(v, dtype)
            return (1.0 - t_next) * (x - t * v)

        return Transition(jax.tree.map(mean_leaf, x, v), t_next)
