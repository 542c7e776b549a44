"""What to do about each ``error.code`` of a failed job: the README's error tables, as data.

The web console shows it next to a failed job's message, in the reader's language (each
text is a message of the catalog); a test keeps this table and the README's in step, so
the two never tell people different things.
"""

from __future__ import annotations

from daemon.i18n import N_

# code -> (what it means, what to do); the text is Markdown, as in the README
ERROR_ADVICE: dict[str, tuple[str, str]] = {
    'bad_media': (
        N_('a file is not usable media: empty, unreadable, truncated, damaged, not audio/video/image at all, or not a regular file (a FIFO, a socket)'),
        N_('check that the named file plays; copy or export it again, completely')),
    'no_audio_stream': (
        N_('the audio input has no sound track (a silent video under an audio name)'),
        N_('drop a file with sound')),
    'no_video_stream': (
        N_('the template has no picture (an audio file used as the template)'),
        N_('use a video (`.mp4` `.mov` `.mkv` `.webm`) or a photo (`.png` `.jpg`)')),
    'limit_exceeded': (
        N_('file size, picture size, duration or frame rate above `[limits]`; the message gives the value and the limit'),
        N_('shorten, downscale or compress the file, or raise the limit')),
    'no_face': (
        N_('no frame of the template shows a usable face'),
        N_('use a template with one clearly visible, roughly frontal face')),
    'input_changed': (
        N_("an input changed after it was claimed (still being copied, or replaced), or the job's work folder was removed by hand"),
        N_('copy to a temporary name and rename when done (see above), then drop again; to stop a job use `lipsyncd cancel`')),
    'cancelled': (
        N_('`lipsyncd cancel NAME` stopped the job'),
        N_('the inputs are in `failed/NAME/`; drop them again to render it')),
    'bad_manifest': (
        N_('`NAME.job.toml` / `NAME.job.json` cannot be read or has invalid entries (all listed at once); the files it names are kept with it in `failed/NAME/`'),
        N_('fix the manifest')),
    'bad_voice': (
        N_('the text-to-speech backend has no such voice; the message names it and, for espeak-ng, lists the voices there are'),
        N_('pick a voice from the list (`voice = "en-us"`), or for HeyGem the speaker id of a voice trained on that service')),
    'bad_text': (
        N_('the text to speak is empty, not UTF-8, or longer than 20,000 characters'),
        N_('fix the text file (UTF-8) and drop it again')),
    'path_outside_inbox': (
        N_("a manifest path is absolute, uses `..`, names a hidden (dot) file or folder or one of the daemon's own folders, or leads out through a symlink"),
        N_('put the files in the inbox (or `paths.templates`) and name them relatively')),
    'missing_partner': (
        N_('audio without a template (or the reverse) after `watch.partner_grace`, a file a manifest names is not there, or a file vanished while the job was claimed'),
        N_('drop the missing file under the same stem, or fix the name in the manifest')),
    'ambiguous_job': (
        N_('the files pair more than one way (two audios or two templates with one stem)'),
        N_('give each stem one audio and one template, or use a manifest')),
    'symlink_input': (
        N_('an input is a symbolic link (never followed, wherever it leads)'),
        N_('drop the file itself')),
    'name_too_long': (
        N_('a file name derived from the job is still too long for the filesystem (names over 200 bytes are shortened first, so this is rare)'),
        N_('use a shorter name')),
    'engine_unavailable': (
        N_('the engine asked for cannot run here: unknown name, or a model or library missing'),
        N_('use `warp`, `wav2lip`, `auto` or `passthrough`; the operator installs what the message names')),
    'bad_checkpoint': (
        N_('the Wav2Lip checkpoint is missing, truncated, unsafe to load, or of another model'),
        N_('the operator fixes `render.wav2lip.checkpoint` (see [docs/wav2lip.md](docs/wav2lip.md))')),
    'device_unavailable': (
        N_('`render.device` names a GPU this host does not have'),
        N_('the operator sets `render.device` to `auto` or `cpu`')),
    'render_failed_remote': (
        N_('a HeyGem server failed the task (its message is quoted, naming the server)'),
        N_("check the template with the server's own tools; the inputs are in `failed/NAME/`")),
    'render_error': (
        N_('the engine produced frames of the wrong size or type (a bug)'),
        N_('report it with the sidecar')),
    'internal_error': (
        N_('an unexpected error inside lipsyncd (a bug); the message has the details'),
        N_('report it with the sidecar and the log')),
    'render_transient': (
        N_('the GPU ran out of memory (in any engine) or was busy'),
        N_('nothing; if it keeps failing, lower what the engine takes at once (`render.wav2lip.batch_size`, '
           '`render.musetalk.batch_size`, `render.latentsync.window`) or `render.chunk_frames`, or free the GPU')),
    'renderer_busy': (
        N_('a remote renderer refused the task because it is busy'),
        N_('nothing: the job waits and is sent again')),
    'renderer_unreachable': (
        N_('a remote renderer did not answer'),
        N_('nothing; if it keeps failing, the operator checks the server')),
    'out_of_memory': (
        N_('the host ran out of memory while rendering'),
        N_('nothing; if it keeps failing, use shorter or smaller inputs or give the host more memory')),
    'io_error': (
        N_('a disk or share failed: full, unmounted, permission denied'),
        N_('the operator checks free space and the mount, then the inputs are dropped again')),
    'transient': (
        N_('a temporary failure without a more specific code'),
        N_('nothing; report it if it keeps failing')),
}


def advice(code: str | None) -> tuple[str, str] | None:
    return ERROR_ADVICE.get(code or "")
