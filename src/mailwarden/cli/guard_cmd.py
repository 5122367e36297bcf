"""``mailwarden guard``: run the outbound abuse guard and manage locks and held mail."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from rich.table import Table

from mailwarden.cli.common import add_config_option, add_format_option, console, formatter
from mailwarden.cli.common import print_json as _print_json
from mailwarden.errors import InputError, MailwardenError
from mailwarden.guard.actions import Locker
from mailwarden.guard.config import GuardConfig
from mailwarden.guard.store.base import MAX_HISTORY, Event, Store
from mailwarden.site import load_site

HELP = """\
The outbound abuse guard watches every authenticated sender in the MTA's path, spots an
account that behaves unlike itself (a phished password used for a spam run), stops its mail
up a ladder (throttle → hold + alert → lock) and tells the admins. Configure it in the
[guard] section of the site file; wiring for Postfix and sendmail is in docs/guard.md.

  mailwarden guard -c site.toml serve                     policy server (+ milter if configured)
  mailwarden guard -c site.toml serve --policy unix:/var/spool/postfix/private/guard
  mailwarden guard -c site.toml status                    store, locks, held messages
  mailwarden guard -c site.toml locked                    accounts the guard has locked
  mailwarden guard -c site.toml held --format json        messages in the hold queue
  mailwarden guard -c site.toml release 4Xc1R2yz          deliver one held message
  mailwarden guard -c site.toml release jdoe              deliver all held mail of a user
  mailwarden guard -c site.toml unlock jdoe               let jdoe send again
  mailwarden guard -c site.toml lock jdoe --reason "phished, ticket 123"
  mailwarden guard -c site.toml history jdoe              what the guard decided about jdoe
  mailwarden guard -c site.toml history jdoe --ref K7QW2M4A   the refusal jdoe was shown

Exit status: 0 ok; 1 for status when accounts are locked or mail is held (monitoring can
alert on it); 2 for errors (bad site file, store unreachable).
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "guard",
        help="outbound abuse guard: serve, locks, held mail",
        description=HELP,
        formatter_class=formatter(),
    )
    add_config_option(parser)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    serve = actions.add_parser(
        "serve",
        help="run the policy server (and milter)",
        description="Run the Postfix policy delegation server and, if [guard] milter_listen "
        "is set or --milter is given, the milter. Logs one JSON object per line on stderr.\n\n"
        "  mailwarden guard -c site.toml serve --policy 127.0.0.1:10040 --milter "
        "127.0.0.1:10041 --metrics 127.0.0.1:9141",
        formatter_class=formatter(),
    )
    serve.add_argument(
        "--policy",
        metavar="LISTEN",
        help="HOST:PORT or unix:/path (default: [guard] policy_listen)",
    )
    serve.add_argument(
        "--milter",
        metavar="LISTEN",
        help="HOST:PORT or unix:/path (default: [guard] milter_listen)",
    )
    serve.add_argument("--name", default="guard", help="label of this instance in logs/alerts")
    serve.add_argument(
        "--metrics", metavar="HOST:PORT", help="serve Prometheus metrics here (default: none)"
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=("error", "warning", "info", "debug"),
        help="least severe log line written to stderr",
    )
    serve.set_defaults(func=run_serve)

    status = actions.add_parser("status", help="store health, locks and held messages")
    add_format_option(status)
    status.set_defaults(func=run_status)

    locked = actions.add_parser("locked", help="list locked accounts")
    add_format_option(locked)
    locked.set_defaults(func=run_locked)

    held = actions.add_parser("held", help="list held messages")
    add_format_option(held)
    held.set_defaults(func=run_held)

    release = actions.add_parser(
        "release", help="release held mail: a queue ID or all mail of a user"
    )
    release.add_argument(
        "key", metavar="QUEUEID|USER", help="a held message's queue ID, or a user: all their mail"
    )
    release.set_defaults(func=run_release)

    unlock = actions.add_parser("unlock", help="let a locked account send again")
    unlock.add_argument("user", help="the SASL login name")
    unlock.set_defaults(func=run_unlock)

    lock = actions.add_parser("lock", help="lock an account by hand (or confirm a hold)")
    lock.add_argument("user", help="the SASL login name")
    lock.add_argument(
        "--reason",
        default="locked by an administrator",
        help="why, for the history, the alert and the lock action",
    )
    lock.set_defaults(func=run_lock)

    history = actions.add_parser("history", help="what the guard decided about a user")
    history.add_argument("user", help="the SASL login name")
    history.add_argument(
        "--limit", type=int, default=50, metavar="N", help="newest N decisions (at most 1000)"
    )
    history.add_argument(
        "--ref",
        metavar="REF",
        help="only the decision with this reference (the one a refused sender quotes)",
    )
    add_format_option(history)
    history.set_defaults(func=run_history)


