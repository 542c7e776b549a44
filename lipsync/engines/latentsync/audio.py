"""LatentSync's audio path: whisper-tiny encoder states, and the 50 audio tokens of each video frame.

What the checkpoint was trained on (and the compat goldens hold):

* log-mel features as OpenAI's whisper computes them: centred STFT (n_fft 400, hop 160,
  periodic Hann, reflect padding), the last frame dropped, power, 80 Slaney mel bands
  (librosa's default filters), log10 floored at 1e-10, then raised to (the maximum over
  the **whole** audio) - 8, and (x + 4) / 4;
* the features cut into 30-s segments of 3,000 frames, each zero-padded to 3,000 and
  encoded alone; a segment of n mel frames keeps its first n // 2 encoder frames;
* per encoder frame, five states stacked: the input to the first layer (after the
  position table) and the raw outputs of the four layers -- not the final LayerNorm;
* video frame i takes the ten encoder frames from c - 4 to c + 5, c = int(i * 50 / fps),
  indices clamped to the ends, flattened to (50, 384) with row = 5 * step + state.

Memory stays bounded however long the audio is: the maximum is found in one streaming
pass, and a segment is encoded when a window first needs it (the last two are kept).
The encoder is written here, on the OpenAI checkpoint's own names (``tiny.pt``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 16000
N_FFT, HOP = 400, 160
SEGMENT = 3000  # mel frames per encoder call (30 s)
STATES = 5
WINDOW = (-4, 6)  # encoder frames around the centre (start inclusive, end exclusive)


@lru_cache(maxsize=1)
def mel_filters() -> torch.Tensor:
    import librosa

    return torch.from_numpy(librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=80).astype(np.float32))


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key = nn.Linear(dim, dim), nn.Linear(dim, dim, bias=False)
        self.value, self.out = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)))
        return self.out(out.transpose(1, 2).reshape(b, n, d))


class _Layer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn, self.attn_ln = _Attention(dim, heads), nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 4), nn.GELU(), nn.Linear(dim * 4, dim))
        self.mlp_ln = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


class WhisperEncoder(nn.Module):
    """The audio encoder of an OpenAI whisper checkpoint (``encoder.*`` entries)."""

    def __init__(self, n_mels: int, n_ctx: int, dim: int, heads: int, layers: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, dim, 3, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, 3, stride=2, padding=1)
        self.register_buffer("positional_embedding", torch.zeros(n_ctx, dim))
        self.blocks = nn.ModuleList([_Layer(dim, heads) for _ in range(layers)])
        self.ln_post = nn.LayerNorm(dim)  # in the checkpoint; LatentSync does not use it

    @classmethod
    def of(cls, dims: dict) -> WhisperEncoder:
        return cls(int(dims["n_mels"]), int(dims["n_audio_ctx"]), int(dims["n_audio_state"]),
                   int(dims["n_audio_head"]), int(dims["n_audio_layer"]))

    def states(self, mel: torch.Tensor) -> torch.Tensor:
        """(1, 80, 3000) -> (1500, 5, dim): the layer-1 input and each layer's output."""
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).permute(0, 2, 1) + self.positional_embedding
        out = [x]
        for block in self.blocks:
            x = block(x)
            out.append(x)
        return torch.stack(out, dim=2)[0]


def log_mel(wav: torch.Tensor, first: int, last: int) -> torch.Tensor:
    """Unnormalised log10 mel frames ``first`` to ``last`` (exclusive) of the whole signal,
    each computed exactly as the centred STFT of the whole signal would (80, last - first)."""
    pad = N_FFT // 2
    lo, hi = first * HOP - pad, (last - 1) * HOP + pad  # the samples those frames cover
    piece = wav[max(lo, 0):min(hi, len(wav))]
    if lo < 0 or hi > len(wav):  # the reflect padding of the whole signal's ends
        piece = F.pad(piece[None, None], (max(-lo, 0), max(hi - len(wav), 0)), mode="reflect")[0, 0]
    spec = torch.stft(piece, N_FFT, HOP, window=torch.hann_window(N_FFT), center=False, return_complex=True)
    power = spec.abs() ** 2
    return torch.clamp(mel_filters() @ power, min=1e-10).log10()


class AudioTokens:
    """The per-frame audio tokens of one audio file, computed as windows ask for them."""

    def __init__(self, encoder: WhisperEncoder, wav: np.ndarray) -> None:
        self.encoder = encoder
        self.wav = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
        self.mel_frames = len(self.wav) // HOP
        if self.mel_frames < 1:
            raise ValueError("the audio is shorter than 10 ms")
        # pass 1: the maximum over the whole audio (streamed, nothing kept)
        peak = -np.inf
        with torch.no_grad():
            for first in range(0, self.mel_frames, SEGMENT):
                peak = max(peak, float(log_mel(self.wav, first, min(first + SEGMENT, self.mel_frames)).max()))
        self.floor = peak - 8.0
        segments = -(-self.mel_frames // SEGMENT)
        self.length = (segments - 1) * (SEGMENT // 2) + (self.mel_frames - (segments - 1) * SEGMENT) // 2
        if self.length < 1:
            raise ValueError("the audio is too short for one encoder frame (20 ms)")
        self._cache: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def _segment(self, k: int) -> torch.Tensor:
        states = self._cache.get(k)
        if states is None:
            first = k * SEGMENT
            last = min(first + SEGMENT, self.mel_frames)
            mel = (torch.maximum(log_mel(self.wav, first, last), torch.tensor(self.floor)) + 4.0) / 4.0
            mel = F.pad(mel, (0, SEGMENT - mel.shape[1]))  # zeros, as the reference pads
            enc = self.encoder
            param = next(enc.parameters())
            states = enc.states(mel[None].to(param.device, param.dtype)).float().cpu()[: (last - first) // 2]
            if len(self._cache) >= 2:
                self._cache.pop(min(self._cache))
            self._cache[k] = states
        return states

    def features(self, rows: list[int]) -> torch.Tensor:
        """Encoder frames ``rows`` (already clamped): (len(rows), 5, dim)."""
        half = SEGMENT // 2
        return torch.stack([self._segment(r // half)[r % half] for r in rows])

    def tokens(self, frames: list[int], fps: float) -> torch.Tensor:
        """(len(frames), 50, dim): the audio tokens of those video frames."""
        out = []
        for i in frames:
            centre = int(i * 50 / fps)
            rows = [min(max(j, 0), self.length - 1) for j in range(centre + WINDOW[0], centre + WINDOW[1])]
            feats = self.features(rows)
            out.append(feats.reshape(-1, feats.shape[-1]))
        return torch.stack(out)
