"""The lint's I/O edge: files, the system resolver, the kernel's sysctl and local addresses.

Everything the rules need from this machine comes through here, as plain values, so the rules
can predict another host's behaviour when the operator passes those values on the command line.
"""

from __future__ import annotations

import socket
from pathlib import Path

from mailwarden.lint.addresses import Family, parse_literal
from mailwarden.lint.errors import LintInputError
from mailwarden.lint.postfix import PostfixConfig, parse_main, parse_master
from mailwarden.lint.resolution import (
    Resolver,
    StaticResolver,
    parse_hosts,
    parse_resolve_option,
)

BINDV6ONLY = Path("/proc/sys/net/ipv6/bindv6only")


def read_config(path: Path) -> str:
    """A configuration file's text; unreadable or non-text files are a one-line error."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LintInputError(str(path), 0, f"cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


class SystemResolver:
    """This machine's resolver (``getaddrinfo``), asked once per family like ``gethostbyname2``."""

    description = "the system resolver"

    def lookup(self, name: str, family: Family) -> tuple[str, ...]:
        af = socket.AF_INET if family is Family.INET else socket.AF_INET6
        try:
            infos = socket.getaddrinfo(name, None, af, socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, ValueError):
            return ()
        found: list[str] = []
        for info in infos:
            literal = parse_literal(str(info[4][0]))
            if literal is not None and literal.text not in found:
                found.append(literal.text)
        return tuple(found)


def read_bindv6only(path: Path = BINDV6ONLY) -> bool | None:
    """``net.ipv6.bindv6only`` of this kernel, or None when it cannot be read."""
    try:
        return path.read_text(encoding="ascii").strip() == "1"
    except OSError:
        return None


def local_addresses(
    if_inet6: Path = Path("/proc/net/if_inet6"), fib_trie: Path = Path("/proc/net/fib_trie")
) -> frozenset[str]:
    """The addresses of this machine's interfaces (Linux ``/proc``), both families."""
    found: set[str] = set()
    try:
        for line in if_inet6.read_text(encoding="ascii").splitlines():
            raw = line.split()[0] if line.split() else ""
            if len(raw) == 32:
                literal = parse_literal(":".join(raw[i : i + 4] for i in range(0, 32, 4)))
                if literal is not None:
                    found.add(literal.text)
    except OSError:
        pass
    try:
        previous = ""
        for line in fib_trie.read_text(encoding="ascii").splitlines():
            text = line.strip()
            if text.startswith("/32 host LOCAL"):
                literal = parse_literal(previous.split()[-1]) if previous.split() else None
                if literal is not None:
                    found.add(literal.text)
            previous = text
    except OSError:
        pass
    return frozenset(found)


def make_resolver(hosts: Path | None, resolve: list[str]) -> tuple[Resolver, str]:
    """The resolver the options ask for, and a sentence saying where names are resolved."""
    base: Resolver
    if hosts is not None:
        base = StaticResolver(parse_hosts(read_config(hosts), str(hosts)), f"hosts file {hosts}")
    else:
        base = SystemResolver()
    if not resolve:
        return base, f"names resolved by {base.description}"
    table = dict(parse_resolve_option(spec) for spec in resolve)
    names = ", ".join(sorted(table))
    return (
        StaticResolver(table, "--resolve", fallback=base),
        f"names resolved from --resolve ({names}), then by {base.description}",
    )


def read_postfix(directory: Path) -> PostfixConfig:
    """``DIR/main.cf`` and ``DIR/master.cf`` parsed; a missing file is a one-line error."""
    if not directory.is_dir():
        raise LintInputError(str(directory), 0, "not a directory (expected a Postfix config dir)")
    main = directory / "main.cf"
    master = directory / "master.cf"
    return PostfixConfig(
        str(main),
        str(master),
        parse_main(read_config(main), str(main)),
        parse_master(read_config(master), str(master)),
    )


def this_host_name() -> str:
    """This machine's fully qualified name: Postfix's default ``myhostname``."""
    return socket.getfqdn()
