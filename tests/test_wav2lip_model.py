"""The generator is the published Wav2Lip network: same state_dict layout, same function."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lipsync.engines.wav2lip.model import Wav2LipGenerator
from tests import wav2lip_fill


@pytest.fixture(scope="module")
def filled_generator() -> Wav2LipGenerator:
    model = Wav2LipGenerator()
    model.load_state_dict(wav2lip_fill.deterministic_state_dict(), strict=True)
    return model.eval()


def test_state_dict_matches_published_layout_entry_for_entry():
    state = Wav2LipGenerator().state_dict()
    ours = [(name, tuple(t.shape), str(t.dtype).removeprefix("torch.")) for name, t in state.items()]
    manifest = wav2lip_fill.manifest_entries()
    assert len(ours) == len(manifest) == 352
    # order included: it is the order the checkpoint was written in
    for mine, theirs in zip(ours, manifest):
        assert mine == theirs


def test_fill_spec_reproduces_golden_inputs():
    golden = np.load(wav2lip_fill.GENERATOR_GOLDEN)
    audio, face = wav2lip_fill.deterministic_inputs(batch=2)
    np.testing.assert_array_equal(audio, golden["audio"])
    np.testing.assert_array_equal(face, golden["face"])


def test_generator_reproduces_reference_output(filled_generator):
    golden = np.load(wav2lip_fill.GENERATOR_GOLDEN)
    with torch.no_grad():
        out = filled_generator(torch.from_numpy(golden["audio"]), torch.from_numpy(golden["face"]))
    assert out.shape == (2, 3, 96, 96) and out.dtype == torch.float32
    assert float(np.abs(out.numpy() - golden["output"]).max()) < 1e-4


def test_each_sample_depends_only_on_its_own_inputs(filled_generator):
    # batching must not mix faces (eval-mode BatchNorm): one at a time == all at once
    golden = np.load(wav2lip_fill.GENERATOR_GOLDEN)
    with torch.no_grad():
        single = filled_generator(torch.from_numpy(golden["audio"][1:]), torch.from_numpy(golden["face"][1:]))
    assert float(np.abs(single.numpy()[0] - golden["output"][1]).max()) < 1e-4


def test_audio_changes_the_output(filled_generator):
    golden = np.load(wav2lip_fill.GENERATOR_GOLDEN)
    face = torch.from_numpy(golden["face"][:1])
    with torch.no_grad():
        a = filled_generator(torch.from_numpy(golden["audio"][:1]), face)
        b = filled_generator(torch.from_numpy(golden["audio"][1:]), face)
    assert float((a - b).abs().max()) > 1e-3
