"""The real-speech corpus the default engine is judged on, and the judge's own arithmetic.

The corpus table (bench/speech_corpus.py), the files and tests/data/README must agree; the
held-out part must be a real hold-out (other speakers, several languages). The judge
(bench/voice_judge.py, bench/phonemes.py) is checked on inputs whose answer is known.
"""

from __future__ import annotations

import shutil

import av
import numpy as np
import pytest

from bench.phonemes import is_bilabial, text_with_phonemes
from bench.speech_corpus import ROOT, VOICES, voices, write_flac
from bench.voice_judge import MouthScale, pause_closures, phoneme_closures, speech_pauses
from lipsync.media.audio import load_mono

README = (ROOT / "tests" / "data" / "README.md").read_text()


@pytest.mark.parametrize("voice", VOICES, ids=lambda v: v.name)
def test_every_voice_is_a_short_16khz_mono_file_listed_with_its_source_and_licence(voice):
    with av.open(str(voice.file)) as container:
        stream = container.streams.audio[0]
        assert (stream.rate, stream.channels) == (16000, 1)
        seconds = float(container.duration / av.time_base)
    assert 3.0 <= seconds <= voice.seconds + 0.05
    repo, commit, licence = voice.source
    line = next((row for row in README.splitlines() if f"`speech/{voice.name}.flac`" in row), None)
    assert line is not None, f"tests/data/README.md does not list speech/{voice.name}.flac"
    for fact in (f"| {voice.part} |", repo, voice.path, commit[:10], licence):
        assert fact in line, (fact, line)


def test_the_corpus_holds_out_other_speakers_in_four_languages_or_more():
    tune, held_out = voices("tune"), voices("held-out")
    assert {v.part for v in VOICES} == {"tune", "held-out"}
    assert len({v.language for v in VOICES}) >= 5
    assert len({v.language for v in held_out}) >= 4
    assert not {v.path for v in tune} & {v.path for v in held_out}  # no recording on both sides
    assert {v.language for v in held_out} >= {"en", "zh"}  # the languages tuned on are also reported on


def test_a_pause_between_words_is_found_where_it_is(tmp_path):
    speech = load_mono(ROOT / "tests" / "data" / "speech" / "en-musetalk.flac", 16000)[: 16000 * 3]
    quiet = np.zeros(int(0.4 * 16000), np.float32)
    audio = write_flac(tmp_path / "gap.flac", np.concatenate([speech, quiet, speech]))
    pauses = speech_pauses(audio)
    assert any(2.9 <= start <= 3.1 and 3.3 <= end <= 3.5 for start, end in pauses), pauses
    assert all(end - start >= 0.2 for start, end in pauses)


def test_closures_count_a_pause_or_phoneme_only_when_the_lips_close_inside_it():
    from bench.phonemes import Phoneme

    fps = 25.0
    gap = np.full(100, 0.3)
    gap[10:13] = 0.02  # closed in frames 10-12 (0.40-0.52 s)
    scale = MouthScale.of(gap, rest=0.0)
    assert scale.closed_below < 0.1
    pauses = [(0.38, 0.6), (2.0, 2.4)]  # the first holds the closure, the second does not
    assert pause_closures(gap, pauses, fps, scale) == {"pauses": 2, "closed": 1, "share": 0.5}
    phonemes = [Phoneme("m", 0.40, 0.48), Phoneme("a", 0.48, 0.7), Phoneme("b", 1.5, 1.56),
                Phoneme("b", 1.56, 1.6)]  # espeak-ng splits a stop into two events: one /b/
    got = phoneme_closures(gap, phonemes, fps, scale, slack=1)
    assert (got["bilabials"], got["closed"]) == (2, 1)
    gap[40] = 0.02  # the frame after the /b/'s (37-39): within a frame's slack, not without
    assert phoneme_closures(gap, phonemes, fps, scale, slack=1)["closed"] == 2
    assert phoneme_closures(gap, phonemes, fps, scale, slack=0)["closed"] == 1


