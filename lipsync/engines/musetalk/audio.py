"""MuseTalk 1.5's audio prompts: whisper-tiny encoder states, one window per video frame.

Decode (the project's own audio loader, 16 kHz mono float32) is apart from features
(:func:`log_mel`: whisper's log-mel recipe, via transformers' feature extractor) and from
the model (:class:`AudioPrompts` runs the encoder once per 30-s segment). The window
arithmetic repeats the reference's float64 expressions in the same order, so frame counts
and window starts match it frame for frame (see the compat notes: 1.16 s gives 28 frames
at 25 fps, not 29).
"""

from __future__ import annotations

import math

import numpy as np
import torch

SAMPLE_RATE = 16000
SEGMENT = 480_000  # 30 s: one whisper input
WHISPER_FPS = 50  # encoder frames per second (20 ms each)
HIDDEN_STATES = 5  # input to layer 1, layers 1-3, final LayerNorm of layer 4
WINDOW = 10  # whisper frames per video frame: its own 40 ms and 80 ms each side (at 25 fps)
LEAD, TRAIL = 2, 6  # zero frames put before and after the features, times ceil(50 / fps)


def video_frames(samples: int, fps: float) -> int:
    """How many video frames ``samples`` of audio make (fps truncated to an integer first)."""
    return int(math.floor(samples / SAMPLE_RATE * int(fps)))


def kept_whisper_frames(samples: int) -> int:
    return int(math.floor(samples / SAMPLE_RATE * WHISPER_FPS))


def positional_encoding(rows: int = WINDOW * HIDDEN_STATES, dim: int = 384) -> torch.Tensor:
    """The sinusoidal table added to every prompt, built in float32 as the reference does."""
    position = torch.arange(rows, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(rows, dim, dtype=torch.float32)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)
    return pe


class AudioPrompts:
    """whisper-tiny's encoder and feature extractor, loaded once; prompts for any audio."""

    def __init__(self, encoder: torch.nn.Module, feature_extractor, *, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):
        self.encoder = encoder.eval().requires_grad_(False)
        self.features = feature_extractor
        self.device, self.dtype = torch.device(device), dtype
        self.pe = positional_encoding().to(self.device, dtype)

    def log_mel(self, segment: np.ndarray) -> torch.Tensor:
        """(80, 3000) log-mel features of one segment (zero-padded to 30 s)."""
        out = self.features(segment, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        return out["input_features"][0]

    @torch.no_grad()
    def hidden_states(self, waveform: np.ndarray) -> torch.Tensor:
        """(kept frames, 5, 384): the stacked encoder states of the whole audio."""
        chunks = []
        for start in range(0, max(len(waveform), 1), SEGMENT):
            mel = self.log_mel(waveform[start:start + SEGMENT]).unsqueeze(0).to(self.device, self.dtype)
            states = self.encoder(mel, output_hidden_states=True).hidden_states
            chunks.append(torch.stack(states, dim=2)[0])  # (1500, 5, 384)
        feats = torch.cat(chunks, dim=0)
        return feats[:kept_whisper_frames(len(waveform))]

    def windows(self, states: torch.Tensor, frames: int, fps: float) -> torch.Tensor:
        """(frames, 50, 384) prompts before the positional encoding."""
        m = WHISPER_FPS / int(fps)
        left, right = LEAD * math.ceil(m), TRAIL * math.ceil(m)
        padded = torch.cat([states.new_zeros((left, *states.shape[1:])), states,
                            states.new_zeros((right, *states.shape[1:]))])
        out = []
        for f in range(frames):
            start = int(f * m)  # the reference's float64 product, truncated
            window = padded[start:start + WINDOW]
            if len(window) < WINDOW:
                window = torch.cat([window, window.new_zeros((WINDOW - len(window), *window.shape[1:]))])
            out.append(window.reshape(WINDOW * HIDDEN_STATES, -1))
        return torch.stack(out) if out else states.new_zeros((0, WINDOW * HIDDEN_STATES, states.shape[-1]))

    def prompts(self, waveform: np.ndarray, fps: float) -> torch.Tensor:
        """(video frames, 50, 384): the UNet's cross-attention input for every frame."""
        states = self.hidden_states(waveform)
        return self.windows(states, video_frames(len(waveform), fps), fps) + self.pe
