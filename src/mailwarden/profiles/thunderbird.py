"""Thunderbird autoconfig (``config-v1.1.xml``), in the form every client checked accepts.

See protocols.md §1: one ``emailProvider`` whose id is a host name, exact tokens with no
whitespace, an ``outgoingServer`` and a ``username`` on every server, never a password.
"""

from __future__ import annotations

from mailwarden.profiles.subject import Subject, username
from mailwarden.profiles.xmltext import attr, text
from mailwarden.site.model import DomainView, Server, Site

CONTENT_TYPE = "text/xml; charset=utf-8"

SOCKET_TYPE = {"implicit": "SSL", "starttls": "STARTTLS", "none": "plain"}


def _server(
    tag: str, kind: str, server: Server, domain: DomainView, subject: Subject, extra: str = ""
) -> str:
    auth = "".join(f"<authentication>{text(a)}</authentication>" for a in server.auth)
    return (
        f'<{tag} type="{kind}">'
        f"<hostname>{text(server.host)}</hostname>"
        f"<port>{server.port_for(kind)}</port>"
        f"<socketType>{SOCKET_TYPE[server.tls]}</socketType>"
        f"{auth}"
        f"<username>{text(username(server, domain, subject))}</username>"
        f"{extra}</{tag}>"
    )


def render(site: Site, domain: DomainView, subject: Subject) -> bytes:
    """The autoconfig document for ``subject`` at ``domain``."""
    config = domain.config
    services = domain.services
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n<clientConfig version="1.1">',
        f'<emailProvider id="{attr(domain.name)}">',
        *(f"<domain>{text(d)}</domain>" for d in (domain.name, *config.aliases)),
        f"<displayName>{text(config.display_name or site.organisation.name)}</displayName>",
        "<displayShortName>"
        f"{text(config.display_short_name or site.organisation.short_name)}"
        "</displayShortName>",
    ]
    imap = [_server("incomingServer", "imap", s, domain, subject) for s in services.imap]
    keep = services.pop3_keep_days
    pop3_block = (
        "<pop3>"
        f"<leaveMessagesOnServer>{'true' if keep else 'false'}</leaveMessagesOnServer>"
        "<downloadOnBiff>true</downloadOnBiff>"
        + (f"<daysToLeaveMessagesOnServer>{keep}</daysToLeaveMessagesOnServer>" if keep else "")
        + "</pop3>"
    )
    pop3 = [
        _server("incomingServer", "pop3", s, domain, subject, pop3_block) for s in services.pop3
    ]
    parts += [*pop3, *imap] if services.incoming_first == "pop3" else [*imap, *pop3]
    parts += [_server("outgoingServer", "smtp", s, domain, subject) for s in services.smtp]
    doc_url = config.documentation_url or site.organisation.support_url
    if doc_url:
        parts.append(
            f'<documentation url="{attr(doc_url)}">'
            '<descr lang="en">Mail client settings</descr></documentation>'
        )
    parts.append("</emailProvider></clientConfig>\n")
    return "".join(parts).encode("utf-8")
