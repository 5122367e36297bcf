"""The lint's I/O edge: files, the system resolver, the kernel's sysctl and local addresses.

Everything the rules need from this machine comes through here, as plain values, so the rules
can predict another host's behaviour when the operator passes those values on the command line.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
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


MAX_CONFIG_BYTES = 4 * 1024 * 1024
"""The default cap on one configuration file: the largest real ``sendmail.cf`` is ~100 KiB and a
``main.cf`` a few KiB, so 4 MiB is generous for any site and still a bounded amount of memory."""

_CHUNK = 64 * 1024


def size_text(limit: int) -> str:
    """``4 MiB``, ``512 KiB`` or ``1000 bytes``: the limit as the operator would write it."""
    for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if limit >= size and limit % size == 0:
            return f"{limit // size} {unit}"
    return f"{limit} bytes"


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "not a regular file"


def read_bytes_bounded(path: Path, max_bytes: int = MAX_CONFIG_BYTES) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` of them, or LINT-INPUT.

    Why this shape: a path an operator (or a script) passes may be a FIFO, ``/dev/zero``, a
    socket or a directory, possibly through a symlink. The file is opened with ``O_NONBLOCK`` (so
    opening a FIFO without a writer cannot block), the *opened* descriptor is ``fstat``-ed (so a
    swap between a check and the open cannot slip a device in), anything but a regular file is
    refused before a byte is read, and the read itself stops one byte past the cap, so even a
    file that grows while it is read costs at most ``max_bytes + 1`` bytes of memory.
    """
    name = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a unix socket (or a FIFO on some systems)
            raise LintInputError(name, 0, "not a regular file (a socket?); refusing") from None
        raise LintInputError(name, 0, f"cannot read: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise LintInputError(
                name, 0, f"{_kind(info.st_mode)}, not a regular file; refusing to read it"
            )
        too_big = LintInputError(
            name,
            0,
            f"larger than {size_text(max_bytes)} (the limit for one configuration file); "
            "is this really the file to lint? (raise it with --max-bytes)",
        )
        if info.st_size > max_bytes:
            raise too_big
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        total = 0
        while total <= max_bytes:
            chunk = os.read(fd, min(_CHUNK, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes:
            raise too_big
        return b"".join(chunks)
    except OSError as exc:
        raise LintInputError(name, 0, f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def read_config(path: Path, max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """A configuration file's text (bounded, regular files only); errors are one LINT-INPUT line."""
    data = read_bytes_bounded(path, max_bytes)
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


class CachingResolver:
    """Another resolver's answers, each (name, family) asked once per run."""

    def __init__(self, inner: Resolver) -> None:
        self.inner = inner
        self.description = inner.description
        self._answers: dict[tuple[str, Family], tuple[str, ...]] = {}

    def lookup(self, name: str, family: Family) -> tuple[str, ...]:
        key = (name, family)
        if key not in self._answers:
            self._answers[key] = self.inner.lookup(name, family)
        return self._answers[key]


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


def make_resolver(
    hosts: Path | None, resolve: list[str], max_bytes: int = MAX_CONFIG_BYTES
) -> tuple[Resolver, str]:
    """The resolver the options ask for, and a sentence saying where names are resolved.

    Answers are remembered for the run (:class:`CachingResolver`): sendmail resolves each
    ``Addr=`` once, and a file naming one host in thousands of lines must not cost thousands of
    DNS round trips.
    """
    base: Resolver
    if hosts is not None:
        table = parse_hosts(read_config(hosts, max_bytes), str(hosts))
        base = StaticResolver(table, f"hosts file {hosts}")
    else:
        base = CachingResolver(SystemResolver())
    if not resolve:
        return base, f"names resolved by {base.description}"
    given = dict(parse_resolve_option(spec) for spec in resolve)
    names = ", ".join(sorted(given))
    return (
        StaticResolver(given, "--resolve", fallback=base),
        f"names resolved from --resolve ({names}), then by {base.description}",
    )


def read_postfix(directory: Path, max_bytes: int = MAX_CONFIG_BYTES) -> PostfixConfig:
    """``DIR/main.cf`` and ``DIR/master.cf`` parsed; a missing, special or huge file is a
    one-line error."""
    if not directory.is_dir():
        raise LintInputError(str(directory), 0, "not a directory (expected a Postfix config dir)")
    main = directory / "main.cf"
    master = directory / "master.cf"
    return PostfixConfig(
        str(main),
        str(master),
        parse_main(read_config(main, max_bytes), str(main)),
        parse_master(read_config(master, max_bytes), str(master)),
    )


def this_host_name() -> str:
    """This machine's fully qualified name: Postfix's default ``myhostname``."""
    return socket.getfqdn()
