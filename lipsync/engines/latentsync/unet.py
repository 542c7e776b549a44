"""LatentSync's 3-D UNet: Stable Diffusion's UNet applied to every frame of a window, with
audio cross-attention in its transformers and a temporal transformer after each of them.

Written for lipsyncd from the published architecture (the ``stage2_512`` model config);
the module and parameter names are the published checkpoint's, so its state_dict loads
as it is. Tensors are (batch, channels, frames, height, width). What is per frame and
what is not matters for the arithmetic, and follows the checkpoint's training code:

* convolutions, the spatial transformers and the temporal transformers' input norm work
  on each frame alone;
* the resnets' GroupNorms (and the output norm) normalise over all frames of the window
  together -- they are applied to the 5-D tensor as it is;
* the temporal transformers attend, for each pixel, across the window's frames, with a
  sinusoidal position table (a buffer the checkpoint carries, 24 rows) added first.

The timestep embedding and the feed-forward (GEGLU) layers are diffusers' own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# The model section of the published configs/unet/stage2_512.yaml (LatentSync 1.5 and 1.6:
# the same network; 1.6 was trained at 512x512). Keys the network does not read are left out.
PUBLISHED_CONFIG: dict[str, Any] = {
    "in_channels": 13, "out_channels": 4, "sample_size": 64,
    "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2,
    "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"],
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"],
    "attention_head_dim": 8, "cross_attention_dim": 384, "norm_num_groups": 32, "norm_eps": 1e-5,
    "flip_sin_to_cos": True, "freq_shift": 0, "add_audio_layer": True,
    "use_motion_module": True, "motion_module_resolutions": [1, 2, 4, 8], "motion_module_mid_block": False,
    "motion_module_kwargs": {"num_attention_heads": 8, "num_transformer_block": 1,
                             "attention_block_types": ["Temporal_Self", "Temporal_Self"],
                             "temporal_position_encoding": True, "temporal_position_encoding_max_len": 24},
}


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int
    out_channels: int
    sample_size: int
    block_out_channels: tuple[int, ...]
    layers_per_block: int
    cross_blocks: tuple[bool, ...]  # per down block (mirrored for the up blocks): has spatial transformers
    heads: int
    cross_attention_dim: int
    groups: int
    eps: float
    flip_sin_to_cos: bool
    freq_shift: int
    motion_resolutions: tuple[int, ...]
    motion_mid: bool
    motion_heads: int
    motion_layers: int
    motion_attentions: int
    motion_max_len: int

    @classmethod
    def of(cls, raw: dict[str, Any]) -> UNetConfig:
        """From the yaml's model section (or a JSON copy); raises KeyError/TypeError/ValueError
        when it does not describe this network."""
        c = {**PUBLISHED_CONFIG, **raw}
        down, up = list(c["down_block_types"]), list(c["up_block_types"])
        known = {"CrossAttnDownBlock3D": True, "DownBlock3D": False}
        if any(d not in known for d in down) or [{"CrossAttnUpBlock3D": True, "UpBlock3D": False}.get(u) for u in up] \
                != [known[d] for d in reversed(down)]:
            raise ValueError(f"unsupported block types {down} / {up}")
        if not c.get("add_audio_layer", True) or not c.get("use_motion_module", True):
            raise ValueError("the network needs add_audio_layer and use_motion_module (as LatentSync 1.5/1.6)")
        if c.get("mid_block_type", "UNetMidBlock3DCrossAttn") != "UNetMidBlock3DCrossAttn":
            raise ValueError(f"unsupported mid block {c['mid_block_type']}")
        mm = {**PUBLISHED_CONFIG["motion_module_kwargs"], **c.get("motion_module_kwargs", {})}
        if any(t != "Temporal_Self" for t in mm["attention_block_types"]):
            raise ValueError(f"unsupported temporal attention {mm['attention_block_types']}")
        head = c["attention_head_dim"]
        if not isinstance(head, int):
            raise ValueError("attention_head_dim must be one number")
        return cls(int(c["in_channels"]), int(c["out_channels"]), int(c["sample_size"]),
                   tuple(int(v) for v in c["block_out_channels"]), int(c["layers_per_block"]),
                   tuple(known[d] for d in down), head, int(c["cross_attention_dim"]), int(c["norm_num_groups"]),
                   float(c["norm_eps"]), bool(c["flip_sin_to_cos"]), int(c["freq_shift"]),
                   tuple(int(v) for v in c["motion_module_resolutions"]), bool(c["motion_module_mid_block"]),
                   int(mm["num_attention_heads"]), int(mm["num_transformer_block"]),
                   len(mm["attention_block_types"]), int(mm["temporal_position_encoding_max_len"]))


def frames_first(x: torch.Tensor) -> torch.Tensor:
    """(b, c, f, h, w) -> (b*f, c, h, w)."""
    b, c, f, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)


def frames_back(x: torch.Tensor, f: int) -> torch.Tensor:
    """(b*f, c, h, w) -> (b, c, f, h, w)."""
    bf, c, h, w = x.shape
    return x.reshape(bf // f, f, c, h, w).permute(0, 2, 1, 3, 4)


class FrameConv(nn.Conv2d):
    """A 2-D convolution applied to every frame."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return frames_back(super().forward(frames_first(x)), x.shape[2])


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int, groups: int, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
        self.conv1 = FrameConv(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
        self.conv2 = FrameConv(cout, cout, 3, padding=1)
        self.conv_shortcut = FrameConv(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # GroupNorm over the whole window, as trained
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, context_dim: int | None = None) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim or dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim or dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        out = F.scaled_dot_product_attention(self._split(self.to_q(x)), self._split(self.to_k(context)),
                                             self._split(self.to_v(context)))
        b, _, n, _ = out.shape
        return self.to_out[0](out.transpose(1, 2).reshape(b, n, -1))


def _feed_forward(dim: int) -> nn.Module:
    from diffusers.models.attention import FeedForward

    return FeedForward(dim, activation_fn="geglu")


class SpatialBlock(nn.Module):
    def __init__(self, dim: int, heads: int, context_dim: int) -> None:
        super().__init__()
        self.norm1, self.attn1 = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.attn2 = nn.LayerNorm(dim), Attention(dim, heads, context_dim)
        self.ff, self.norm3 = _feed_forward(dim), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), audio) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """Self-attention within each frame, then attention to that frame's audio window."""

    def __init__(self, channels: int, heads: int, context_dim: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList([SpatialBlock(channels, heads, context_dim)])
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x5: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        f = x5.shape[2]
        x = frames_first(x5)
        bf, c, h, w = x.shape
        y = self.proj_in(self.norm(x)).permute(0, 2, 3, 1).reshape(bf, h * w, c)
        for block in self.transformer_blocks:
            y = block(y, audio)
        y = self.proj_out(y.reshape(bf, h, w, c).permute(0, 3, 1, 2))
        return frames_back(y + x, f)


class TemporalAttention(Attention):
    def __init__(self, dim: int, heads: int, max_len: int) -> None:
        super().__init__(dim, heads)
        self.pos_encoder = nn.Module()
        self.pos_encoder.register_buffer("pe", position_table(max_len, dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        # x: (b*pixels, frames, c)
        return super().forward(x + self.pos_encoder.pe[:, :x.shape[1]])


def position_table(length: int, dim: int) -> torch.Tensor:
    """(1, length, dim): sin on even, cos on odd channels (float32, as the checkpoint's)."""
    position = torch.arange(length).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    table = torch.zeros(1, length, dim)
    table[0, :, 0::2] = torch.sin(position * div)
    table[0, :, 1::2] = torch.cos(position * div)
    return table


class TemporalBlock(nn.Module):
    def __init__(self, dim: int, heads: int, attentions: int, max_len: int) -> None:
        super().__init__()
        self.attention_blocks = nn.ModuleList([TemporalAttention(dim, heads, max_len) for _ in range(attentions)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(attentions)])
        self.ff, self.ff_norm = _feed_forward(dim), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms):
            x = attention(norm(x)) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer(nn.Module):
    def __init__(self, channels: int, heads: int, layers: int, attentions: int, max_len: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([TemporalBlock(channels, heads, attentions, max_len)
                                                 for _ in range(layers)])
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x5: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = x5.shape
        normed = self.norm(frames_first(x5))  # per frame
        # (b, f, c, h, w) -> (b, h, w, f, c): one sequence of frames per pixel
        y = normed.reshape(b, f, c, h, w).permute(0, 3, 4, 1, 2).reshape(b * h * w, f, c)
        y = self.proj_in(y)
        for block in self.transformer_blocks:
            y = block(y)
        y = self.proj_out(y).reshape(b, h, w, f, c).permute(0, 4, 3, 1, 2)
        return y + x5


class MotionModule(nn.Module):
    def __init__(self, channels: int, cfg: UNetConfig) -> None:
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels, cfg.motion_heads, cfg.motion_layers,
                                                        cfg.motion_attentions, cfg.motion_max_len, cfg.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.temporal_transformer(x)


class Resample(nn.Module):
    """``conv``: a stride-2 convolution (down) or nearest x2 then a convolution (up)."""

    def __init__(self, channels: int, up: bool) -> None:
        super().__init__()
        self.up = up
        self.conv = FrameConv(channels, channels, 3, stride=1 if up else 2, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        if self.up:
            f = x.shape[2]
            x = F.interpolate(x, size=(f, *size) if size else None, scale_factor=None if size else (1.0, 2.0, 2.0),
                              mode="nearest")
        return self.conv(x)


class Stage(nn.Module):
    """One down or up block: (resnet, spatial transformer?, motion module?) per layer, then a
    resampler. An up block takes the down path's skips, last first."""

    def __init__(self, cfg: UNetConfig, ins: list[int], cout: int, temb: int, *, cross: bool, motion: bool,
                 resample: str | None) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(cin, cout, temb, cfg.groups, cfg.eps) for cin in ins])
        self.attentions = nn.ModuleList([SpatialTransformer(cout, cfg.heads, cfg.cross_attention_dim, cfg.groups)
                                         for _ in ins]) if cross else None
        self.motion_modules = nn.ModuleList([MotionModule(cout, cfg) for _ in ins]) if motion else None
        if resample == "down":
            self.downsamplers = nn.ModuleList([Resample(cout, up=False)])
        elif resample == "up":
            self.upsamplers = nn.ModuleList([Resample(cout, up=True)])

    def layer(self, i: int, x: torch.Tensor, temb: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        x = self.resnets[i](x, temb)
        if self.attentions is not None:
            x = self.attentions[i](x, audio)
        if self.motion_modules is not None:
            x = self.motion_modules[i](x)
        return x


class UNet3D(nn.Module):
    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        self.config = cfg
        ch = cfg.block_out_channels
        temb = ch[0] * 4
        self.conv_in = FrameConv(cfg.in_channels, ch[0], 3, padding=1)
        self.time_proj = Timesteps(ch[0], cfg.flip_sin_to_cos, cfg.freq_shift)
        self.time_embedding = TimestepEmbedding(ch[0], temb)
        n = len(ch)
        self.down_blocks = nn.ModuleList()
        cin = ch[0]
        for i, cout in enumerate(ch):
            self.down_blocks.append(Stage(cfg, [cin] + [cout] * (cfg.layers_per_block - 1), cout, temb,
                                          cross=cfg.cross_blocks[i], motion=2 ** i in cfg.motion_resolutions,
                                          resample="down" if i < n - 1 else None))
            cin = cout
        # the middle: resnet, transformer (and a motion module only if configured), resnet
        self.mid_block = Stage(cfg, [ch[-1], ch[-1]], ch[-1], temb, cross=False, motion=False, resample=None)
        self.mid_block.attentions = nn.ModuleList([SpatialTransformer(ch[-1], cfg.heads, cfg.cross_attention_dim,
                                                                      cfg.groups)])
        if cfg.motion_mid:
            self.mid_block.motion_modules = nn.ModuleList([MotionModule(ch[-1], cfg)])
        rev = list(reversed(ch))
        self.up_blocks = nn.ModuleList()
        prev = rev[0]
        for i, cout in enumerate(rev):
            skip_in = rev[min(i + 1, n - 1)]
            ins = [(prev if j == 0 else cout) + (skip_in if j == cfg.layers_per_block else cout)
                   for j in range(cfg.layers_per_block + 1)]
            self.up_blocks.append(Stage(cfg, ins, cout, temb, cross=cfg.cross_blocks[n - 1 - i],
                                        motion=2 ** (n - 1 - i) in cfg.motion_resolutions,
                                        resample="up" if i < n - 1 else None))
            prev = cout
        self.conv_norm_out = nn.GroupNorm(cfg.groups, ch[0], eps=cfg.eps)
        self.conv_out = FrameConv(ch[0], cfg.out_channels, 3, padding=1)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int, audio: torch.Tensor) -> torch.Tensor:
        """``sample`` (b, in_channels, f, h, w); ``audio`` (b*f, tokens, dim), batch-major.
        Returns the predicted noise (b, out_channels, f, h, w)."""
        t = torch.as_tensor(timestep, device=sample.device)
        t = t.reshape(1).expand(sample.shape[0]) if t.dim() == 0 else t.reshape(-1).expand(sample.shape[0])
        temb = self.time_embedding(self.time_proj(t).to(sample.dtype))
        x = self.conv_in(sample)
        skips = [x]
        for block in self.down_blocks:
            for i in range(len(block.resnets)):
                x = block.layer(i, x, temb, audio)
                skips.append(x)
            if hasattr(block, "downsamplers"):
                x = block.downsamplers[0](x)
                skips.append(x)
        mid = self.mid_block
        x = mid.resnets[0](x, temb)
        x = mid.attentions[0](x, audio)
        if mid.motion_modules is not None:
            x = mid.motion_modules[0](x)
        x = mid.resnets[1](x, temb)
        for block in self.up_blocks:
            for i in range(len(block.resnets)):
                x = block.layer(i, torch.cat([x, skips.pop()], dim=1), temb, audio)
            if hasattr(block, "upsamplers"):
                x = block.upsamplers[0](x, tuple(skips[-1].shape[-2:]) if skips else None)
        return self.conv_out(F.silu(self.conv_norm_out(x)))
