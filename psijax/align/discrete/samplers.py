r"""The named discrete samplers: configurations of
:func:`~psijax.align.discrete.smc.run_discrete_smc`.

Every sampler is ``fn(rng_key, problem, *, num_particles | nfe_budget, num_steps, ...) ->
AlignmentResult`` (the result type of the continuous samplers), an entry of
:data:`DISCRETE_SAMPLERS`:

=====================  ===============  ==================  ===========  =====
sampler                twist            proposal            potential    ``κ``
=====================  ===============  ==================  ===========  =====
``best_of_n``          none             reverse             difference   0
``fk_steering``        point            reverse             max          1
``smc_reverse``        soft             reverse             difference   0.5
``smc_first_order``    soft             first-order         difference   0.5
``smc_amortised``      soft             amortised           difference   0.5
``smc_product``        none             product-optimal     difference   0.5
=====================  ===============  ==================  ===========  =====

(``κ``: resample when ``ESS ≤ κN``; ``best_of_n`` never resamples, so its weights are the
importance weights ``e^{r/β}`` of ``N`` unguided samples and ``log Ẑ = log mean e^{r/β}``.)
``smc_amortised`` needs ``proposal_logits_fn=`` (the trained proposal's denoiser) and
``smc_product`` needs ``logits_fn_b=`` and ``gamma=``
(:class:`~psijax.align.discrete.targets.Product`).
Any keyword of ``run_discrete_smc`` overrides the configuration. The final choice among the
weighted particles (weighted, a multinomial draw, the best weight, the best reward) is the
caller's: :func:`psijax.align.best_sample`.

**Equal cost** (:func:`cost_per_particle`). ``nfe_budget = B`` fixes the evaluations of the
whole run: a particle costs, per level, one denoiser forward, one backward for the gradient
proposals, one forward per extra model, and ``φ`` reward calls (twice with a gradient), each
reward call weighted by ``reward_cost`` (1 by default: a reward call counts as an NFE). Then
``N = ⌊B / cost⌋`` (rounded down to a multiple of the mesh's devices).
"""

import dataclasses
import difflib
import inspect
from typing import Callable, Mapping

from blackjax.types import PRNGKey

from psijax._checks import check_int, check_real
from psijax.align.discrete.problem import DiscreteProblem
from psijax.align.discrete.proposals import Amortised, FirstOrder, Reverse
from psijax.align.discrete.smc import run_discrete_smc
from psijax.align.discrete.targets import Product
from psijax.align.discrete.twists import NoTwist, Point, Soft
from psijax.align.result import AlignmentResult
from psijax.smc.potentials import Max
from psijax.smc.sharding import check_mesh

__all__ = ["DiscreteSampler", "DISCRETE_SAMPLERS", "cost_per_particle"]

_PARAMETERS = tuple(inspect.signature(run_discrete_smc).parameters)[2:]


def cost_per_particle(
    num_steps: int, twist, proposal, target=None, reward_cost: float = 1.0, num_states: int = 0
) -> float:
    """Evaluations one particle costs over ``T`` levels (module docstring); the initial level
    is a denoiser pass, the last a single exact reward call; ``num_states`` is the number of
    enumerated states of :class:`~psijax.align.discrete.proposals.LocallyOptimal` (their
    evaluations are shared by the particles and not included)."""
    num_steps = check_int(num_steps, "num_steps")
    reward_cost = check_real(reward_cost, "reward_cost", ge=0.0)
    grad = int(proposal.needs_grad)
    extra = len(getattr(target, "extra_logits_fns", ())) + proposal.extra_nfe
    per_level = 1 + grad + extra + reward_cost * twist.num_samples * (1 + grad)
    return num_steps * per_level + reward_cost  # levels 0 … T−1, then r(x_T)


