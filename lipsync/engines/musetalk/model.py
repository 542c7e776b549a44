"""The MuseTalk 1.5 networks and the face path: crop → latents → one UNet step → face.

The models are held by the libraries made for them -- diffusers' ``UNet2DConditionModel``
and ``AutoencoderKL``, transformers' whisper encoder -- built from the configs in the
models folder and filled from the weight files (:mod:`.weights`); nothing is fetched.

Latents are the VAE posterior **mean** (times the scaling factor 0.18215), not a random
draw as in the reference: the output is then the same on every run and on every host,
which a service that re-renders a job after a crash needs, and the compat data show the
mean path (``latents_mode``) is the reference's own function without the noise. A seeded
draw is available (``noise=``) to reproduce the reference's sampled outputs exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lipsync.engines.diffusion_files import build_vae
from lipsync.engines.musetalk import weights as wf
from lipsync.engines.musetalk.audio import AudioPrompts
from lipsync.errors import CheckpointError

SCALING = 0.18215  # AutoencoderKL's default (the sd-vae-ft-mse config carries none)
SIZE = 256


def build_unet(config: dict):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_config(config)


def build_whisper_encoder(config: dict):
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    return WhisperEncoder(WhisperConfig(**config))


def feature_extractor(config: dict):
    from transformers import WhisperFeatureExtractor

    keys = ("feature_size", "sampling_rate", "hop_length", "chunk_length", "n_fft", "padding_value")
    return WhisperFeatureExtractor(**{k: config[k] for k in keys if k in config})


@dataclass
class MuseTalk:
    """The three networks, loaded once, on one device and dtype."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    audio: AudioPrompts
    device: torch.device
    dtype: torch.dtype

    @classmethod
    def load(cls, folder: str | Path, *, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32) -> MuseTalk:
        files = wf.ModelFiles.find(folder)
        unet = _built(build_unet, files.unet_config)
        wf.load_into(unet, wf.read_state(files.unet), files.unet, what="MuseTalk 1.5 UNet", config=files.unet_config)
        vae = _built(build_vae, files.vae_config)
        wf.load_into(vae, wf.vae_state(wf.read_state(files.vae_weights)), files.vae_weights, what="sd-vae-ft-mse VAE",
                     config=files.vae_config)
        encoder = _built(build_whisper_encoder, files.whisper_config)
        wf.load_into(encoder, wf.whisper_encoder_state(wf.read_state(files.whisper_weights)), files.whisper_weights,
                     what="whisper-tiny", config=files.whisper_config)
        extractor = feature_extractor(wf.read_config(files.whisper_preprocessor))
        return cls.of(unet, vae, encoder, extractor, device=device, dtype=dtype)

    @classmethod
    def of(cls, unet, vae, encoder, extractor, *, device="cpu", dtype=torch.float32) -> MuseTalk:
        device = torch.device(device)
        for net in (unet, vae, encoder):
            net.eval().requires_grad_(False).to(device=device)
            if dtype != torch.float32:  # fp16 on CUDA; the weights load as float32
                net.to(dtype=dtype)
        return cls(unet, vae, AudioPrompts(encoder, extractor, device=device, dtype=dtype), device, dtype)

    # -- the face path ------------------------------------------------------------------------
    def _images(self, crops_bgr: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked, reference) VAE inputs in [-1, 1] from (B, 256, 256, 3) uint8 BGR crops."""
        rgb = crops_bgr[..., ::-1].astype(np.float64) / 255.0  # the reference divides in float64
        x = torch.from_numpy(np.ascontiguousarray(rgb.astype(np.float32).transpose(0, 3, 1, 2)))
        masked = x.clone()
        masked[:, :, SIZE // 2:, :] = 0
        return ((masked - 0.5) / 0.5).to(self.device, self.dtype), ((x - 0.5) / 0.5).to(self.device, self.dtype)

    @torch.no_grad()
    def latents(self, crops_bgr: np.ndarray, noise: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 8, 32, 32): masked-image latent then reference latent, from the posterior
        mean; ``noise`` (2B, 4, 32, 32: masked then reference per frame) draws instead."""
        masked, ref = self._images(crops_bgr)
        out = []
        for i, image in enumerate((masked, ref)):
            moments = self.vae.quant_conv(self.vae.encoder(image))
            mean, logvar = moments.chunk(2, dim=1)
            z = mean
            if noise is not None:
                std = torch.exp(0.5 * torch.clamp(logvar, -30.0, 20.0))
                z = mean + std * noise[i::2].to(mean)
            out.append(z * SCALING)
        return torch.cat(out, dim=1)

    @torch.no_grad()
    def generate(self, latents: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        """One UNet step at t = 0: the face latents (B, 4, 32, 32)."""
        t = torch.zeros(1, device=self.device, dtype=self.dtype)
        return self.unet(latents.to(self.device, self.dtype), t,
                         encoder_hidden_states=prompts.to(self.device, self.dtype)).sample

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """(B, 256, 256, 3) uint8 BGR faces."""
        image = self.vae.decode(latents.to(self.device, self.dtype) * torch.tensor(1 / SCALING, dtype=torch.float32)
                                .to(self.device, self.dtype)).sample
        image = (image.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1) * 255
        return torch.round(image).to(torch.uint8).cpu().numpy()[..., ::-1].copy()


def _built(builder, config_path: Path):
    config = wf.read_config(config_path)
    try:
        return builder(config)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise CheckpointError(f"the config does not describe the expected model: {e}", path=config_path) from None
