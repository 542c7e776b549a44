"""The ``musetalk`` engine: MuseTalk 1.5 (code MIT, weights usable commercially).

A 256x256 face is painted in one UNet step in the latent space of the Stable Diffusion
VAE, conditioned on whisper-tiny audio features. ``weights`` finds and checks the
published files; ``audio`` makes the per-frame audio prompts; ``model`` holds the
networks and runs crop -> latents -> UNet -> face.
"""

from lipsync.engines.musetalk.engine import MuseTalkEngine

__all__ = ["MuseTalkEngine"]
