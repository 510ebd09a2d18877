"""Text-to-image alignment with FLUX from local files: the paper's experiment in psijax.

A run composes parts that exist elsewhere and adds no sampler code:

- the FLUX transformer as a velocity field (:func:`psijax.models.flux.to_velocity_fn`),
  conditioned on one prompt's precomputed text states (:mod:`psijax.models.flux.prompts`);
- the reward of a sampler's state ``x`` (packed, normalised latent tokens ``(L, 64)``): the
  autoencoder decodes it (:meth:`~psijax.models.flux.AutoencoderKL.decode_tokens`) and an image
  reward scores it (:mod:`psijax.rewards`: LAION's aesthetic predictor, or the CLIP score);
- any named sampler of :data:`psijax.align.SAMPLERS` (Ψ-Sampler by default) on FLUX's time grid
  (dev's shifted grid when the model embeds guidance, schnell's uniform one otherwise), in
  bfloat16 with rematerialisation, ``particle_chunk`` and ``mesh`` passed through;
- the kernel between denoising steps (:func:`transition`): FLUX-schnell is timestep-distilled,
  so its steps re-noise the one-step prediction (:class:`psijax.flows.distilled.Renoising`,
  which keeps a distilled model's distribution); FLUX-dev, a flow whose velocity is a
  conditional mean, takes the stochastic sampler of :mod:`psijax.flows.sde`.

:func:`load` reads every file; :func:`run` aligns one prompt and decodes the final particles;
:func:`save_grid` writes them best first. ``psijax flux`` is the command-line front end.
"""

import dataclasses
import functools
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from psijax import align
from psijax._tree import static_partial
from psijax.flows.distilled import Renoising
from psijax.models import clip as clip_models
from psijax.models import flux
from psijax.models.flux.prompts import PromptEmbeddings, load_prompt_embeddings
from psijax.rewards import (
    aesthetic_reward,
    clip_score_reward,
    load_aesthetic_head,
)

__all__ = [
    "REWARDS",
    "TRANSITIONS",
    "FluxSetup",
    "ImageOptions",
    "load",
    "problem",
    "transition",
    "grid",
    "run",
    "save_grid",
]

#: The image rewards a run can use.
REWARDS = ("aesthetic", "clip_score")
#: The kernels between denoising steps a run can use (:func:`transition`).
TRANSITIONS = ("auto", "renoising", "sde")


@dataclasses.dataclass(frozen=True)
class FluxSetup:
    """The loaded parts of a run.

    Attributes
    ----------
    transformer
        The FLUX transformer.
    autoencoder
        Its autoencoder.
    embeddings
        The prompts' text conditioning.
    reward
        ``"aesthetic"`` or ``"clip_score"``.
    tower
        CLIP's vision tower (both rewards read images through it).
    head
        LAION's aesthetic head (``"aesthetic"`` only).
    """

    transformer: flux.Flux
    autoencoder: flux.AutoencoderKL
    embeddings: PromptEmbeddings
    reward: str
    tower: clip_models.CLIPVision
    head: Any = None


@dataclasses.dataclass(frozen=True)
class ImageOptions:
    """How a run computes.

    Attributes
    ----------
    height, width
        Image size in pixels (multiples of twice the autoencoder's factor: 16 for FLUX).
    dtype
        Compute dtype of the transformer, the autoencoder and CLIP (the sampler's arithmetic
        stays float32).
    remat
        Rematerialise blocks and layers in the backward passes (reward gradients).
    attention
        The transformer's attention (:class:`psijax.models.flux.FluxOptions`).
    particle_chunk
        Evaluate at most this many particles at a time (memory bounded by the chunk).
    guidance
        FLUX-dev's distilled guidance scale (``None`` for schnell).
    transition
        The kernel between denoising steps, one of :data:`TRANSITIONS` (:func:`transition`):
        ``"auto"`` (default) re-noises for a timestep-distilled model (no guidance embedding:
        schnell) and takes the stochastic sampler otherwise (dev).
    """

    height: int = 512
    width: int = 512
    dtype: Any = jnp.bfloat16
    remat: bool = True
    attention: str = "auto"
    particle_chunk: int | None = None
    guidance: float | None = None
    transition: str = "auto"

    def __post_init__(self):
        if self.transition not in TRANSITIONS:
            raise ValueError(f"`transition` must be one of {TRANSITIONS}, got {self.transition!r}.")


