"""Audio → mouth motion, on the committed espeak-ng speech and on sounds built to a recipe."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from lipsync.media.audio import load_mono
from lipsync.mouth import (RATE, MouthFeatures, MouthSettings, formants, frame_hops, mouth_track,
                           mouth_track_from_file, mouth_track_from_samples)
from tests import media_factory as mf

FPS = 25.0


def frames_for(samples: np.ndarray) -> int:
    return int(np.ceil(samples.size / RATE * FPS))


def frame_energy_db(samples: np.ndarray, n: int) -> np.ndarray:
    per = RATE / FPS
    out = np.empty(n)
    for i in range(n):
        chunk = samples[int(i * per):int((i + 1) * per)]
        out[i] = 10 * np.log10(np.mean(chunk.astype(np.float64) ** 2) + 1e-10) if chunk.size else -100
    return np.maximum(out, out.max() - 50)


def vowel(seconds: float, formants: tuple[float, ...], pitch: float = 140.0, level: float = 0.3) -> np.ndarray:
    """A crude voiced vowel: a glottal-like harmonic series shaped by resonances."""
    t = np.arange(int(seconds * RATE)) / RATE
    out = np.zeros_like(t)
    for k in range(1, int(4000 / pitch)):
        f = k * pitch
        gain = sum(1.0 / (1.0 + ((f - fm) / 90.0) ** 2) for fm in formants) / k**0.5
        out += gain * np.sin(2 * np.pi * f * t)
    return (level * out / np.abs(out).max()).astype(np.float32)


def test_silence_keeps_the_mouth_shut():
    silence = load_mono(mf.SILENCE)
    track = mouth_track_from_samples(silence, FPS, frames_for(silence))
    assert len(track) == 75
    assert np.all(track.openness == 0) and np.all(track.spread == 0) and np.all(track.activity == 0)


def test_speech_opens_and_closes_with_its_loudness():
    speech = load_mono(mf.SPEECH)
    n = frames_for(speech)
    track = mouth_track_from_samples(speech, FPS, n)
    o = track.openness
    assert o.min() >= 0 and o.max() <= 1
    assert o.max() > 0.8 and o.std() > 0.2  # clearly moves, not a constant half-open mouth
    assert 0.2 < np.mean(o > 0.3) < 0.9
    energy = frame_energy_db(speech, n)
    best = max(np.corrcoef(o[max(0, k):n + min(0, k)], energy[max(0, -k):n - max(0, k)])[0, 1] for k in (-1, 0, 1))
    # loudness drives it, the vowel's openness (first formant) modulates it: follows the
    # energy closely but not slavishly
    assert best > 0.72
    # the pauses in the sentence (commas) shut the mouth
    quiet = energy < energy.max() - 40
    pause = quiet & np.roll(quiet, 2) & np.roll(quiet, -2)
    assert pause.sum() >= 5 and np.all(o[pause] < 0.08)


def test_a_stretch_recorded_quieter_moves_the_mouth_as_the_rest_does():
    # half a minute of speech, then the same speech 20 dB quieter (a second session, another
    # microphone): one loud level for the whole recording opened the quiet half a quarter as
    # far; the level now follows the speaker
    speech = np.tile(load_mono(mf.SPEECH), 5)[:30 * RATE]
    samples = np.concatenate([speech, speech * np.float32(0.1)])
    track = mouth_track_from_samples(samples, FPS, frames_for(samples))
    loud, quiet = track.openness[:750], track.openness[750:]
    half_window = round(MouthSettings().level_window / 2 * FPS)
    settled = slice(half_window, None)
    assert quiet[settled].mean() > 0.9 * loud[settled].mean(), (quiet[settled].mean(), loud[settled].mean())
    assert np.percentile(quiet[settled], 90) > 0.9 * np.percentile(loud[settled], 90)
    # from half a second after the change: a window centred there is half loud, and taken
    # alone it held the quiet speech down for half its length (0.20 against 0.49 open)
    transition = quiet[round(0.5 * FPS):half_window]
    assert transition.mean() > 0.9 * loud[settled].mean(), (transition.mean(), loud[settled].mean())
    assert np.all(track.activity[100:-100] == 1)  # speaking throughout: the quiet half is not taken for silence
    # and recorded speech made 20 dB quieter throughout moves the mouth the same (a fixed -60 dB
    # gate left it 0.87 as open; a synthesiser's exact zeros are not scaled, and are left out here)
    recorded = load_mono(mf.DATA / "speech" / "en-musetalk.flac")
    alone = mouth_track_from_samples(recorded, FPS, frames_for(recorded))
    quieter = mouth_track_from_samples(recorded * np.float32(0.1), FPS, frames_for(recorded))
    assert np.abs(quieter.openness - alone.openness).max() < 1e-3


def test_a_long_silence_in_a_long_recording_keeps_the_mouth_shut_however_noisy():
    # 40 s of room noise between two stretches of speech: the loud level measured there is
    # the noise's, and following it down would open the mouth on the noise
    rng = np.random.default_rng(7)
    speech = np.tile(load_mono(mf.SPEECH), 3)[:20 * RATE]
    level = np.sqrt(np.mean(speech.astype(np.float64) ** 2))
    for noise_db in (-60.0, -35.0):  # under the speech's mean level: a quiet room and a noisy one
        hiss = (rng.normal(size=40 * RATE) * level * 10 ** (noise_db / 20)).astype(np.float32)
        samples = np.concatenate([speech, hiss, speech]) + np.resize(hiss, 80 * RATE)
        track = mouth_track_from_samples(samples, FPS, frames_for(samples))
        middle = slice(round(25 * FPS), round(55 * FPS))  # over 5 s from either stretch of speech
        assert track.openness[middle].max() < 0.05, (noise_db, track.openness[middle].max())
        assert track.activity[round(30 * FPS):round(50 * FPS)].max() == 0, noise_db
        assert track.openness[:round(20 * FPS)].max() > 0.8  # and the speech either side still moves it
        assert track.openness[round(60 * FPS):].max() > 0.8


def test_mouth_opens_slightly_before_the_sound():
    speech = load_mono(mf.SPEECH_SHORT)
    lead_in = np.zeros(int(0.6 * RATE), np.float32)
    samples = np.concatenate([lead_in, speech])
    n = frames_for(samples)
    energy = frame_energy_db(samples, n)
    first_sound = int(np.argmax(energy > energy.max() - 30))
    early = mouth_track_from_samples(samples, FPS, n).openness
    late = mouth_track_from_samples(samples, FPS, n, MouthSettings(lead=0.0)).openness
    assert first_sound >= 14
    onset_early, onset_late = int(np.argmax(early > 0.05)), int(np.argmax(late > 0.05))
    assert first_sound - 2 <= onset_early <= first_sound  # ahead of the sound, but not long before
    assert onset_early < onset_late or early[onset_early] > late[onset_early]


def test_dips_between_syllables_close_the_lips_briefly():
    # "ba-ba-ba": 220 ms vowels separated by 60 ms dips 25 dB down (a /b/ closure is not silent)
    ah = vowel(0.22, (750.0, 1200.0))
    dip = vowel(0.06, (300.0,), level=0.3 * 10 ** (-25 / 20))
    samples = np.concatenate([np.zeros(RATE // 4, np.float32)] + [np.concatenate([ah, dip]) for _ in range(6)]
                             + [np.zeros(RATE // 4, np.float32)])
    n = frames_for(samples)
    o = mouth_track_from_samples(samples, FPS, n).openness
    closed, open_ = [], []
    for k in range(5):
        vowel_mid = (0.25 + 0.28 * k + 0.11) * FPS
        dip_mid = (0.25 + 0.28 * k + 0.25) * FPS
        open_.append(o[int(vowel_mid) - 1:int(vowel_mid) + 2].max())
        closed.append(o[int(dip_mid) - 2:int(dip_mid) + 2].min())  # the 60 ms dip, give or take the lead
    assert min(open_) > 0.6, open_
    assert max(closed) < 0.3, closed


def test_a_closure_closes_the_frame_that_shows_it_not_the_one_before():
    # /a/ - a 60 ms /b/ from 0.38 to 0.44 s - /a/: frame 10 shows 0.40-0.44 s, two thirds
    # of the closure; frame 9 (0.36-0.40 s) mostly the vowel before it. The lead that moves
    # the mouth ahead of the sound must not move the closure onto that vowel.
    ah = vowel(0.38, (750.0, 1200.0))
    dip = vowel(0.06, (300.0,), level=0.3 * 10 ** (-30 / 20))
    samples = np.concatenate([ah, dip, vowel(0.4, (750.0, 1200.0)), np.zeros(RATE // 5, np.float32)])
    o = mouth_track_from_samples(samples, FPS, frames_for(samples)).openness
    assert int(np.argmin(o[6:14])) + 6 == 10, o[6:14]
    assert o[10] < 0.3 and o[9] > 0.6, o[6:14]


def test_lips_close_in_the_exact_silence_a_speech_synthesiser_leaves_between_syllables():
    # "a-a-a" with 80 ms of zeros after each /a/: the dip has a flat bottom, and a search for
    # hops lower than their neighbours found none there -- the lips stayed half open (0.48)
    ah = vowel(0.22, (750.0, 1200.0))
    gap = np.zeros(int(0.08 * RATE), np.float32)
    quiet = np.zeros(RATE // 4, np.float32)
    samples = np.concatenate([quiet] + [np.concatenate([ah, gap]) for _ in range(6)] + [quiet])
    o = mouth_track_from_samples(samples, FPS, frames_for(samples)).openness
    vowels = [int((0.25 + 0.3 * k + 0.11) * FPS) for k in range(5)]
    gaps = [int((0.25 + 0.3 * k + 0.26) * FPS) for k in range(5)]
    assert min(o[v] for v in vowels) > 0.6
    assert max(o[g - 2:g + 2].min() for g in gaps) < 0.2  # the gap, give or take the lead


def test_every_frame_of_a_steady_rhythm_moves_the_mouth_alike():
    # /a/ for one 25 fps frame, a 25 dB quieter /a/ for the next, over and over: every loud
    # frame shows the same 40 ms of sound, so once the rhythm is steady every loud frame
    # must open the mouth alike (and every quiet one). Frame boundaries lie exactly on hop
    # centres at 25 fps; float error in i / fps used to widen some frames' averages to 5
    # or 6 hops and not their neighbours', so the mouth jittered on a steady rhythm.
    loud = vowel(0.04, (750.0, 1200.0))
    samples = np.concatenate([np.concatenate([loud, loud * 10 ** (-25 / 20)]) for _ in range(60)])
    samples = np.concatenate([samples, np.zeros(RATE // 2, np.float32)])
    track = mouth_track_from_samples(samples, FPS, frames_for(samples))
    steady = slice(20, 100)  # after the attack, before the end
    loud_frames, quiet_frames = track.openness[steady][::2], track.openness[steady][1::2]
    assert loud_frames.min() > quiet_frames.max() + 0.2, (loud_frames, quiet_frames)
    assert np.ptp(loud_frames) < 0.01 and np.ptp(quiet_frames) < 0.01, (loud_frames, quiet_frames)


def test_frames_tile_the_hops_one_rule_for_every_frame_rate():
    for fps, sizes in ((25.0, {4}), (30.0, {3, 4}), (24.0, {4, 5}), (30000 / 1001, {3, 4}), (50.0, {2})):
        starts = np.arange(200_000) / fps + 0.02  # the lead shifts every window alike
        lo, hi = frame_hops(starts, 1.0 / fps, 10**9)
        assert set(np.unique(hi - lo)) == sizes, fps
        assert np.array_equal(hi[:-1], lo[1:]), fps  # no hop in two frames, none in no frame
    # a frame shorter than a hop still shows one: the hop nearest its middle
    lo, hi = frame_hops(np.arange(8) / 240.0, 1.0 / 240.0, 10**9)
    assert np.array_equal(hi - lo, np.ones(8)) and lo.tolist() == [0, 1, 1, 1, 2, 2, 3, 3]
    lo, hi = frame_hops(np.array([-0.1, 5.0]), 0.04, 100)  # clipped to the hops there are
    assert lo.tolist() == [0, 100] and hi.tolist() == [0, 100]


def test_vowels_have_shapes_rounded_spread_and_open():
    # formant-synthesised /a/ /i/ /u/, twice over: the vowel triangle in the viseme values
    pause = np.zeros(int(0.12 * RATE), np.float32)
    samples = np.concatenate([pause] + [np.concatenate([mf.formant_vowel(v, 0.6), pause]) for v in "aiuaiu"])
    track = mouth_track_from_samples(samples, FPS, frames_for(samples))
    per = {}
    for k, v in enumerate("aiuaiu"):
        middle = slice(int((0.12 + 0.72 * k + 0.15) * FPS), int((0.12 + 0.72 * k + 0.5) * FPS))
        per.setdefault(v, []).append([track.openness[middle].mean(), track.spread[middle].mean(),
                                      track.protrusion[middle].mean()])
    (a_open, a_spread, a_pout), (i_open, i_spread, i_pout), (u_open, u_spread, u_pout) = (
        np.mean(per[v], axis=0) for v in "aiu")
    assert u_spread < a_spread - 0.3 < i_spread - 0.6, per  # rounded, neutral, spread
    assert a_open > i_open + 0.2 and a_open > u_open + 0.2, per  # /a/ is the open one
    # as loud as /a/, the close vowels part the lips far less (0.64 and 0.63 of /a/ before
    # they closed harder than /a/ opens); /i/'s lips are drawn flat on top (lipsync.engines.warp_field)
    assert u_open < 0.6 * a_open and i_open < 0.6 * a_open, per
    assert u_pout > 0.3 and a_pout < 0.1 and i_pout < 0.1, per  # only /u/ pushes the lips forward
    assert np.all(track.activity[int(0.3 * FPS):int(4.0 * FPS)] > 0.9)  # short pauses stay "speaking"


def test_a_short_vowel_between_closures_keeps_its_shape():
    # "bu bu bu bu, ba ba ba ba, bi bi bi bi": 80 ms vowels after 60 ms closures, as in
    # running speech, after long /a/ /i/ /u/ that set the speaker's own reference. A closure
    # has no vowel to show; counted as a neutral one, it took a quarter to a third of each
    # short vowel's rounding or spreading away (0.71 and 0.74 of the long vowels' before)
    pause = np.zeros(int(0.3 * RATE), np.float32)
    closure = vowel(0.06, (300.0,), level=0.3 * 10 ** (-35 / 20))
    parts = [np.concatenate([mf.formant_vowel(v, 0.6), pause]) for v in "aiu"]
    t, middles = 2.7, {}
    for v in "uai":
        for k in range(4):
            parts += [closure, mf.formant_vowel(v, 0.08)]
            if k >= 2:  # the third and fourth syllables: the first ones follow a pause
                middles.setdefault(v, []).append(t + 0.1)
            t += 0.14
        parts.append(pause)
        t += 0.3
    samples = np.concatenate(parts)
    track = mouth_track_from_samples(samples, FPS, frames_for(samples))
    for k, v in enumerate("aiu"):
        long_spread = track.spread[int((0.9 * k + 0.2) * FPS):int((0.9 * k + 0.5) * FPS)].mean()
        short_spread = np.mean([track.spread[int(m * FPS)] for m in middles[v]])
        if v == "a":
            assert abs(short_spread) < 0.1, (long_spread, short_spread)
        else:
            assert short_spread / long_spread > 0.85, (v, long_spread, short_spread)
    short_open = {v: np.mean([track.openness[int(m * FPS)] for m in middles[v]]) for v in "aiu"}
    assert short_open["u"] < 0.6 * short_open["a"] and short_open["i"] < 0.6 * short_open["a"], short_open


def test_formants_of_synthetic_vowels_are_found():
    for vowel, (want, _) in mf.VOWELS.items():
        features = MouthFeatures()
        features.feed(mf.formant_vowel(vowel, 0.5))
        f1, f2 = formants(features.finish().autocorr[10:40])
        assert abs(np.nanmedian(f1) / want[0] - 1) < 0.25 and abs(np.nanmedian(f2) / want[1] - 1) < 0.15, vowel


def test_features_do_not_depend_on_how_the_audio_is_cut_into_blocks():
    speech = load_mono(mf.SPEECH_SHORT)
    whole = MouthFeatures()
    whole.feed(speech)
    pieces = MouthFeatures()
    rng = np.random.default_rng(3)
    pos = 0
    while pos < speech.size:
        step = int(rng.integers(1, 3000))
        pieces.feed(speech[pos:pos + step])
        pos += step
    a, b = whole.finish(), pieces.finish()
    for name in ("energy", "low", "mid", "high"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(a.autocorr, b.autocorr, rtol=1e-3, atol=1e-6)
    # 10 ms per feature: the track covers the whole clip
    assert abs(len(a) - speech.size / 160) <= 3


def test_compressed_audio_in_a_video_container_gives_the_same_motion(tmp_path):
    speech = load_mono(mf.SPEECH)
    m4a = tmp_path / "speech.m4a"
    with av.open(str(m4a), "w") as out:
        stream = out.add_stream("aac", rate=44100, layout="stereo")
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=44100)
        src = av.AudioFrame.from_ndarray(speech[None, :], format="flt", layout="mono")
        src.sample_rate, src.pts, src.time_base = RATE, 0, Fraction(1, RATE)
        for frame in resampler.resample(src) + resampler.resample(None):
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    n = frames_for(speech)
    reference = mouth_track_from_samples(speech, FPS, n).openness
    decoded = mouth_track_from_file(m4a, FPS, n).openness
    # AAC adds ~20-50 ms of priming delay; allow one frame of offset
    best = max(np.corrcoef(decoded[max(0, k):n + min(0, k)], reference[max(0, -k):n - max(0, k)])[0, 1]
               for k in (-1, 0, 1))
    assert best > 0.9


def test_track_covers_the_requested_frames_even_past_the_audio():
    speech = load_mono(mf.SPEECH_SHORT)
    features = MouthFeatures()
    features.feed(speech)
    n = frames_for(speech) + 10  # the pipeline rounds up; never index past the end
    track = mouth_track(features.finish(), FPS, n)
    assert len(track) == n and np.all(track.openness[-5:] == 0)
    assert mouth_track(MouthFeatures().finish(), FPS, 3).openness.tolist() == [0, 0, 0]
