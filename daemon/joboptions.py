"""A job's options, each defined once: its type, limits, default, help, example and check.

Five doors take a job's options, and all of them are derived from :data:`OPTIONS`:

* a manifest (``NAME.job.toml`` / ``.json``): :func:`judge` checks the values as written;
* the HTTP API's form and JSON body: :func:`from_fields` turns the text fields into the
  manifest's shape, then :func:`judge` checks them by the same rules;
* the web console's New job form: :func:`form_fields`;
* ``lipsyncd submit``'s flags: :func:`add_flags` (the server judges what they carry);
* the OpenAPI request schema: :func:`schema_properties`.

So one input is judged the same way -- the same refusal, the same message -- whichever
door it enters by. Sources (which audio, which templates) are not options: each door
names them its own way (a manifest's ``audio``/``templates``, the API's files, URLs and
uploads); the API's are declared here too (:data:`SOURCE_FIELDS`), for the same reason.

This module needs the standard library only (and the light name lists of ``lipsync``):
``lipsyncd submit`` on a client-only install imports it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lipsync.engines import NAMES as ENGINE_NAMES
from lipsync.finish.spec import ASPECTS, POSITIONS, SUBTITLE_MODES, check as check_finish
from lipsync.tts import MAX_TEXT_CHARS

from daemon.config.values import parse_duration
from daemon.i18n import N_

# what a value is; says how text from a form or flag is read, and its OpenAPI type
TEXT, INTEGER, NUMBER, DURATION, CHOICE, URL, CLIP, FILE, TABLE = (
    "text", "integer", "number", "duration", "choice", "url", "clip", "file", "table")

MIN_LINK_LIFETIME = 60.0
MAX_LINK_LIFETIME = 7 * 86400.0  # SigV4 presigned URLs cannot live longer
PRIORITY_RANGE = (-100, 100)
MAX_OUTPUT_NAME = 200
CLIP_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm")
SUBTITLE_SUFFIXES = (".srt", ".vtt")

Problems = list[str]  # each starts with the option's key ("priority: ...", "watermark.scale: ...")


@dataclass(frozen=True)
class Part:
    """A key of a table option (watermark); forms and flags give it flat: ``watermark_scale``."""

    key: str
    kind: str
    label: str  # the console's label
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None

    def field_name(self, option: str) -> str:
        return option if self.key == "image" else f"{option}_{self.key}"


@dataclass(frozen=True)
class Option:
    """One per-job option. ``key`` is the manifest key, the API field and the form field;
    ``lipsyncd submit`` spells it ``--key-with-dashes``."""

    key: str
    kind: str
    label: str  # the console's label
    help: str  # one line: what it does, for --help, OpenAPI and the console's hint
    default: str  # what applies when it is not given, in words
    example: Any  # as a manifest writes it
    check: Callable[[Any], tuple[Any, Problems]]  # a value as written -> (the value kept, problems)
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    parts: tuple[Part, ...] = ()  # TABLE: its keys
    url_field: str | None = None  # FILE: the text field that names it by URL instead (the API's)
    console: str = "more"  # where the New job form shows it: "main", "more" or "" (not at all)

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    def text_fields(self) -> tuple[str, ...]:
        """The fields of the API's form and JSON body that carry this option, as text."""
        if self.kind == TABLE:
            return tuple(p.field_name(self.key) for p in self.parts)
        if self.kind == FILE:
            return (self.url_field,) if self.url_field else ()
        return (self.key,)


# --------------------------------------------------------------------------- the checks
# Each takes a value as a manifest writes it and returns (the value kept, problems);
# a problem names the option first and never echoes a value that may carry a secret.


def _checked(key: str, fn: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, Problems]]:
    def check(value: Any) -> tuple[Any, Problems]:
        try:
            return fn(value), []
        except ValueError as e:
            return None, [f"{key}: {e}"]
    return check


