"""Keeping the catalogs: extract the English messages, merge them into each language's
``.po``, compile the ``.mo`` files the package ships, and check that nothing is missing.

Run as ``scripts/i18n extract | compile | check | add TAG`` (Babel does the work). A
translator edits ``daemon/i18n/locale/<lang>/LC_MESSAGES/lipsyncd.po`` and runs
``scripts/i18n compile``; the test suite runs :func:`problems`, so a message added in the
code without its translation, or a ``.po`` edited without compiling, fails CI.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po, write_po

from daemon.i18n import DOMAIN, LANGUAGES, SOURCE, posix_name

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent  # daemon/
LOCALE = HERE / "locale"
TEMPLATE = LOCALE / f"{DOMAIN}.pot"
# where people's words are: N_ marks a message where it is defined, _ translates it
KEYWORDS = {"_": None, "N_": None, "gettext": None, "ngettext": (1, 2), "pgettext": ((1, "c"), 2)}
METHODS = [("**/templates/**.html", "jinja2.ext:babel_extract"), ("**.py", "python")]
OPTIONS = {"**/templates/**.html": {"extensions": "jinja2.ext.i18n", "newstyle_gettext": "true"}}
# placeholders a translation must keep as they are: {name}, %(name)s, `code`
_PLACEHOLDER = re.compile(r"\{\w+\}|%\(\w+\)s|`[^`]+`")


def po_path(tag: str) -> Path:
    return LOCALE / posix_name(tag) / "LC_MESSAGES" / f"{DOMAIN}.po"


def mo_path(tag: str) -> Path:
    return po_path(tag).with_suffix(".mo")


def extract() -> Catalog:
    """Every English message of the package, with where it is used."""
    catalog = Catalog(project="lipsyncd", domain=DOMAIN, charset="utf-8", fuzzy=False,
                      creation_date=datetime(2026, 1, 1, tzinfo=timezone.utc))
    for filename, lineno, message, comments, context in extract_from_dir(
            str(PACKAGE), METHODS, options_map=OPTIONS, keywords=KEYWORDS, strip_comment_tags=True):
        if not message or (isinstance(message, tuple) and not message[0]):
            continue
        catalog.add(message, None, [(f"daemon/{filename}", lineno)], auto_comments=comments, context=context)
    return catalog


def _po_bytes(catalog: Catalog, **kw) -> bytes:
    # no line numbers: an edit elsewhere in a file does not touch the catalogs
    catalog.project, catalog.version, catalog.fuzzy = "lipsyncd", "1", False
    buf = io.BytesIO()
    write_po(buf, catalog, width=100, sort_output=False, omit_header=False, include_lineno=False, **kw)
    return buf.getvalue()


def _mo_bytes(catalog: Catalog) -> bytes:
    buf = io.BytesIO()
    write_mo(buf, catalog, use_fuzzy=False)
    return buf.getvalue()


def read(path: Path, tag: str | None = None) -> Catalog:
    with open(path, "rb") as fh:
        return read_po(fh, locale=posix_name(tag) if tag else None, domain=DOMAIN)


def update() -> list[str]:
    """Writes the template and merges it into every language's .po; returns what changed."""
    changed = []
    template = extract()
    TEMPLATE.parent.mkdir(parents=True, exist_ok=True)
    fresh = _po_bytes(template, ignore_obsolete=True)
    if not TEMPLATE.exists() or TEMPLATE.read_bytes() != fresh:
        TEMPLATE.write_bytes(fresh)
        changed.append(str(TEMPLATE.relative_to(PACKAGE.parent)))
    for tag in LANGUAGES:
        if tag == SOURCE:
            continue
        path = po_path(tag)
        catalog = read(path, tag) if path.exists() else Catalog(locale=posix_name(tag), domain=DOMAIN)
        catalog.update(template, update_creation_date=False)
        merged = _po_bytes(catalog, ignore_obsolete=True, include_previous=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_bytes() != merged:
            path.write_bytes(merged)
            changed.append(str(path.relative_to(PACKAGE.parent)))
    return changed


def compile_all() -> list[str]:
    written = []
    for tag in LANGUAGES:
        if tag == SOURCE:
            continue
        data = _mo_bytes(read(po_path(tag), tag))
        if not mo_path(tag).exists() or mo_path(tag).read_bytes() != data:
            mo_path(tag).write_bytes(data)
            written.append(str(mo_path(tag).relative_to(PACKAGE.parent)))
    return written


def problems() -> list[str]:
    """Everything that keeps the catalogs from being complete and current, all at once."""
    found: list[str] = []
    template = extract()
    wanted = {m.id for m in template if m.id}
    for tag in LANGUAGES:
        if tag == SOURCE:
            continue
        po, mo = po_path(tag), mo_path(tag)
        if not po.exists():
            found.append(f"{po.name} of {tag}: missing (scripts/i18n extract)")
            continue
        catalog = read(po, tag)
        have = {m.id: m for m in catalog if m.id}
        for msgid in sorted(wanted - set(have), key=str):
            found.append(f"{tag}: not in the catalog (scripts/i18n extract): {msgid!r}")
        for msgid in sorted(wanted & set(have), key=str):
            m = have[msgid]
            strings = m.string if isinstance(m.string, tuple) else (m.string,)
            if not all(strings):
                found.append(f"{tag}: not translated: {msgid!r}")
            elif m.fuzzy:
                found.append(f"{tag}: fuzzy (check it, then remove the flag): {msgid!r}")
            else:
                ids = msgid if isinstance(msgid, tuple) else (msgid,)
                for s in strings:
                    if sorted(_PLACEHOLDER.findall(ids[0])) != sorted(_PLACEHOLDER.findall(s)):
                        found.append(f"{tag}: placeholders or `code` differ: {msgid!r} -> {s!r}")
        if not mo.exists():
            found.append(f"{tag}: {mo.name} missing (scripts/i18n compile)")
        else:
            with open(mo, "rb") as fh:
                compiled = {m.id: m.string for m in read_mo(fh) if m.id}
            current = {m.id: m.string for m in catalog if m.id and m.string and not m.fuzzy}
            if compiled != current:
                found.append(f"{tag}: {mo.name} is older than {po.name} (scripts/i18n compile)")
    return found


def add(tag: str) -> Path:
    """Starts a language: its .po from the template, every message still to translate."""
    template = extract()
    catalog = Catalog(locale=posix_name(tag), domain=DOMAIN, project="lipsyncd")
    catalog.update(template)
    path = po_path(tag)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_po_bytes(catalog))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/i18n", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("extract", help="update lipsyncd.pot and merge it into every .po")
    sub.add_parser("compile", help="compile every .po into the .mo the package ships")
    sub.add_parser("check", help="list untranslated, fuzzy or stale messages (exit 1 if any)")
    new = sub.add_parser("add", help="start a new language's .po (then add it to daemon.i18n.LANGUAGES)")
    new.add_argument("tag", help="BCP 47 tag, e.g. ja or zh-TW")
    args = parser.parse_args(argv)
    if args.command == "extract":
        for path in update():
            print("updated", path)
    elif args.command == "compile":
        for path in compile_all():
            print("compiled", path)
    elif args.command == "add":
        print("started", add(args.tag))
    else:
        found = problems()
        for line in found:
            print(line)
        total = len([m for m in extract() if m.id])
        print(f"{total} messages; {len(found)} problem(s)")
        return 1 if found else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
