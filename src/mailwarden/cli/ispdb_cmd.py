"""``mailwarden import-ispdb``: Thunderbird ISP database documents → site.toml entries."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from rich.markup import escape

from mailwarden.cli.common import (
    add_format_option,
    err_console,
    formatter,
    plural,
    print_json,
)
from mailwarden.errors import ConfigError, InputError
from mailwarden.ispdb import (
    MAX_DOCUMENT_BYTES,
    ProviderDocument,
    convert,
    parse_document,
    render,
    site_header,
)
from mailwarden.site import parse_site

HELP = """\
Turn Thunderbird ISP database documents (config-v1.1.xml, as found in the ISPDB or served
by a provider's autoconfig host) into [services.*] and [domains.*] entries for site.toml.
Useful when you take over a provider's domains, or to start a site file from what clients
already receive today.

  mailwarden import-ispdb example.org.xml
  mailwarden import-ispdb ispdb/*.xml --output imported.toml
  curl -s 'https://autoconfig.example.org/mail/config-v1.1.xml' > example.org.xml
  mailwarden import-ispdb example.org.xml --strict || echo "check the notes"

Paste the output below your site file's top-level keys (primary_domain, [organisation], ...)
and run 'mailwarden check-config'. Everything that could not be imported as written (Exchange
URL entries, unsupported values, over-long names) is printed as a warning and kept as a
comment in the output. The output is checked with the site loader before it is written.

Exit status: 0 imported; 1 with --strict when there were notes; 2 on bad input.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "import-ispdb",
        help="turn ISPDB config-v1.1.xml documents into site.toml entries",
        description=HELP,
        formatter_class=formatter(),
    )
    parser.add_argument("files", metavar="FILE.xml", nargs="+", help="ISPDB documents")
    parser.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="write the site.toml fragment here instead of to standard output",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 1 if anything was left out or changed",
    )
    add_format_option(parser)
    parser.set_defaults(func=run)


def read_document(path: Path) -> ProviderDocument:
    """Read and parse one document; errors name the file."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_document(data, str(path))


def _write(path: Path, text: str) -> None:
    """Write ``text`` next to ``path`` first, then rename: no half-written fragment."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent or Path("."), prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        raise InputError(f"{path}: cannot write: {exc.strerror}") from None


def run(args: argparse.Namespace) -> int:
    documents = [read_document(Path(name)) for name in args.files]
    fragment = convert(documents)
    if not fragment.domains:
        notes = "; ".join(str(n) for n in fragment.notes) or "no domains"
        raise InputError(f"nothing to import: {notes}")
    text = render(fragment)
    try:
        parse_site(site_header(next(iter(fragment.domains))) + text, source="import-ispdb")
    except ConfigError as exc:  # a mapping bug, not bad input: say so plainly
        raise InputError(f"the generated entries do not load ({exc.message})") from None
    if args.output:
        _write(Path(args.output), text)
    elif args.format == "text":
        sys.stdout.write(text)
    domains = sum(1 + len(t.get("aliases", [])) for t in fragment.domains.values())
    summary = (
        f"imported {plural(domains, 'domain')} in {plural(len(fragment.services), 'service set')} "
        f"from {plural(len(documents), 'document')} ({plural(len(fragment.notes), 'note')})"
    )
    if args.format == "json":
        print_json(
            {
                "summary": summary,
                "output": args.output,
                "toml": None if args.output else text,
                "service_sets": list(fragment.services),
                "domains": fragment.domains,
                "notes": [
                    {"file": n.source, "line": n.line, "message": n.message} for n in fragment.notes
                ],
            }
        )
    else:
        for note in fragment.notes:
            err_console.print(
                f"[yellow]warning:[/] {escape(str(note))}", highlight=False, soft_wrap=True
            )
        err_console.print(summary, markup=False, highlight=False, soft_wrap=True)
    return 1 if args.strict and fragment.notes else 0