def _config(args: argparse.Namespace) -> tuple[GuardConfig, Path, object]:
    from mailwarden.guard.service import guard_config

    site = load_site(args.config)
    return guard_config(site, args.config), Path(args.config).resolve().parent, site


def _with_store(args: argparse.Namespace, job: Callable[[Store], Awaitable[int]]) -> int:
    from mailwarden.guard.service import open_store

    config, base, _ = _config(args)
    if config.store == "memory":
        raise InputError(
            f"{args.config}: [guard] store = 'memory' keeps no state outside the running "
            "server; use 'sqlite' or 'redis' to manage locks from the command line"
        )

    async def main() -> int:
        store = open_store(config, base)
        try:
            await store.ping()
            return await job(store)
        finally:
            await store.close()

    return asyncio.run(main())


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def run_serve(args: argparse.Namespace) -> int:
    from functools import partial

    from mailwarden.guard.reload import reload_guard
    from mailwarden.guard.service import build_engine, serve

    config, base, site = _config(args)
    logging.basicConfig(
        stream=sys.stderr, level=args.log_level.upper(), format="%(message)s", force=True
    )
    engine = build_engine(site, config, base, name=args.name)  # type: ignore[arg-type]
    if args.metrics:
        from prometheus_client import start_http_server

        host, _, port = args.metrics.rpartition(":")
        if not port.isdigit():
            raise InputError(f"--metrics {args.metrics!r}: expected HOST:PORT")
        start_http_server(int(port), addr=host.strip("[]"), registry=engine.metrics.registry)
    policy = args.policy if args.policy is not None else config.policy_listen
    milter = args.milter if args.milter is not None else config.milter_listen
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    try:
        import uvloop  # installed with uvicorn[standard]: a faster event loop for the hot path

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a pinned dependency
        pass
    with (
        contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError),
        asyncio.Runner(loop_factory=loop_factory) as run,
    ):
        reload = partial(reload_guard, engine, Path(args.config))  # SIGHUP: re-read [guard]
        run.run(serve(engine, policy=policy, milter=milter, reload=reload))
    return 0


async def _redis_master(config: GuardConfig) -> dict[str, object]:
    """Which Redis is master (and which Sentinel said so), for ``status``."""
    from mailwarden.guard.store.sentinel import RedisError, master_report

    try:
        found = await master_report(config.redis_url, max(config.redis_timeout, 1.0))
    except RedisError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {
        "master": found.master,
        "sentinel": found.said_by,
        "role": found.role,
        "replicas": found.replicas,
    }


def run_status(args: argparse.Namespace) -> int:
    config, _, _ = _config(args)

    async def job(store: Store) -> int:
        locks = await store.locks()
        holds = await store.holds()
        data: dict[str, object] = {"store": store.name, "locked": len(locks), "held": len(holds)}
        if config.store == "redis":
            data["redis"] = redis = await _redis_master(config)
        if args.format == "json":
            _print_json(data)
        else:
            console.print(
                f"store [bold]{store.name}[/]: reachable · {len(locks)} locked account(s) · "
                f"{len(holds)} held message(s)"
            )
            if config.store == "redis":
                said = f" (named by Sentinel {redis['sentinel']})" if redis.get("sentinel") else ""
                console.print(
                    f"redis master [bold]{redis['master']}[/]{said} · role {redis['role']} · "
                    f"{redis['replicas']} replica(s)"
                    if "master" in redis
                    else f"redis master: unknown ({redis['error']})"
                )
        return 1 if locks or holds else 0

    return _with_store(args, job)


def run_locked(args: argparse.Namespace) -> int:
    async def job(store: Store) -> int:
        locks = await store.locks()
        if args.format == "json":
            _print_json(
                [{"user": x.user, "reason": x.reason, "since": x.since, "by": x.by} for x in locks]
            )
            return 0
        table = Table("user", "since", "by", "reason")
        for x in locks:
            table.add_row(x.user, _when(x.since), x.by, x.reason)
        console.print(table)
        console.print(f"{len(locks)} locked")
        return 0

    return _with_store(args, job)