def load(
    transformer: str,
    autoencoder: str,
    prompts: str,
    reward: str = "aesthetic",
    *,
    clip: str,
    aesthetic_head: str | None = None,
    dtype: Any = None,
    axes_dim=None,
) -> FluxSetup:
    """Read every file of a run (each loader checks its file and names what is wrong).

    ``transformer``: a FLUX checkpoint (:func:`psijax.models.flux.load_weights`); ``autoencoder``:
    ``ae.safetensors`` or a ``vae/`` folder; ``prompts``: a prompt-embeddings file; ``clip``: a
    CLIP folder (ViT-L/14 for the aesthetic reward; for the CLIP score, the model whose text
    embeddings the prompts file holds); ``aesthetic_head``: LAION's head (``"aesthetic"``);
    ``dtype``: cast the parameters (e.g. ``jnp.bfloat16``); ``axes_dim``: the transformer's RoPE
    widths when its head dim is not FLUX's 128 (small test models).
    """
    if reward not in REWARDS:
        raise ValueError(f"`reward` must be one of {REWARDS}, got {reward!r}.")
    if reward == "aesthetic" and aesthetic_head is None:
        raise ValueError("The aesthetic reward needs `aesthetic_head` (LAION's head file).")
    embeddings = load_prompt_embeddings(prompts)
    if reward == "clip_score" and embeddings.clip_text_embeds is None:
        raise ValueError(
            f"{prompts!r} holds no CLIP text embeddings: write it with "
            "`psijax flux-prompts --clip-score-model ...` for the CLIP-score reward."
        )
    model = flux.load_weights(transformer, dtype=dtype, axes_dim=axes_dim)
    ae = flux.load_autoencoder(autoencoder, dtype=dtype)
    tower = clip_models.load_clip_vision(clip, dtype=dtype)
    head = load_aesthetic_head(aesthetic_head) if reward == "aesthetic" else None
    if head is not None and head.input_size != tower.config.projection_dim:
        raise ValueError(
            f"The aesthetic head reads {head.input_size}-wide embeddings; the CLIP model at "
            f"{clip!r} makes {tower.config.projection_dim}-wide ones (the head needs ViT-L/14)."
        )
    lat = 4 * ae.config.latent_channels
    if model.config.out_channels != lat:
        raise ValueError(
            f"The transformer predicts {model.config.out_channels} channels per token; the "
            f"autoencoder's packed latent has {lat}."
        )
    return FluxSetup(model, ae, embeddings, reward, tower, head)


def _image_reward(setup: FluxSetup, prompt, options: ImageOptions) -> Callable:
    kw = dict(dtype=options.dtype, remat=options.remat)
    if setup.reward == "aesthetic":
        return aesthetic_reward(setup.tower, setup.head, **kw)
    text = setup.embeddings.clip_text_embeds[setup.embeddings.index(prompt)]
    return clip_score_reward(setup.tower, text, **kw)


def problem(
    setup: FluxSetup, prompt: str | int, alpha: float, options: ImageOptions
) -> align.RewardProblem:
    """The :class:`~psijax.align.RewardProblem` of one prompt: FLUX's velocity on packed tokens
    ``(L, 64)``, the reward of their decoded image, strength ``alpha``."""
    ae, f = setup.autoencoder, setup.autoencoder.config.downsample_factor
    cond = setup.embeddings.conditioning(
        prompt, options.height, options.width, guidance=options.guidance, downsample_factor=f
    )
    flux_options = flux.FluxOptions(
        dtype=options.dtype, remat=options.remat, attention=options.attention
    )
    velocity_fn = flux.to_velocity_fn(setup.transformer, cond, flux_options)
    score = _image_reward(setup, prompt, options)
    graphdef, state = nnx.split(ae)
    static = (graphdef, options.height, options.width, jnp.dtype(options.dtype), options.remat)
    # A Partial whose leaves are the autoencoder's parameters and the reward's: passed through
    # jit as arguments (see `run`), never baked into the program as constants.
    reward_fn = jax.tree_util.Partial(static_partial(_decode_and_score, static), state, score)
    shape = (cond.img_ids.shape[0], setup.transformer.config.out_channels)
    return align.RewardProblem(
        velocity_fn,
        reward_fn,
        shape,
        alpha,
        particle_chunk=options.particle_chunk,
        transition=_KERNELS[transition(setup, options)],
    )


_KERNELS = {"renoising": Renoising(), "sde": None}  # None: the samplers' default SDE


def transition(setup: FluxSetup, options: ImageOptions) -> str:
    """The kernel of a run's denoising steps, ``"renoising"`` or ``"sde"``.

    ``options.transition = "auto"``: ``"renoising"`` for a model without a guidance embedding
    (FLUX-schnell, timestep-distilled: its one-step prediction is a sample, and
    :class:`~psijax.flows.distilled.Renoising` keeps its distribution), ``"sde"`` for one with it
    (FLUX-dev: the stochastic sampler of :mod:`psijax.flows.sde`, ``g(t) = t(2 − t)``).
    """
    if options.transition != "auto":
        return options.transition
    return "sde" if setup.transformer.config.guidance_embed else "renoising"


def _decode_and_score(static, state, score, x):
    graphdef, height, width, dtype, remat = static
    image = nnx.merge(graphdef, state).decode_tokens(x, height, width, dtype=dtype, remat=remat)
    return score(image)


