"""Mel features and frame windows match the reference the network was trained with."""

from __future__ import annotations

import numpy as np
import pytest

from lipsync.engines.wav2lip import mel
from tests import wav2lip_fill


@pytest.fixture(scope="module")
def golden():
    return np.load(wav2lip_fill.MEL_GOLDEN)


def test_mel_spectrogram_matches_reference(golden):
    features = mel.mel_spectrogram(golden["wav"])
    assert features.shape == golden["mel"].shape == (80, 105)
    assert features.dtype == np.float32
    assert float(np.abs(features - golden["mel"]).max()) < 1e-4


def test_edge_columns_use_reflect_padding(golden):
    # zero ("constant") padding, librosa's default since 0.10, changes the first and last columns
    import librosa
    from scipy.signal import lfilter

    emphasized = lfilter([1, -mel.PREEMPHASIS], [1], golden["wav"]).astype(np.float32)
    zero_padded = np.abs(librosa.stft(emphasized, n_fft=800, hop_length=200, win_length=800, pad_mode="constant"))
    ours = mel.mel_spectrogram(golden["wav"])
    db = 20 * np.log10(np.maximum(1e-5, mel._mel_basis() @ zero_padded)) - 20
    constant_version = np.clip(8 * (db + 100) / 100 - 4, -4, 4)
    assert np.abs(constant_version[:, 0] - golden["mel"][:, 0]).max() > 1e-2  # the trap is real
    assert np.abs(ours[:, 0] - golden["mel"][:, 0]).max() < 1e-4
    assert np.abs(ours[:, -1] - golden["mel"][:, -1]).max() < 1e-4


@pytest.mark.parametrize("fps, key", [(25.0, "starts_fps25"), (29.97, "starts_fps2997"), (30000 / 1001, "starts_fps2997")])
def test_window_start_per_frame(golden, fps, key):
    expected = golden[key]
    starts = mel.window_starts(np.arange(len(expected)), fps, golden["mel"].shape[1])
    np.testing.assert_array_equal(starts, expected)
    # the reference stops once a window would pass the end; later frames hold the last window
    late = mel.window_starts(np.arange(len(expected), len(expected) + 5), fps, 105)
    assert (late == 105 - 16).all()


def test_windows_for_a_chunk_are_slices_of_the_whole_spectrogram(golden):
    features = golden["mel"]
    windows = mel.MelWindows(golden["wav"], fps=25.0)
    frames = np.arange(10, 34)  # runs past the end of the audio: clamped windows
    got = windows.windows(frames)
    assert got.shape == (24, 1, 80, 16)
    for frame, window in zip(frames, got):
        start = int(mel.window_starts(np.array([frame]), 25.0, 105)[0])
        assert np.abs(window[0] - features[:, start:start + 16]).max() < 1e-4


def test_long_audio_is_computed_in_blocks_without_seams(monkeypatch, golden):
    whole = mel.mel_spectrogram(golden["wav"])
    monkeypatch.setattr(mel, "_BLOCK_COLUMNS", 7)  # forces 15 blocks with boundaries everywhere
    np.testing.assert_allclose(mel.mel_spectrogram(golden["wav"]), whole, atol=1e-5)


def test_audio_shorter_than_one_window_gives_full_windows():
    wav = np.sin(np.arange(1600) / 5).astype(np.float32)  # 0.1 s: 9 columns
    got = mel.MelWindows(wav, fps=25.0).windows(np.arange(3))
    assert got.shape == (3, 1, 80, 16)
    assert (got[:, :, :, 9:] == -4).all()  # silence after the sound
    assert got[:, :, :, :9].max() > -4


def test_rejects_stereo_input():
    with pytest.raises(ValueError, match="mono"):
        mel.mel_spectrogram(np.zeros((2, 16000), np.float32))