def run_held(args: argparse.Namespace) -> int:
    async def job(store: Store) -> int:
        holds = await store.holds()
        if args.format == "json":
            _print_json(
                [
                    {
                        "queue_id": h.queue_id,
                        "user": h.user,
                        "reason": h.reason,
                        "since": h.since,
                        "instance": h.instance,
                    }
                    for h in holds
                ]
            )
            return 0
        table = Table("queue id", "user", "held on", "since", "reason")
        for h in holds:
            table.add_row(h.queue_id, h.user, h.instance or "?", _when(h.since), h.reason)
        console.print(table)
        console.print(f"{len(holds)} held")
        return 0

    return _with_store(args, job)


def run_release(args: argparse.Namespace) -> int:
    from mailwarden.guard.actions import release

    config, _, _ = _config(args)

    async def job(store: Store) -> int:
        results = await release(store, config, args.key)
        if not results:
            raise InputError(f"{args.key}: no held message with this queue ID or user")
        for r in results:
            hold = r.hold
            if r.ok:
                console.print(f"[green]✓[/] {r.detail}", highlight=False)
            elif r.elsewhere:
                console.print(
                    f"[yellow]![/] {hold.queue_id} ({hold.user}) is held by the MTA of guard "
                    f"instance {hold.instance!r}, not by this one ({config.instance_name!r}); "
                    f"run on {hold.instance}: mailwarden guard -c {args.config} release "
                    f"{hold.queue_id}  (or set [guard] remote_postsuper)",
                    highlight=False,
                )
            else:
                console.print(f"[red]✗[/] {hold.queue_id}: {r.detail}", highlight=False)
        return 0 if all(r.ok for r in results) else 2

    return _with_store(args, job)


def run_unlock(args: argparse.Namespace) -> int:
    from mailwarden.guard.actions import Actor, Alerter, unlock_account

    config, _, _ = _config(args)
    locker = Locker(config.lock)  # before the store: a lock action that cannot run changes nothing

    async def job(store: Store) -> int:
        done = await unlock_account(store, locker, Alerter(config.alerts), args.user, Actor())
        result = done.action
        if not result.ok:
            raise MailwardenError(
                f"{args.user}: unlocked in the guard, but the lock action failed: {result.detail}",
                code="GUARD-UNLOCK-ACTION",
            )
        state = "unlocked" if done.found else "was not locked; lock cleared anyway"
        console.print(f"[green]✓[/] {args.user} {state} ({result.detail})")
        return 0

    return _with_store(args, job)


def run_lock(args: argparse.Namespace) -> int:
    from mailwarden.guard.actions import Actor, Alerter, lock_account

    config, _, _ = _config(args)
    locker = Locker(config.lock)  # before the store: a lock action that cannot run changes nothing

    async def job(store: Store) -> int:
        alerter = Alerter(config.alerts)
        result = await lock_account(store, locker, alerter, args.user, args.reason, Actor())
        mark = "[green]✓[/]" if result.ok else "[yellow]![/]"
        console.print(f"{mark} {args.user} locked ({result.detail})")
        return 0 if result.ok else 2

    return _with_store(args, job)


def run_history(args: argparse.Namespace) -> int:
    from mailwarden.guard.stages import normal_ref

    async def job(store: Store) -> int:
        if args.ref:  # the reference a refused sender quotes: look in all that is kept
            ref = normal_ref(args.ref)
            events = [e for e in await store.history(args.user, MAX_HISTORY) if _ref(e) == ref]
            if not events:
                raise InputError(
                    f"{args.user}: no history entry with reference {ref} (the last "
                    f"{MAX_HISTORY} entries of a user are kept; the JSON log keeps all)"
                )
        else:
            events = await store.history(args.user, max(1, min(args.limit, 1000)))
        if args.format == "json":
            _print_json(
                [
                    {
                        "when": e.when,
                        "action": e.action,
                        "ref": _ref(e),
                        "reason": e.reason,
                        "detail": e.detail,
                    }
                    for e in events
                ]
            )
            return 0
        table = Table("when", "action", "ref", "reason")
        for e in events:
            table.add_row(_when(e.when), e.action, _ref(e), e.reason)
        console.print(table)
        return 0

    return _with_store(args, job)


def _ref(event: Event) -> str:
    """The reference the sender was shown for this decision (none for admin actions)."""
    return event.detail.get("ref", "")