def grid(setup: FluxSetup, num_steps: int, options: ImageOptions):
    """FLUX's time grid: dev's resolution-shifted one for a guidance-embedding model, else
    schnell's uniform one (:func:`psijax.models.flux.time_grid`)."""
    f = setup.autoencoder.config.downsample_factor
    tokens = (options.height // (2 * f)) * (options.width // (2 * f))
    return flux.time_grid(num_steps, tokens, shift=setup.transformer.config.guidance_embed)


def run(
    key,
    setup: FluxSetup,
    prompt: str | int,
    *,
    method: str = "psi_sampler",
    alpha: float = 0.1,
    nfe_budget: int | None = 1000,
    num_particles: int | None = None,
    num_steps: int = 25,
    options: ImageOptions = ImageOptions(),
    mesh=None,
) -> dict:
    """Align one prompt with ``method`` and decode the final particles.

    Returns a dict: ``result`` (the :class:`~psijax.align.AlignmentResult`), ``images``
    ``(N, 3, H, W)`` float32 in about ``[−1, 1]``, ``order`` (particles best first: by weight,
    then reward), and ``seconds`` (the run and the decoding; each includes its compilation on
    the first call only: the programs are kept for the following prompts, whose conditioning
    enters them as arguments).
    """
    if method not in align.SAMPLERS:
        raise ValueError(f"`method` must be one of {sorted(align.SAMPLERS)}, got {method!r}.")
    pb = problem(setup, prompt, alpha, options)
    times = tuple(float(t) for t in np.asarray(grid(setup, num_steps, options)))
    budget = (
        (("nfe_budget", nfe_budget),)
        if num_particles is None
        else (("num_particles", num_particles),)
    )
    kernel = transition(setup, options)
    go = _compiled_run(
        method, pb.event_shape, pb.alpha, pb.particle_chunk, kernel, times, mesh, budget
    )
    start = time.perf_counter()
    result = jax.block_until_ready(go(key, pb.velocity_fn, pb.reward_fn))
    run_s = time.perf_counter() - start

    chunk = options.particle_chunk or result.samples.shape[0]
    graphdef, state = nnx.split(setup.autoencoder)
    decode_all = _compiled_decode(graphdef, options.height, options.width, options.dtype, chunk)
    start = time.perf_counter()
    images = np.asarray(jax.block_until_ready(decode_all(state, result.samples)), np.float32)
    decode_s = time.perf_counter() - start
    log_w = np.asarray(result.log_weights, np.float64)
    rewards = np.asarray(result.rewards, np.float64)
    key_w = np.where(np.isnan(log_w), -np.inf, log_w)
    key_r = np.where(np.isnan(rewards), -np.inf, rewards)
    order = np.lexsort((-key_r, -key_w))
    return {
        "result": result,
        "images": images,
        "order": order,
        "seconds": {"run": run_s, "decode": decode_s},
    }


# The compiled programs are cached by everything that shapes them, so that the prompts of one
# session (each a different set of conditioning arrays, passed as arguments) compile once.
@functools.lru_cache(maxsize=8)
def _compiled_run(method, event_shape, alpha, chunk, kernel, times, mesh, budget) -> Callable:
    sampler = align.SAMPLERS[method]
    kwargs = dict(budget, num_steps=None, grid=jnp.asarray(times, jnp.float32), mesh=mesh)

    def go(key, velocity_fn, reward_fn):  # the models' parameters are arguments, not constants
        pb = align.RewardProblem(
            velocity_fn,
            reward_fn,
            event_shape,
            alpha,
            particle_chunk=chunk,
            transition=_KERNELS[kernel],
        )
        return sampler(key, pb, **kwargs)

    return jax.jit(go)


@functools.lru_cache(maxsize=8)
def _compiled_decode(graphdef, height, width, dtype, chunk) -> Callable:
    def decode_all(state, xs):
        model = nnx.merge(graphdef, state)
        decode = lambda x: model.decode_tokens(x, height, width, dtype=dtype)  # noqa: E731
        return jax.lax.map(decode, xs, batch_size=chunk)

    return jax.jit(decode_all)


def save_grid(images, rewards, log_weights, path: str, columns: int = 5, title: str = "") -> str:
    """A PNG of ``images`` ``(N, 3, H, W)`` in the given order, each titled with its reward and
    normalised weight (NaN rewards say so)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = np.asarray(images, np.float32)
    n = images.shape[0]
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    lw = np.asarray(log_weights, np.float64)
    finite = np.isfinite(lw)
    weights = np.zeros_like(lw)
    if finite.any():
        weights[finite] = np.exp(lw[finite] - lw[finite].max())
        weights /= weights.sum()
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        ax = axes.ravel()[i]
        pixels = np.clip((images[i].transpose(1, 2, 0) + 1) / 2, 0, 1)
        ax.imshow(np.nan_to_num(pixels))
        r = rewards[i]
        ax.set_title(
            f"r = {r:.3f}\nw = {weights[i]:.3f}" if np.isfinite(r) else "r = NaN", fontsize=8
        )
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
