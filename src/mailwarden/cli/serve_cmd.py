"""``mailwarden serve``: run the autoconfiguration server."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from rich.markup import escape

from mailwarden.cli.common import add_config_option, console, formatter, outlook_2007_note
from mailwarden.cli.listen import bind, run_uvicorn
from mailwarden.directory.config import EmbeddedConfig
from mailwarden.directory.ldap_client import require_site_clients
from mailwarden.errors import InputError
from mailwarden.profiles.signing import load_signer
from mailwarden.server.asgi import CONFIG_ENV
from mailwarden.server.logs import log_config
from mailwarden.server.reload import prepare as prepare_reload
from mailwarden.site import Site, load_site

HELP = """\
Serve Thunderbird autoconfig, Outlook Autodiscover (POX XML and v2 JSON), Apple profiles
(/mobileconfig, signed when [profiles] names a certificate), the self-service setup page (/),
/healthz and /metrics for every domain in the site file, with a production ASGI server (uvicorn).

Put it behind your TLS reverse proxy (see README: Deployment) and point autoconfig.<domain>
and autodiscover.<domain> at it. Example:

  mailwarden serve --config /etc/mailwarden/site.toml --listen 127.0.0.1:8080 --workers 4
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "serve",
        help="run the autoconfiguration server",
        description=HELP,
        formatter_class=formatter(),
    )
    add_config_option(parser)
    parser.add_argument(
        "--listen",
        default="127.0.0.1:8080",
        metavar="HOST:PORT",
        help="address to listen on (default 127.0.0.1:8080; [::1]:8080 for IPv6)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes (default 1; one or two per core)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="least severe server log line written to stderr",
    )
    parser.add_argument(
        "--print-examples",
        action="store_true",
        help="print curl command lines for every endpoint before serving",
    )
    parser.set_defaults(func=run)


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise InputError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


def example_commands(site: Site, base: str) -> list[str]:
    """curl lines that exercise each endpoint for the site's primary domain."""
    domain = site.primary_domain
    user = f"user@{domain}"
    pox = (
        '<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/'
        'exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>'
        f"{user}</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/"
        "autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request>"
        "</Autodiscover>"
    )
    return [
        f"curl -s '{base}/mail/config-v1.1.xml?emailaddress={user.replace('@', '%40')}'",
        f"curl -s -H 'Host: autoconfig.{domain}' '{base}/mail/config-v1.1.xml'",
        f"curl -s -H 'Content-Type: text/xml' --data '{pox}' "
        f"'{base}/autodiscover/autodiscover.xml'",
        f"curl -s '{base}/autodiscover/autodiscover.json?Email={user.replace('@', '%40')}"
        "&Protocol=AutodiscoverV1'",
        f"curl -s '{base}/autodiscover/autodiscover.json/v1.0/{user}?Protocol=AutodiscoverV1'",
        f"curl -s -OJ '{base}/mobileconfig?emailaddress={user.replace('@', '%40')}'",
        f"curl -s -H 'Accept-Language: de' '{base}/?emailaddress={user.replace('@', '%40')}'",
        f"curl -s '{base}/healthz'",
        f"curl -s '{base}/metrics'",
    ]


def run(args: argparse.Namespace) -> int:
    config = Path(args.config).resolve()
    site = load_site(config)  # fail here, once, with a clear message, not in every worker
    load_signer(site.profiles)  # likewise for an unreadable or mismatched signing key
    require_site_clients(site, guard=False)  # likewise for LDAP without its optional client
    host, port = parse_listen(args.listen)
    if args.workers < 1:
        raise InputError("--workers must be at least 1")
    sock = bind(host, port)  # a busy port is one LISTEN-FAILED line, for any worker count
    os.environ[CONFIG_ENV] = str(config)
    prepare_reload(config)  # SIGHUP re-reads the site file: see mailwarden.server.reload
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Workers are fresh processes and see this at import; one worker runs in this process,
        # where prometheus_client is already imported in single-process mode, so setting it
        # then would make /metrics read an empty directory.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="mailwarden-metrics-")
    if args.print_examples:
        shown = f"[{host}]" if ":" in host else host
        name = escape(site.organisation.name)
        console.print(f"[bold]Serving {name} on http://{shown}:{port}[/]")
        console.print("Try:")
        for line in example_commands(site, f"http://{shown}:{port}"):
            console.print(f"  {line}", soft_wrap=True, markup=False)
    warnings: list[str] = []
    if isinstance(site.directory, EmbeddedConfig) and not site.directory.path.exists():
        warnings.append(
            f"the embedded directory {site.directory.path} does not exist: every lookup fails "
            "and is answered per [directory] on_outage until 'mailwarden users import' creates it"
        )
    for warning in warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    note = outlook_2007_note(site)
    if note:
        console.print(f"[cyan]note:[/] {escape(note)}", soft_wrap=True)
    trusted = ",".join(site.server.trusted_proxies)  # [] in the site file: trust nobody
    from mailwarden.server.protocol import HttpLimits  # imports uvicorn: only when serving

    return run_uvicorn(
        sock,
        workers=args.workers,
        limits=HttpLimits.from_settings(site.server),
        app="mailwarden.server.asgi:create_app",
        factory=True,
        access_log=False,
        server_header=False,
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or None,
        log_level=args.log_level,
        log_config=log_config(args.log_level),
        lifespan="on",
    )