def test_the_contact_sheet_shows_a_short_stop_where_the_lips_close_not_where_they_part():
    from bench.phonemes import Phoneme
    from bench.warp_voices import phoneme_frames

    # as espeak-ng times it: a pause, a 34 ms /p/ (its release), /e/; the lips are shut in
    # the pause's last frame (37: 1.48-1.52 s) and part in frame 38, which holds the /p/'s middle
    phonemes = [Phoneme("_:", 1.0, 1.508), Phoneme("p", 1.508, 1.542), Phoneme("e", 1.542, 1.69),
                Phoneme("a", 1.69, 1.85), Phoneme("m", 1.85, 1.95), Phoneme("U", 1.95, 2.02)]
    openness = np.full(60, 0.8)
    openness[25:38] = 0.0  # the pause
    openness[38] = 0.57
    openness[47] = 0.05  # the /m/ (frames 46-48) closes in its middle frame
    picks = dict(phoneme_frames(phonemes, 25.0, openness))
    # a 70 ms /U/ (German "und") is on the sheet: the vowel figures count it
    assert picks == {"/a/ 1.76s": 44, "/u/ 1.96s": 49, "/p/ 1.48s": 37, "/m/ 1.88s": 47}, picks


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_espeak_ng_reports_when_each_phoneme_is_spoken(tmp_path):
    phonemes = text_with_phonemes("Bob bought a map.", "en-us", tmp_path / "bob.wav")
    names = [p.name for p in phonemes]
    assert sum(map(is_bilabial, names)) >= 3, names
    assert all(a.end <= b.start + 1e-6 for a, b in zip(phonemes, phonemes[1:]))  # in order, never overlapping
    duration = len(load_mono(tmp_path / "bob.wav", 16000)) / 16000
    assert 0.5 < phonemes[-1].end <= duration + 0.01


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_a_text_is_spoken_alike_whatever_was_spoken_before_it(tmp_path):
    # espeak-ng's library lengthens its pauses between clauses after other texts (this
    # Spanish came out 45 ms longer after the English): the bench's synthetic voices and
    # their phoneme times must not depend on which voices a run speaks first
    spanish = "Hola, buenos días. ¿Cómo estás? Muy bien, gracias."
    first = text_with_phonemes(spanish, "es", tmp_path / "first.wav")
    text_with_phonemes("Hello there, how are you today? Fine, thanks.", "en-us", tmp_path / "english.wav")
    again = text_with_phonemes(spanish, "es", tmp_path / "again.wav")
    assert again == first
    assert np.array_equal(load_mono(tmp_path / "again.wav", 16000), load_mono(tmp_path / "first.wav", 16000))


def test_a_voice_is_judged_on_the_mean_over_its_starts_against_the_frame_grid(tmp_path):
    from bench.phonemes import Phoneme
    from bench.warp_voices import combined, shifted

    speech = load_mono(ROOT / "tests" / "data" / "speech" / "en-musetalk.flac", 16000)[:16000]
    moved, phonemes = shifted(speech, "one", [Phoneme("a", 0.1, 0.2)], 16, tmp_path)
    samples = load_mono(moved, 16000)
    assert samples.size == speech.size + 256 and not samples[:256].any()  # 16 ms of silence first
    assert np.abs(samples[256:] - speech).max() < 1e-3
    (a,) = phonemes
    assert a.name == "a" and (a.start, a.end) == pytest.approx((0.116, 0.216))

    def run(r_by_lag, closed, u_opening):
        return {"correlation": max(r_by_lag.values()), "lag": 0, "by_lag": r_by_lag, "face_frames": 50,
                "frames": 50, "closed_below_gap": 0.1, "pause_closures": {"pauses": 2, "closed": closed, "share": 0},
                "vowels": {"a": {"frames": 3, "width_vs_rest": 0.9, "opening": 0.2},
                           "u": {"frames": 2, "width_vs_rest": 0.8, "opening": u_opening}}}

    got = combined([run({"-1": 0.5, "0": 0.8, "1": 0.7}, 2, 0.05), run({"-1": 0.5, "0": 0.6, "1": 0.9}, 1, 0.07)],
                   (0, 8))
    # r at the lag best on average (0.8 at lag 1), not the mean of each start's best (0.85)
    assert (got["correlation"], got["lag"], got["correlation_by_phase"]) == (0.8, 1, [0.8, 0.9])
    assert got["pause_closures"] == {"pauses": 4, "closed": 3, "share": 0.75}
    assert got["vowels"]["u"] == {"frames": 4, "width_vs_rest": 0.8, "opening": 0.06, "opening_vs_a": 0.3}
