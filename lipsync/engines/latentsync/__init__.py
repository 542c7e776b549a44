"""The ``latentsync`` engine: LatentSync 1.6 (ByteDance; code Apache-2.0, weights
CreativeML OpenRAIL++-M).

A 512x512 aligned face is repainted around the mouth by a 3-D UNet (Stable Diffusion's,
with audio cross-attention and temporal layers) in 20 DDIM steps with classifier-free
guidance, in the latent space of the Stable Diffusion VAE, conditioned on whisper-tiny
encoder states. ``weights`` finds and checks the published files; ``audio`` makes the
per-frame audio tokens; ``unet`` is the network; ``align`` places the face and puts it
back; ``model`` runs a window of frames; ``engine`` ties them to the render pipeline.
"""

from lipsync.engines.latentsync.engine import LatentSyncEngine

__all__ = ["LatentSyncEngine"]