def _output_name(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    name = value[:-4] if value.lower().endswith(".mp4") else value
    if not name.strip() or name.startswith(".") or any(c in name for c in "/\\\x00") or len(name) > MAX_OUTPUT_NAME:
        raise ValueError(f"{value!r} is not usable as a file name (non-empty, no / or \\, not starting with '.', "
                         f"at most {MAX_OUTPUT_NAME} characters)")
    return name


def _link_lifetime(value: Any) -> float:
    seconds = parse_duration(value)  # its ValueError says what a duration looks like
    if not MIN_LINK_LIFETIME <= seconds <= MAX_LINK_LIFETIME:
        raise ValueError(f"{value!r} must be between 60 seconds and 7 days")
    return seconds


def _engine(value: Any) -> str:
    if value not in ENGINE_NAMES:
        raise ValueError(f"{value!r} is not one of {', '.join(ENGINE_NAMES)}")
    return value


def _callback_url(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")) \
            or any(c.isspace() for c in value) or len(value) < 10:
        raise ValueError("must be an http:// or https:// URL")  # it may carry a token: never echoed
    return value


def _priority(value: Any) -> int:
    low, high = PRIORITY_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{value!r} must be a whole number from {low} to {high} (higher runs first; default 0)")
    return value


def _finish(key: str) -> Callable[[Any], tuple[Any, Problems]]:
    """resolution, aspect, fps, subtitles, watermark: lipsync.finish.spec's own rules."""
    def check(value: Any) -> tuple[Any, Problems]:
        problems = [message for _, message in check_finish({key: value})]
        if problems:
            return None, problems
        if key == "fps":
            return float(value), []
        if key == "watermark":
            return {"image": value} if isinstance(value, str) else dict(value), []
        return value, []
    return check


def _file_name(suffixes: tuple[str, ...], what: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not value.lower().endswith(suffixes) or "\x00" in value:
            raise ValueError(f"{value!r} is not {what}")
        return value
    return check


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be the words to speak, a non-empty string")
    if len(value) > MAX_TEXT_CHARS:
        raise ValueError(f"{len(value)} characters, more than {MAX_TEXT_CHARS}")
    return value


def _voice(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 100 or any(c.isspace() for c in value):
        raise ValueError(f"{value!r} must be a voice name (espeak-ng) or speaker id (HeyGem)")
    return value


# --------------------------------------------------------------------------- the options

WATERMARK_PARTS = (
    Part("image", CLIP, N_("Watermark"), N_("a .png (transparency kept) or .jpg")),
    Part("position", CHOICE, N_("Watermark position"), N_("the corner (or centre) it sits in"), choices=POSITIONS),
    Part("margin", NUMBER, N_("Watermark margin"), N_("gap to the edges, as a share of the frame's shorter side"),
         minimum=0, maximum=0.25),
    Part("opacity", NUMBER, N_("Watermark opacity"), N_("0 (invisible) to 1, times the image's own transparency"),
         minimum=0, maximum=1),
    Part("scale", NUMBER, N_("Watermark scale"), N_("the logo's width as a share of the frame's"),
         minimum=0.01, maximum=1),
)

# in this order in the API's field list, the console's form and --help
OPTIONS: tuple[Option, ...] = (
    Option("engine", CHOICE, N_("Engine"), N_("the lip-sync engine"), "the server's render.engine", "warp",
           _checked("engine", _engine), choices=ENGINE_NAMES, console="main"),
    Option("link_lifetime", DURATION, N_("Link lifetime"), N_("how long the presigned URLs live: seconds or e.g. "
           "\"3d\" (1m..7d); permanent links do not expire"), "the server's links.lifetime", "3d",
           _checked("link_lifetime", _link_lifetime), minimum=MIN_LINK_LIFETIME, maximum=MAX_LINK_LIFETIME,
           console="main"),
    Option("callback_url", URL, N_("Callback URL"), N_("a webhook called with the job's JSON when it is done or "
           "failed"), "none; the server's notify.webhooks still apply", "https://hooks.example.com/lipsyncd",
           _checked("callback_url", _callback_url)),
    Option("output_name", TEXT, N_("Video file name"), N_("the video's file name, without .mp4 (several "
           "templates: NAME-TEMPLATE.mp4)"), "the job's name", "welcome", _checked("output_name", _output_name)),
    Option("priority", INTEGER, N_("Priority"), N_("higher runs first"), "0", 10, _checked("priority", _priority),
           minimum=PRIORITY_RANGE[0], maximum=PRIORITY_RANGE[1]),
    Option("resolution", TEXT, N_("Size"), N_("the finished size: keep, 1080p, 720p, 480p (the shorter side) or "
           "WIDTHxHEIGHT"), "the server's output.resolution", "1080p", _finish("resolution")),
    Option("aspect", CHOICE, N_("Shape"), N_("the finished shape; the crop follows the face"),
           "the server's output.aspect", "9:16", _finish("aspect"), choices=ASPECTS),
    Option("fps", NUMBER, N_("Frame rate"), N_("the finished frame rate"),
           "the server's output.fps (0: the render's own)", 25, _finish("fps"), minimum=1, maximum=120),
    Option("watermark", TABLE, N_("Watermark"), N_("an image from the template library composited into every "
           "frame"), "the server's output.watermark", {"image": "logo.png", "position": "bottom-right"},
           _finish("watermark"), parts=WATERMARK_PARTS),
    Option("intro", CLIP, N_("Intro clip"), N_("a clip in the server's template library joined before the video"),
           "the server's output.intro", "intro.mp4",
           _checked("intro", _file_name(CLIP_SUFFIXES, "a video clip"))),
    Option("outro", CLIP, N_("Outro clip"), N_("a clip in the server's template library joined after the video"),
           "the server's output.outro", "outro.mp4",
           _checked("outro", _file_name(CLIP_SUFFIXES, "a video clip"))),
    Option("subtitles", CHOICE, N_("Subtitles become"), N_("what the subtitle file becomes: a track viewers can "
           "switch on (soft), also burned into the picture (burn), or nothing (off)"),
           "the server's output.subtitles", "soft", _finish("subtitles"), choices=SUBTITLE_MODES),
    Option("subtitle_file", FILE, N_("Subtitles (.srt or .vtt)"), N_("an .srt or .vtt file timed against the "
           "speech"), "none (a manifest's NAME.srt / NAME.vtt is found by itself)", "welcome.srt",
           _checked("subtitle_file", _file_name(SUBTITLE_SUFFIXES, "an .srt or .vtt file")),
           url_field="subtitle_url"),
    Option("text", TEXT, N_("Text to speak (instead of an audio file)"), N_("words to speak instead of an audio, "
           "with the server's text-to-speech; give text or an audio, not both"), "none", N_("Hello, and welcome!"),
           _checked("text", _text)),
    Option("voice", TEXT, N_("Voice"), N_("the voice for text: an espeak-ng voice (en, de, cmn, ...) or a HeyGem "
           "speaker id"), "the server's tts.voice", "en-us", _checked("voice", _voice)),
)
BY_KEY: dict[str, Option] = {o.key: o for o in OPTIONS}
KEYS: tuple[str, ...] = tuple(BY_KEY)


@dataclass(frozen=True)
class Source:
    """A field of the API's submission that says where an input comes from."""

    key: str
    kind: str  # FILE (a file part), URL, TEXT
    help: str
    repeatable: bool = False


SOURCE_FIELDS: tuple[Source, ...] = (
    Source("audio", FILE, "the audio file (wav, mp3, m4a, flac, ogg, aac)"),
    Source("template", FILE, "template video(s) (mp4, mov, mkv, webm) or photo(s) (png, jpg): repeat the field "
           "for several", repeatable=True),
    Source("audio_url", URL, "http(s) URL of the audio, fetched by the server"),
    Source("audio_upload", TEXT, "id (or URL) of a finished tus upload holding the audio"),
    Source("template_url", URL, "http(s) URL(s) of templates, fetched by the server", repeatable=True),
    Source("template_name", TEXT, "name(s) of templates in the server's template library", repeatable=True),
    Source("template_upload", TEXT, "id(s) or URL(s) of finished tus uploads holding templates", repeatable=True),
    Source("name", TEXT, "the job's name (default: the audio's name); a name in use gets -2, -3, ..."),
)


def api_file_fields() -> dict[str, str]:
    """File parts of a multipart submission -> what each file is."""
    files = {s.key: s.key for s in SOURCE_FIELDS if s.kind == FILE}
    files.update({o.key: "subtitles" for o in OPTIONS if o.kind == FILE})
    return files


def api_text_fields() -> tuple[str, ...]:
    """The text fields of a submission, sources first, in the order errors list them."""
    return (*(s.key for s in SOURCE_FIELDS if s.kind != FILE), *(f for o in OPTIONS for f in o.text_fields()))


def api_repeatable() -> set[str]:
    return {s.key for s in SOURCE_FIELDS if s.repeatable}


# --------------------------------------------------------------------------- judging


def judge(raw: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Check every option in ``raw`` (a manifest's shape); returns the values kept and
    (key, message) for every problem, all at once. Keys ``raw`` holds that are not
    options are not looked at (the caller knows its own other keys)."""
    kept: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for option in OPTIONS:
        value = raw.get(option.key)
        if value is None:
            continue
        good, found = option.check(value)
        problems += [(option.key, message) for message in found]
        if not found:
            kept[option.key] = good
    # the one rule that spans two options: a WIDTHxHEIGHT and an aspect of another shape
    if "resolution" in kept and "aspect" in kept:
        problems += check_finish({"resolution": kept["resolution"], "aspect": kept["aspect"]})
        if any(key == "resolution" for key, _ in problems):
            kept.pop("resolution")
    return kept, problems


def from_fields(texts: Mapping[str, str]) -> dict[str, Any]:
    """The API's (and the console's) text fields -> the options in a manifest's shape.

    Numbers are read as numbers; a field that is not one stays text, so that :func:`judge`
    refuses it with the same message a manifest gets. A table's flat fields
    (``watermark_scale``) are gathered into the table.
    """
    raw: dict[str, Any] = {}
    for option in OPTIONS:
        if option.kind == TABLE:
            table = {p.key: _read(p.kind, texts[p.field_name(option.key)])
                     for p in option.parts if texts.get(p.field_name(option.key)) is not None}
            if table:
                raw[option.key] = table
        elif option.kind != FILE and texts.get(option.key) is not None:
            raw[option.key] = _read(option.kind, texts[option.key])
    return raw


def _read(kind: str, text: str) -> Any:
    """A number where the option takes one, written as a manifest would ("30" -> 30, "2.5" ->
    2.5); anything else as it was sent."""
    if kind not in (INTEGER, NUMBER, DURATION):
        return text
    for number in (int, float):
        try:
            return number(text.strip())
        except ValueError:
            continue
    return text


# --------------------------------------------------------------------------- the other doors


def add_flags(parser: argparse.ArgumentParser) -> None:
    """``lipsyncd submit``'s flags, one per option (a table: one per key). Values go to the
    server as they are written: the server judges them, as it judges every door."""
    for option in OPTIONS:
        if option.kind == FILE:
            parser.add_argument(option.flag, default=None, metavar="FILE", help=f"{option.help} (uploaded)")
            continue
        for f in _flat(option):
            text = f.help + (f": {', '.join(f.choices)}" if f.choices else "")
            if f.name == option.key and option.default != "none":
                text += f" (default: {option.default})"
            parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None,
                                metavar=_METAVAR.get(f.kind, "TEXT"), help=text)


_METAVAR = {INTEGER: "N", NUMBER: "X", DURATION: "DURATION", CHOICE: "CHOICE", URL: "URL", CLIP: "NAME"}


def flag_fields(args: argparse.Namespace) -> dict[str, str]:
    """The text fields ``add_flags``'s flags were given, as the API takes them."""
    names = [f.name for o in OPTIONS if o.kind != FILE for f in _flat(o)]
    return {n: str(getattr(args, n)) for n in names if getattr(args, n, None) is not None}


@dataclass(frozen=True)
class Field:
    """One text field of an option: the option itself, or one key of a table option."""

    name: str
    kind: str
    label: str
    helps: tuple[str, ...]  # what it does; a table's image also says what the table is
    choices: tuple[str, ...]
    minimum: float | None
    maximum: float | None
    part: Part | None = None

    @property
    def help(self) -> str:
        """One line for --help and OpenAPI ("watermark scale: ..." for a table's other keys)."""
        if self.part is not None and self.part.key != "image":
            option = self.name[: -len(self.part.key) - 1]  # watermark_scale -> watermark
            return f"{option} {self.part.key}: {self.part.help}"
        return "; ".join(self.helps)


def _flat(option: Option) -> list[Field]:
    """The text fields of an option."""
    if option.kind == TABLE:
        return [Field(p.field_name(option.key), p.kind, p.label,
                      (option.help, p.help) if p.key == "image" else (p.help,), p.choices, p.minimum, p.maximum, p)
                for p in option.parts]
    return [Field(option.key, option.kind, option.label, (option.help,), option.choices, option.minimum,
                  option.maximum)]


def schema_properties() -> dict[str, dict[str, Any]]:
    """OpenAPI properties of the submission's text fields: sources, then options."""
    props: dict[str, dict[str, Any]] = {}
    for source in SOURCE_FIELDS:
        if source.kind == FILE:
            continue
        one = {"type": "string", **({"format": "uri"} if source.kind == URL else {})}
        props[source.key] = ({"type": "array", "items": one} if source.repeatable else one) | \
            {"description": source.help}
    for option in OPTIONS:
        if option.kind == FILE:
            if option.url_field:
                props[option.url_field] = {"type": "string", "format": "uri",
                                           "description": f"{option.help}, fetched by the server (JSON's way to "
                                                          f"send it)"}
            continue
        for f in _flat(option):
            prop = _schema_type(f.kind, f.choices)
            if f.kind in (INTEGER, NUMBER):
                prop |= {k: v for k, v in (("minimum", f.minimum), ("maximum", f.maximum)) if v is not None}
            prop["description"] = f.help + (f" (default: {option.default})"
                                            if f.name == option.key and option.default != "none" else "")
            if f.name == option.key and not isinstance(option.example, dict):
                prop["example"] = option.example
            props[f.name] = prop
    return props


def schema_files() -> dict[str, dict[str, Any]]:
    """OpenAPI properties of the submission's file parts."""
    props: dict[str, dict[str, Any]] = {}
    for source in SOURCE_FIELDS:
        if source.kind == FILE:
            binary = {"type": "string", "format": "binary"}
            props[source.key] = ({"type": "array", "items": binary} if source.repeatable else binary) | \
                {"description": source.help}
    for option in OPTIONS:
        if option.kind == FILE:
            props[option.key] = {"type": "string", "format": "binary", "description": option.help}
    return props


def _schema_type(kind: str, choices: tuple[str, ...]) -> dict[str, Any]:
    if kind == INTEGER:
        return {"type": "integer"}
    if kind == NUMBER:
        return {"type": "number"}
    if kind == URL:
        return {"type": "string", "format": "uri"}
    if choices:
        return {"type": "string", "enum": list(choices)}
    return {"type": "string"}


@dataclass(frozen=True)
class FormField:
    """One input of the console's New job form. ``label`` and ``hint`` are English messages
    of the catalog (the console translates them); ``example`` is shown as written."""

    name: str
    label: str
    input: str  # "select", "number", "text", "textarea", "file", "url"
    hint: tuple[str, ...]  # messages, shown joined
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    placement: str = "more"
    attrs: dict[str, str] = field(default_factory=dict)
    example: str | None = None


def form_fields() -> list[FormField]:
    """The console's inputs for the options, in order (its sources are the page's own)."""
    out: list[FormField] = []
    for option in OPTIONS:
        if not option.console:
            continue
        if option.kind == FILE:
            accept = ",".join(SUBTITLE_SUFFIXES)
            out.append(FormField(option.key, option.label, "file", (option.help,), placement=option.console,
                                 attrs={"accept": accept}))
            continue
        for f in _flat(option):
            widget = "select" if f.choices else "number" if f.kind in (INTEGER, NUMBER) else \
                "textarea" if option.key == "text" else "url" if f.kind == URL else "text"
            attrs = {"maxlength": str(MAX_TEXT_CHARS)} if option.key == "text" else {}
            if f.kind == NUMBER:
                attrs["step"] = "any"
            example = option.example if f.name == option.key and widget in ("text", "url") \
                and not isinstance(option.example, dict) else None
            low, high = (f.minimum, f.maximum) if widget == "number" else (None, None)
            out.append(FormField(f.name, f.label, widget, f.helps, f.choices, low, high, option.console, attrs,
                                 None if example is None else str(example)))
    return out
