"""The README's sections and the code blocks in them: what the translated manual must
repeat exactly (commands, configuration, examples), so the two cannot drift apart."""

from __future__ import annotations

import re

_FENCE = re.compile(r"^(```|~~~)")
# a translated section names the English one it renders: "<!-- en: Quick start -->"
_SOURCE = re.compile(r"<!--\s*en:\s*(.+?)\s*-->")


def sections(markdown: str) -> dict[str, str]:
    """Level-2 sections by title (the text below the heading, its ### parts included)."""
    out: dict[str, str] = {}
    title, lines, fenced = None, [], False
    for line in markdown.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            if title is not None:
                out[title] = "\n".join(lines)
            title, lines = line[3:].strip(), []
            continue
        lines.append(line)
    if title is not None:
        out[title] = "\n".join(lines)
    return out


def translated_sections(markdown: str) -> dict[str, str]:
    """A translation's sections keyed by the English title each names in its comment."""
    out = {}
    for body in sections(markdown).values():
        m = _SOURCE.search(body)
        if m:
            out[m.group(1)] = body
    return out


def code_blocks(text: str) -> list[str]:
    """Fenced blocks (with their fences) and indented blocks, in order."""
    blocks: list[str] = []
    lines = text.splitlines()
    i, previous_blank = 0, True
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):
            j = i + 1
            while j < len(lines) and not lines[j].startswith(line[:3]):
                j += 1
            blocks.append("\n".join(lines[i:j + 1]))
            i, previous_blank = j + 1, False
            continue
        if previous_blank and line.startswith("    ") and line.strip():
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or
                                      (not lines[j].strip() and j + 1 < len(lines) and lines[j + 1].startswith("    "))):
                j += 1
            blocks.append("\n".join(lines[i:j]).rstrip())
            i, previous_blank = j, False
            continue
        previous_blank = not line.strip()
        i += 1
    return blocks
