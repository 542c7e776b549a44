"""What a manifest refers to, and what it most likely meant when a file it names is not there."""

from __future__ import annotations

import difflib
import os
from collections import defaultdict
from pathlib import Path

from daemon.errors import BadManifestError
from daemon.intake.manifest import Manifest
from daemon.names import job_stem


def manifest_refs(m: Manifest | BadManifestError) -> list[tuple[str, str, bool]]:
    """(field, name, is a template) of every inbox file a manifest names: its audio (none
    when it brings text instead), its templates, its subtitles; for a refused manifest what
    could be read of them."""
    if isinstance(m, BadManifestError):
        return list(m.refs or [])
    refs = [("audio", m.audio, False)] if m.audio else []
    refs += [(f"templates[{i}]", t, True) for i, t in enumerate(m.templates)]
    if m.options.subtitle_file:
        refs.append(("subtitle_file", m.options.subtitle_file, False))
    return refs


def normal_ref(ref: str) -> str:
    """``ref`` with "/" separators, without empty and "." parts: how references are compared."""
    parts = [p for p in ref.replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts)


def near_misses(parsed: dict, top: dict[str, str], claimers: dict[str, list[str]],
                 library: Path | None) -> dict[str, str]:
    """Manifest references absent from the inbox -> the present file they most likely mean.

    Only a file of the same kind (audio for audio, template for template), named by no
    manifest and not half of a complete same-stem pair, is suggested: a near miss such as a
    wrong extension, letter case or one typo (difflib similarity of at least 0.8).
    """
    stems: dict[str, set[str]] = defaultdict(set)
    for n, kind in top.items():
        if kind != "manifest":
            stems[job_stem(n)].add(kind)
    free = {n: k for n, k in top.items() if k != "manifest" and n not in claimers
            and stems[job_stem(n)] != {"audio", "template"}}
    out: dict[str, str] = {}
    for m in parsed.values():
        if not isinstance(m, Manifest):
            continue
        for field, ref, is_template in manifest_refs(m):
            kind = "template" if is_template else "audio" if field == "audio" else "subtitles"
            ref = normal_ref(ref)
            if "/" in ref or ref in top or (library is not None and os.path.lexists(library / ref)):
                continue
            candidates = [n for n, k in free.items() if k == kind]
            same_case = [n for n in candidates if n.lower() == ref.lower()]
            close = same_case or difflib.get_close_matches(ref, candidates, n=1, cutoff=0.8) or \
                difflib.get_close_matches(job_stem(ref), [job_stem(c) for c in candidates], n=1, cutoff=0.8)
            if close:
                match = close[0] if close[0] in candidates else next(c for c in candidates if job_stem(c) == close[0])
                out[ref] = match
    return out
