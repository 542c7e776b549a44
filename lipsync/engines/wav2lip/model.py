"""The Wav2Lip generator network, laid out so that published checkpoints load unchanged.

The generator maps one mel window (1×80×16) and one face (6×96×96: the crop with its lower
half blanked, stacked on an unmasked reference crop) to a 3×96×96 face whose mouth matches
the audio. A face encoder reduces 96×96 to 1×1 in seven stages, an audio encoder reduces
the mel window to a 512-vector, and a decoder climbs back to 96×96; each decoder stage is
concatenated with the encoder output of the same resolution (a U-Net), so the face keeps
its identity while the mouth follows the audio.

Attribute names and the order in which layers are registered are part of the checkpoint
format (``face_encoder_blocks.3.1.conv_block.0.weight`` …): change them and published
checkpoints no longer load. The full list is pinned by tests against a manifest.
"""

from __future__ import annotations

import torch
from torch import nn

FACE_SIZE = 96  # the generator's input and output are 96×96 faces
MEL_BANDS = 80
MEL_WINDOW = 16  # mel columns per video frame (0.2 s of audio)


class ConvUnit(nn.Module):
    """Conv2d + BatchNorm + ReLU, optionally adding its input before the ReLU (a residual block).

    A residual unit keeps the channel count and resolution, so ``x`` can be added as is.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int | tuple[int, int], padding: int,
                 residual: bool = False) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class UpConvUnit(nn.Module):
    """ConvTranspose2d + BatchNorm + ReLU: one upsampling step of the decoder."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int, output_padding: int = 0) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel, stride, padding, output_padding), nn.BatchNorm2d(cout))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


def _residuals(channels: int, count: int) -> list[nn.Module]:
    return [ConvUnit(channels, channels, 3, 1, 1, residual=True) for _ in range(count)]


def _face_encoder() -> nn.ModuleList:
    # spatial size after each stage: 96, 48, 24, 12, 6, 3, 1
    return nn.ModuleList([
        nn.Sequential(ConvUnit(6, 16, 7, 1, 3)),
        nn.Sequential(ConvUnit(16, 32, 3, 2, 1), *_residuals(32, 2)),
        nn.Sequential(ConvUnit(32, 64, 3, 2, 1), *_residuals(64, 3)),
        nn.Sequential(ConvUnit(64, 128, 3, 2, 1), *_residuals(128, 2)),
        nn.Sequential(ConvUnit(128, 256, 3, 2, 1), *_residuals(256, 2)),
        nn.Sequential(ConvUnit(256, 512, 3, 2, 1), *_residuals(512, 1)),
        nn.Sequential(ConvUnit(512, 512, 3, 1, 0), ConvUnit(512, 512, 1, 1, 0)),
    ])


def _audio_encoder() -> nn.Sequential:
    # (80, 16) → (80, 16) → (27, 16) → (9, 6) → (3, 3) → (1, 1): strides shrink time and
    # frequency unevenly because the window is 80 bands tall but only 16 columns wide
    return nn.Sequential(
        ConvUnit(1, 32, 3, 1, 1), *_residuals(32, 2),
        ConvUnit(32, 64, 3, (3, 1), 1), *_residuals(64, 2),
        ConvUnit(64, 128, 3, 3, 1), *_residuals(128, 2),
        ConvUnit(128, 256, 3, (3, 2), 1), *_residuals(256, 1),
        ConvUnit(256, 512, 3, 1, 0),
        ConvUnit(512, 512, 1, 1, 0),
    )


def _face_decoder() -> nn.ModuleList:
    # input channels = previous stage's output + the matching encoder skip (concatenated)
    return nn.ModuleList([
        nn.Sequential(ConvUnit(512, 512, 1, 1, 0)),  # 1×1, audio embedding in
        nn.Sequential(UpConvUnit(1024, 512, 3, 1, 0), *_residuals(512, 1)),  # → 3×3
        nn.Sequential(UpConvUnit(1024, 512, 3, 2, 1, 1), *_residuals(512, 2)),  # → 6×6
        nn.Sequential(UpConvUnit(768, 384, 3, 2, 1, 1), *_residuals(384, 2)),  # → 12×12
        nn.Sequential(UpConvUnit(512, 256, 3, 2, 1, 1), *_residuals(256, 2)),  # → 24×24
        nn.Sequential(UpConvUnit(320, 128, 3, 2, 1, 1), *_residuals(128, 2)),  # → 48×48
        nn.Sequential(UpConvUnit(160, 64, 3, 2, 1, 1), *_residuals(64, 2)),  # → 96×96
    ])


class Wav2LipGenerator(nn.Module):
    """``forward(mel (B,1,80,16), face (B,6,96,96)) -> (B,3,96,96)`` in [0, 1], BGR order."""

    def __init__(self) -> None:
        super().__init__()
        # registration order matters: it is the order of the checkpoint's state_dict
        self.face_encoder_blocks = _face_encoder()
        self.audio_encoder = _audio_encoder()
        self.face_decoder_blocks = _face_decoder()
        self.output_block = nn.Sequential(ConvUnit(80, 32, 3, 1, 1), nn.Conv2d(32, 3, 1, 1, 0), nn.Sigmoid())

    def forward(self, mel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        skips = []
        x = face
        for stage in self.face_encoder_blocks:
            x = stage(x)
            skips.append(x)
        x = self.audio_encoder(mel)
        for stage in self.face_decoder_blocks:
            x = torch.cat((stage(x), skips.pop()), dim=1)
        return self.output_block(x)