@dataclasses.dataclass(frozen=True)
class DiscreteSampler:
    """A named configuration of :func:`~psijax.align.discrete.smc.run_discrete_smc`.

    Parameters
    ----------
    name
        The registry name.
    summary
        What it is and where it comes from (the docstring).
    config
        Keyword arguments of ``run_discrete_smc``.
    requires
        Keywords the caller must give.
    build
        ``build(**required) -> dict``: the configuration entries made from them.
    """

    name: str
    summary: str
    config: Mapping = dataclasses.field(default_factory=dict)
    requires: tuple = ()
    build: Callable | None = None

    def __post_init__(self):
        unknown = set(self.config) - set(_PARAMETERS)
        if unknown:
            raise TypeError(f"`config` names no argument of run_discrete_smc: {sorted(unknown)}.")
        object.__setattr__(self, "__doc__", self.summary)
        object.__setattr__(self, "__name__", self.name)

    def __call__(
        self,
        rng_key: PRNGKey,
        problem: DiscreteProblem,
        *,
        num_particles: int | None = None,
        nfe_budget: int | None = None,
        reward_cost: float = 1.0,
        **kwargs,
    ) -> AlignmentResult:
        """Run the configuration (class docstring); exactly one of ``num_particles`` and
        ``nfe_budget``."""
        accepted = [*_PARAMETERS, *self.requires, "nfe_budget", "reward_cost"]
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            hints = [
                f"{k!r} (did you mean {close[0]!r}?)" if close else repr(k)
                for k in unknown
                for close in [difflib.get_close_matches(k, accepted, n=1)]
            ]
            raise TypeError(f"{self.name}() got unexpected keyword arguments: {', '.join(hints)}.")
        missing = [k for k in self.requires if k not in kwargs]
        if missing:
            raise TypeError(f"{self.name}() needs the keyword arguments {missing}.")
        config = dict(self.config)
        if self.build is not None:
            config.update(self.build(**{k: kwargs.pop(k) for k in self.requires}))
        config.update(kwargs)
        if (num_particles is None) == (nfe_budget is None):
            raise TypeError(f"{self.name}() takes exactly one of `num_particles` and `nfe_budget`.")
        if nfe_budget is not None:
            num_particles = self.num_particles_for(nfe_budget, problem, reward_cost, **config)
        return run_discrete_smc(rng_key, problem, num_particles=num_particles, **config)

    def num_particles_for(
        self, nfe_budget: int, problem, reward_cost: float = 1.0, **config
    ) -> int:
        """``N = ⌊B / cost_per_particle⌋`` for this configuration, with ``config`` (keywords of
        ``run_discrete_smc``, ``num_steps`` among them) over the sampler's own (module
        docstring)."""
        nfe_budget = check_int(nfe_budget, "nfe_budget")
        config = {**self.config, **config}
        cost = cost_per_particle(
            check_int(config["num_steps"], "num_steps"),
            config.get("twist") or (Soft() if problem.reward_fn is not None else NoTwist()),
            config.get("proposal") or Reverse(),
            config.get("target"),
            reward_cost,
        )
        n = int(nfe_budget // cost)
        mesh = check_mesh(config.get("mesh"))
        if mesh is not None:
            n -= n % mesh.devices.size
        if n < 1:
            raise ValueError(
                f"`nfe_budget` = {nfe_budget} buys no particle of {self.name} (one costs {cost:g})."
            )
        return n


DISCRETE_SAMPLERS = {
    s.name: s
    for s in (
        DiscreteSampler(
            "best_of_n",
            "N unguided samples weighted by e^{r/β} (no resampling): the baseline at equal NFE.",
            {"twist": NoTwist(), "proposal": Reverse(), "ess_threshold": 0.0},
        ),
        DiscreteSampler(
            "fk_steering",
            "FK steering (Singhal et al. 2025) for masked diffusion: reverse proposal, the "
            "max-over-time potential of the point reward estimate, resampling at every step.",
            {"twist": Point(), "proposal": Reverse(), "potential": Max(), "ess_threshold": 1.0},
        ),
        DiscreteSampler(
            "smc_reverse",
            "Twisted SMC with the reverse proposal ('SMC-base' of Ou et al. 2025).",
            {"twist": Soft(), "proposal": Reverse()},
        ),
        DiscreteSampler(
            "smc_first_order",
            "Twisted SMC with the first-order (gradient) proposal ('SMC-grad' of Ou et al. 2025).",
            {"twist": Soft(), "proposal": FirstOrder()},
        ),
        DiscreteSampler(
            "smc_amortised",
            "Twisted SMC with an amortised proposal ('SMC-amot' of Ou et al. 2025) and the "
            "corrected weights p/q: needs proposal_logits_fn= (psijax.align.discrete.amortised).",
            {"twist": Soft()},
            requires=("proposal_logits_fn",),
            build=lambda proposal_logits_fn: {"proposal": Amortised(proposal_logits_fn)},
        ),
        DiscreteSampler(
            "smc_product",
            "SMC for a product / classifier-free-guidance target p_a^γ p_b^{1−γ} with its "
            "locally optimal proposal: needs logits_fn_b= and gamma=.",
            {"twist": NoTwist(), "proposal": Reverse()},
            requires=("logits_fn_b", "gamma"),
            build=lambda logits_fn_b, gamma: {"target": Product(logits_fn_b, gamma)},
        ),
    )
}
