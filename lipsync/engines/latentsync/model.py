"""The LatentSync networks and one window's path: aligned faces + audio tokens -> new faces.

Per window of frames (16 as trained), as the reference pipeline computes it:

1. pixels in [-1, 1]; the masked copy (painted region set to 0) and the mask itself;
2. VAE latents of the masked and of the original faces (a draw from the posterior, times
   0.18215), the mask resized to the latent grid (nearest);
3. DDIM (the published scheduler settings) from noise: at each step the UNet sees
   [noisy latents | mask | masked latents | reference latents] (13 channels) twice --
   with silent (zero) audio tokens and with the real ones -- and the two predictions
   are combined by classifier-free guidance;
4. VAE decode.

Randomness is one CPU ``torch.Generator`` per render, seeded by ``seed``, drawn in the
reference's order: the starting noise (one frame's worth, the same for every frame of
the video), then per window the masked and the reference posterior draws. The same seed
therefore gives the same video on every run, on the CPU or a GPU (up to arithmetic), and
with any chunking of the frames. The networks are loaded once; the whisper encoder runs
in float32, UNet and VAE in float16 on CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lipsync.engines.diffusion_files import VAE_SIZES, VAE_WHAT, build_vae, load_into, read_config, read_state, \
    vae_state
from lipsync.engines.latentsync import weights as wf
from lipsync.engines.latentsync.audio import WhisperEncoder
from lipsync.engines.latentsync.unet import UNet3D, UNetConfig
from lipsync.errors import CheckpointError

SCALING = 0.18215
# configs/scheduler_config.json of the reference
SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "clip_sample": False,
    "num_train_timesteps": 1000, "set_alpha_to_one": False, "steps_offset": 1, "trained_betas": None,
}


def scheduler(steps: int):
    from diffusers import DDIMScheduler

    s = DDIMScheduler.from_config(SCHEDULER_CONFIG)
    s.set_timesteps(steps)
    return s


@dataclass
class LatentSync:
    unet: UNet3D
    vae: torch.nn.Module
    encoder: WhisperEncoder
    device: torch.device
    dtype: torch.dtype

    @property
    def resolution(self) -> int:
        return self.unet.config.sample_size * 8

    @classmethod
    def load(cls, folder: str | Path, *, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32) -> LatentSync:
        files = wf.ModelFiles.find(folder)
        raw = wf.unet_config(files)
        try:
            unet = UNet3D(UNetConfig.of(raw))
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"the UNet config does not describe LatentSync's network: {e}",
                                  path=files.unet_config or files.unet) from None
        load_into(unet, wf.with_position_tables(read_state(files.unet, wf.UNET_WHAT), unet), files.unet,
                  what=wf.UNET_WHAT, config=files.unet_config, published=wf.UNET_SIZES,
                  restore=f"delete {wf.UNET_CONFIG_FILE} to use the published configuration")
        try:
            vae = build_vae(read_config(files.vae_config))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"the config does not describe the expected VAE: {e}", path=files.vae_config) \
                from None
        load_into(vae, vae_state(read_state(files.vae_weights, VAE_WHAT)), files.vae_weights, what=VAE_WHAT,
                  config=files.vae_config, published=VAE_SIZES, fetch=wf.FETCH)
        dims, state = wf.read_whisper(files.whisper)
        encoder = WhisperEncoder.of(dims)
        load_into(encoder, state, files.whisper, what=wf.WHISPER_WHAT)
        return cls.of(unet, vae, encoder, device=device, dtype=dtype)

    @classmethod
    def of(cls, unet, vae, encoder, *, device="cpu", dtype=torch.float32) -> LatentSync:
        device = torch.device(device)
        for net in (unet, vae, encoder):
            net.eval().requires_grad_(False).to(device=device)
        if dtype != torch.float32:  # fp16 on CUDA (the whisper encoder stays in float32)
            unet.to(dtype=dtype)
            vae.to(dtype=dtype)
        return cls(unet, vae, encoder, device, dtype)

    # -- one window -------------------------------------------------------------------------
    def initial_noise(self, generator: torch.Generator) -> torch.Tensor:
        """(1, 4, 1, h, w): the starting latents of every frame of a video."""
        side = self.unet.config.sample_size
        return torch.randn((1, 4, 1, side, side), generator=generator, dtype=torch.float32)

    @torch.no_grad()
    def conditions(self, faces_rgb: np.ndarray, keep: np.ndarray, generator: torch.Generator):
        """(mask latents, masked-image latents, reference latents), each (1, c, f, h, w), and the
        pixel values (f, 3, res, res) of ``faces_rgb`` (f, res, res, 3) uint8 given the keep
        mask (res, res) in [0, 1]."""
        pixels = (torch.from_numpy(np.ascontiguousarray(faces_rgb)).permute(0, 3, 1, 2) / 255.0 - 0.5) / 0.5
        mask = torch.from_numpy(keep).to(torch.float32)[None, None].expand(len(pixels), 1, *keep.shape)
        masked = pixels * mask
        side = self.unet.config.sample_size
        mask_latents = F.interpolate(mask, size=(side, side))
        out = [mask_latents]
        for image in (masked, pixels):
            dist = self.vae.encode(image.to(self.device, self.dtype)).latent_dist
            # the draw in float32 on the CPU, whatever the device and precision: the same
            # numbers everywhere (diffusers' own sample() would draw in the VAE's dtype)
            eps = torch.randn(dist.mean.shape, generator=generator, dtype=torch.float32)
            out.append((dist.mean + dist.std * eps.to(dist.mean)) * SCALING)
        return [frames_dim(t.to(self.device, self.dtype)) for t in out], pixels

    @torch.no_grad()
    def denoise(self, noise: torch.Tensor, conditions: list[torch.Tensor], tokens: torch.Tensor, *, steps: int,
                guidance: float, generator: torch.Generator | None = None, trail: list | None = None) -> torch.Tensor:
        """DDIM from ``noise`` (1, 4, f, h, w) to the window's latents."""
        sched = scheduler(steps)
        guided = guidance > 1.0
        audio = tokens.to(self.device, self.dtype)
        if guided:
            audio = torch.cat([torch.zeros_like(audio), audio])
            conditions = [torch.cat([c, c]) for c in conditions]
        latents = (noise * sched.init_noise_sigma).to(self.device, self.dtype)
        for t in sched.timesteps:
            x = torch.cat([latents, latents]) if guided else latents
            x = torch.cat([sched.scale_model_input(x, t), *conditions], dim=1)
            pred = self.unet(x, t.to(self.device), audio)
            if guided:
                silent, voiced = pred.chunk(2)
                pred = silent + guidance * (voiced - silent)
            latents = sched.step(pred, t, latents, eta=0.0, generator=generator).prev_sample
            if trail is not None:
                trail.append(latents.float().cpu())
        return latents

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(f, 3, res, res) float32 in about [-1, 1] from (1, 4, f, h, w)."""
        b, c, f, h, w = latents.shape
        flat = latents.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        return self.vae.decode(flat / SCALING).sample.float().cpu()


def frames_dim(t: torch.Tensor) -> torch.Tensor:
    """(f, c, h, w) -> (1, c, f, h, w)."""
    return t.permute(1, 0, 2, 3)[None]


def to_images(pixels: torch.Tensor) -> np.ndarray:
    """(f, 3, h, w) in [-1, 1] -> (f, h, w, 3) uint8, truncated as the reference converts."""
    return ((pixels.permute(0, 2, 3, 1) / 2 + 0.5).clamp(0, 1) * 255).to(torch.uint8).numpy()
