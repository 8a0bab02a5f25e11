"""The `ai-broker` command. Heavy imports happen inside each command: `worker` and `web` must
apply gevent's monkey-patching before anything opens a socket or starts a thread."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.config import Settings


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("worker", "web"):
        prepare_gevent_process()

    from app.config import ConfigError, Settings
    from app.logs import configure_logging
    from app.store.base import StoreError

    try:
        settings = Settings.from_env()
        configure_logging(settings.log_level, settings.log_format, process=args.command)
        return int(args.run(settings, args) or 0)
    except ConfigError as exc:
        sys.stderr.write(f"ai-broker {args.command}: configuration error: {exc}\n")
        return 2
    except StoreError as exc:
        sys.stderr.write(f"ai-broker {args.command}: store error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130


def prepare_gevent_process() -> None:
    """gevent for the worker's greenlets and the receiver's connections, before anything opens
    a socket or starts a thread."""
    from gevent import monkey

    # select stays the real one: our libraries only poll it with a zero timeout (httpcore
    # asks whether each pooled connection is still open, on every request), which gevent's
    # version turns into a hub switch and a timer each time. Everything that blocks goes
    # through sockets, locks and sleeps, which are patched, and psycopg's waits are made
    # gevent's (it would otherwise block every greenlet while a query runs).
    monkey.patch_all(select=False)
    from app.store.psycopg_rpc import cooperate_with_gevent

    cooperate_with_gevent()


def _web(settings: Settings, _: argparse.Namespace) -> int:
    from app.web.server import run_web

    run_web(settings)
    return 0


def _worker(settings: Settings, _: argparse.Namespace) -> int:
    from tasks.worker import run_worker

    run_worker(settings)
    return 0


def _console(settings: Settings, _: argparse.Namespace) -> int:
    from app.console_cli import run_console

    run_console(settings)
    return 0


def _console_hash_password(_: Settings, args: argparse.Namespace) -> int:
    import getpass
    import json

    from console.accounts import MIN_PASSWORD_CHARS, hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("Operator password: ")
        if getpass.getpass("Again: ") != password:
            sys.stderr.write("ai-broker console hash-password: the two passwords differ\n")
            return 2
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < MIN_PASSWORD_CHARS:
        sys.stderr.write(
            f"ai-broker console hash-password: use at least {MIN_PASSWORD_CHARS} characters\n"
        )
        return 2
    encoded = hash_password(password)
    # A ready line for [console.operators]; json's quoting is valid TOML for these strings.
    sys.stdout.write(f"{json.dumps(args.name)} = {json.dumps(encoded)}\n")
    return 0


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from app.demo import run_demo

    return run_demo(
        settings,
        duration_s=args.duration,
        conversations=args.conversations,
        delay_scale=args.delay_scale,
    )


def _doctor(settings: Settings, _: argparse.Namespace) -> int:
    from app.doctor import run_doctor

    return run_doctor(settings)


def _db_init(settings: Settings, args: argparse.Namespace) -> int:
    from app.bootstrap import build_store

    dsn = args.dsn or settings.database_url or settings.supabase_db_url
    if dsn or settings.uses_supabase:
        from app.store.postgres_migrations import apply_migrations, migration_sql

        if not dsn:
            sys.stdout.write(migration_sql())
            sys.stderr.write(
                "\nThe SQL above is the store's migration. Run it in the Supabase SQL editor, "
                "or give a Postgres connection string (DATABASE_URL, SUPABASE_DB_URL or --dsn) "
                "to apply it.\n"
            )
            return 0
        applied = apply_migrations(dsn)
        sys.stdout.write(f"migrations applied: {', '.join(applied) or 'none (up to date)'}\n")
        if not (settings.uses_postgres or settings.uses_supabase):
            return 0
    store = build_store(settings, pool_size=1)
    try:
        store.init_schema()
    finally:
        store.close()
    sys.stdout.write(f"schema ready in {settings.store_description}\n")
    return 0


def _brokers_seed(settings: Settings, args: argparse.Namespace) -> int:
    from app.bootstrap import build_store
    from app.domain.personas import PERSONAS

    store = build_store(settings, pool_size=1)
    try:
        store.init_schema()
        inserted = store.seed_brokers(PERSONAS, max_concurrent_chats=args.capacity)
    finally:
        store.close()
    sys.stdout.write(f"{inserted} broker(s) added, {len(PERSONAS) - inserted} already present\n")
    return 0


def _intake_replay(settings: Settings, args: argparse.Namespace) -> int:
    from app.bootstrap import build_services, prepare_store

    services = build_services(settings)
    buffer = services.intake_buffer
    if buffer is None:
        sys.stderr.write("ai-broker intake replay: no REDIS_URL, so there is no intake buffer\n")
        return 2
    if buffer.rejected() == 0:
        sys.stdout.write("nothing is parked: there is nothing to put back\n")
        return 0
    try:
        prepare_store(services.store)
        # The audit names the account that ran the command, as the console names its operator.
        actor = f"cli:{_login_name()}"
        result = services.operations.replay_parked(actor=actor, reason=args.reason)
    finally:
        services.analytics.close()
        services.store.close()
    if not result.ok:
        sys.stderr.write(f"ai-broker intake replay: {result.message}\n")
        return 1
    sys.stdout.write(f"{result.message} ({buffer.depth()} waiting)\n")
    return 0


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ai-broker", description="NextNest AI mortgage brokers for Chatwoot"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("web", help="the webhook and lead-form receiver").set_defaults(run=_web)
    commands.add_parser("worker", help="the reply pipeline worker").set_defaults(run=_worker)
    console = commands.add_parser("console", help="the Streamlit operations console")
    console.set_defaults(run=_console)
    console_commands = console.add_subparsers(dest="console_command", metavar="SUBCOMMAND")
    hash_password = console_commands.add_parser(
        "hash-password",
        help="an operator account's line for [console.operators] (password from stdin)",
    )
    hash_password.add_argument("name", help="the operator's name, as the audit log shows it")
    hash_password.set_defaults(run=_console_hash_password)
    demo = commands.add_parser("demo", help="everything, with local sandboxes and traffic")
    demo.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    demo.add_argument("--conversations", type=int, default=6, help="conversations at a time")
    demo.add_argument(
        "--delay-scale", type=float, default=None, help="RESPONSE_DELAY_SCALE for the demo"
    )
    demo.set_defaults(run=_demo)
    commands.add_parser("doctor", help="check every configured dependency").set_defaults(
        run=_doctor
    )
    db = commands.add_parser("db", help="store schema").add_subparsers(
        dest="db_command", required=True, metavar="SUBCOMMAND"
    )
    init = db.add_parser(
        "init", help="create the schema (PostgreSQL: apply the migrations; Supabase: or print them)"
    )
    init.add_argument(
        "--dsn", default=None, help="PostgreSQL connection string (default: DATABASE_URL)"
    )
    init.set_defaults(run=_db_init)
    brokers = commands.add_parser("brokers", help="broker personas").add_subparsers(
        dest="brokers_command", required=True, metavar="SUBCOMMAND"
    )
    seed = brokers.add_parser("seed", help="insert the five personas if absent")
    seed.add_argument("--capacity", type=int, default=100, help="max concurrent chats each")
    seed.set_defaults(run=_brokers_seed)
    intake = commands.add_parser("intake", help="the Redis intake buffer").add_subparsers(
        dest="intake_command", required=True, metavar="SUBCOMMAND"
    )
    replay = intake.add_parser(
        "replay", help="put messages a worker parked back in the buffer (docs/runbook.md)"
    )
    replay.add_argument(
        "--reason",
        default="put back from the command line",
        help="why, for the audit log (default: %(default)s)",
    )
    replay.set_defaults(run=_intake_replay)
    return parser


if __name__ == "__main__":
    sys.exit(main())
