"""Architecture of the FLUX.1 transformer: :class:`FluxConfig` and its presets.

The fields carry BFL's names (``flux/model.py``'s ``FluxParams``). ``out_channels`` is separate
from ``in_channels`` because the fill/depth/canny variants take 384 or 128 input channels and
return 64. Presets:

- ``schnell`` and ``dev``: the released 12 B models (19 double + 38 single blocks, hidden 3072,
  24 heads of 128; ``dev`` embeds a guidance value).
- ``tiny``: diffusers' own unit-test configuration (4 channels, 1 + 1 blocks, 2 heads of 16).
- ``tiny64``: the benchmark model of ``benchmarks/psi_flux.py`` (64 channels, 2 + 2 blocks,
  4 heads of 16).
"""

import dataclasses

from psijax._checks import check_int

__all__ = ["FluxConfig", "PRESETS", "preset"]


@dataclasses.dataclass(frozen=True)
class FluxConfig:
    """The hyper-parameters of a FLUX transformer (hashable, so usable as a static argument).

    Attributes
    ----------
    in_channels
        Channels of a packed image token (64 = 16 latent channels × 2 × 2).
    out_channels
        Channels of the predicted velocity per token.
    vec_in_dim
        Width of the pooled text vector (CLIP-L: 768).
    context_in_dim
        Width of the text hidden states (T5-XXL: 4096).
    hidden_size
        Model width; ``num_heads · head_dim``.
    mlp_ratio
        MLP width over ``hidden_size``.
    num_heads
        Attention heads.
    depth
        Double-stream blocks.
    depth_single_blocks
        Single-stream blocks.
    axes_dim
        RoPE widths of the three id axes; their sum is the head dim.
    theta
        RoPE base.
    qkv_bias
        Whether the qkv projections have a bias.
    guidance_embed
        Whether a guidance value is embedded (FLUX-dev).
    """

    in_channels: int = 64
    out_channels: int = 64
    vec_in_dim: int = 768
    context_in_dim: int = 4096
    hidden_size: int = 3072
    mlp_ratio: float = 4.0
    num_heads: int = 24
    depth: int = 19
    depth_single_blocks: int = 38
    axes_dim: tuple[int, ...] = (16, 56, 56)
    theta: int = 10_000
    qkv_bias: bool = True
    guidance_embed: bool = False

    def __post_init__(self):
        for name in ("in_channels", "out_channels", "vec_in_dim", "context_in_dim"):
            check_int(getattr(self, name), name)
        check_int(self.hidden_size, "hidden_size")
        check_int(self.num_heads, "num_heads")
        check_int(self.depth, "depth", minimum=0)
        check_int(self.depth_single_blocks, "depth_single_blocks", minimum=0)
        check_int(self.theta, "theta")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `num_heads` "
                f"({self.num_heads})."
            )
        axes = tuple(self.axes_dim)
        if len(axes) != 3 or any(
            isinstance(a, bool) or not isinstance(a, int) or a < 2 or a % 2 for a in axes
        ):
            raise ValueError(
                "`axes_dim` must be three even ints >= 2 (RoPE rotates pairs), "
                f"got {self.axes_dim!r}."
            )
        if sum(axes) != self.head_dim:
            raise ValueError(
                f"`axes_dim` must sum to the head dim hidden_size/num_heads = {self.head_dim}, "
                f"got {self.axes_dim!r} (sum {sum(axes)})."
            )
        object.__setattr__(self, "axes_dim", axes)
        if not (self.mlp_ratio > 0 and float(self.hidden_size * self.mlp_ratio).is_integer()):
            raise ValueError(
                f"`mlp_ratio` must be > 0 with hidden_size·mlp_ratio an integer, "
                f"got {self.mlp_ratio!r}."
            )

    @property
    def head_dim(self) -> int:
        """Width of one attention head, ``hidden_size / num_heads`` (128 for schnell and dev)."""
        return self.hidden_size // self.num_heads

    @property
    def mlp_hidden_dim(self) -> int:
        """Hidden width of the blocks' MLPs, ``hidden_size · mlp_ratio``."""
        return int(self.hidden_size * self.mlp_ratio)

    def to_diffusers(self) -> dict:
        """The keyword arguments of diffusers' ``FluxTransformer2DModel`` for this architecture.

        (diffusers fixes ``mlp_ratio = 4``, ``theta = 10000`` and qkv biases; other values
        have no diffusers equivalent and raise ``ValueError``.)
        """
        if self.mlp_ratio != 4.0 or self.theta != 10_000 or not self.qkv_bias:
            raise ValueError(
                "diffusers' FluxTransformer2DModel needs mlp_ratio=4, theta=10000, qkv_bias=True."
            )
        return dict(
            patch_size=1,
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            num_layers=self.depth,
            num_single_layers=self.depth_single_blocks,
            attention_head_dim=self.head_dim,
            num_attention_heads=self.num_heads,
            joint_attention_dim=self.context_in_dim,
            pooled_projection_dim=self.vec_in_dim,
            guidance_embeds=self.guidance_embed,
            axes_dims_rope=list(self.axes_dim),
        )

    def macs(self, num_img: int, num_txt: int) -> dict:
        """Multiply-adds of one forward pass's matmuls, by part (``2·MACs`` are its FLOPs).

        Parameters
        ----------
        num_img, num_txt
            Image and text tokens, ``L = num_img + num_txt``.

        Returns
        -------
        dict
            ``"image"``: ``img_in`` and the final linear over the image tokens; ``"blocks"``:
            every block's projections and MLPs over all ``L`` tokens (double: qkv ``h→3h``,
            proj ``h→h``, MLP ``h→m→h`` per stream token; single: ``h→3h+m`` and ``h+m→h``);
            ``"attention"``: ``QKᵀ`` and ``PV``, ``2·L²·h`` per block; ``"text"``: ``txt_in``
            over the text tokens; ``"conditioning"``: the time (and guidance) and pooled-text
            embeddings and every modulation linear, which depend on the time and the prompt
            only (computed once per batch on the fast path). Per sample, batch 1.
        """
        h, m, n = self.hidden_size, self.mlp_hidden_dim, num_img + num_txt
        embed = 2 if self.guidance_embed else 1
        width = 256  # the sinusoidal time embedding (psijax.models.flux.layers.TIME_EMBED_DIM)
        return {
            "image": num_img * self.in_channels * h + num_img * h * self.out_channels,
            "blocks": n
            * (
                self.depth * (3 * h * h + h * h + 2 * h * m)
                + self.depth_single_blocks * (h * (3 * h + m) + (h + m) * h)
            ),
            "attention": (self.depth + self.depth_single_blocks) * 2 * n * n * h,
            "text": num_txt * self.context_in_dim * h,
            "conditioning": embed * (width * h + h * h)
            + self.vec_in_dim * h
            + h * h
            + self.depth * 2 * h * 6 * h
            + self.depth_single_blocks * h * 3 * h
            + h * 2 * h,
        }

    def replace(self, **changes) -> "FluxConfig":
        """A copy with the given fields changed (validated like a new config)."""
        return dataclasses.replace(self, **changes)


PRESETS = {
    "schnell": FluxConfig(),
    "dev": FluxConfig(guidance_embed=True),
    "tiny": FluxConfig(
        in_channels=4,
        out_channels=4,
        vec_in_dim=32,
        context_in_dim=32,
        hidden_size=32,
        num_heads=2,
        depth=1,
        depth_single_blocks=1,
        axes_dim=(4, 4, 8),
    ),
    "tiny64": FluxConfig(
        vec_in_dim=32,
        context_in_dim=32,
        hidden_size=64,
        num_heads=4,
        depth=2,
        depth_single_blocks=2,
        axes_dim=(4, 6, 6),
    ),
}


def preset(name: str, **changes) -> FluxConfig:
    """The named :data:`PRESETS` entry, with ``changes`` applied (e.g. ``guidance_embed=True``)."""
    if name not in PRESETS:
        raise ValueError(f"`name` must be one of {sorted(PRESETS)}, got {name!r}.")
    return PRESETS[name].replace(**changes)
