"""`webinar-chat serve | migrate | demo | admin …` — thin commands over the rest."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import sys
from collections.abc import Iterator
from typing import Any, BinaryIO

from .settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(database_url=getattr(args, "database_url", None),
                             host=getattr(args, "host", None), port=getattr(args, "port", None))


def cmd_migrate(args: argparse.Namespace) -> int:
    from .store.migrate import migrate

    settings = _settings(args)
    migrate(settings.database_url)
    print(f"migrated {_redact(settings.database_url)} to head")
    return 0


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def _base_url(settings: Settings) -> str:
    host = "localhost" if settings.host in ("0.0.0.0", "127.0.0.1", "::") else settings.host
    return f"http://{host}:{settings.port}"


async def _with_store(settings: Settings, fn: Any) -> Any:
    from .store import open_store

    store = await open_store(settings.database_url)
    try:
        return await fn(store)
    finally:
        await store.close()


def _print_demo(info: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(info))
        return
    print(f"\nDemo chat: {info['url']}")
    for user in info["users"]:
        print(f"  {user['role']:<9} {user['email']:<18} password: {user['password']}")
    print()


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import ensure_demo
    from .store.migrate import migrate

    settings = _settings(args)
    migrate(settings.database_url)
    info = asyncio.run(_with_store(settings, lambda s: ensure_demo(s, _base_url(settings))))
    _print_demo(info, args.json)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .logs import configure_logging
    from .server.runner import build_server, tune_gc
    from .store.migrate import migrate

    settings = _settings(args)
    # Before the migration and the demo data, so that their log lines use the pipeline too
    # (build_server installs the same configuration again).
    configure_logging(settings.log_level, json=settings.log_json)
    if settings.is_sqlite or args.migrate:
        migrate(settings.database_url)
    if args.demo:
        from .demo import ensure_demo

        info = asyncio.run(_with_store(settings, lambda s: ensure_demo(s, _base_url(settings))))
        _print_demo(info, False)
    if args.workers > 1:
        from .server.workers import serve_workers

        return serve_workers(settings, args.workers)
    server = build_server(settings)
    tune_gc()
    server.run()
    return 0


async def _export(store: Any, webinar_id: int, fmt: Any, out: BinaryIO) -> None:
    """The transcript (transcript.py) from the store to `out`, a page at a time. Blocking
    writes are fine here: the command's event loop has nothing else to serve."""
    from .store.store import NotFound, now_utc
    from .transcript import transcript_chunks

    webinar = await store.get_webinar(webinar_id)
    if webinar is None:
        raise NotFound("webinar")
    async for chunk in transcript_chunks(store, webinar, fmt, now_utc()):
        out.write(chunk)
    out.flush()


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[BinaryIO]:
    """stdout, or a new file at `path` that is removed again if the block fails (an unknown
    webinar, a database error half-way): a cut file is never left behind to be taken for a
    whole transcript."""
    if path is None:
        yield sys.stdout.buffer
        return
    from pathlib import Path

    target = Path(path)
    try:
        with target.open("wb") as out:
            yield out
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def cmd_export(args: argparse.Namespace) -> int:
    """`admin export`: the transcript itself on stdout, or a JSON line naming `--output`."""
    from .store.store import StoreError

    settings = _settings(args)
    try:
        with _output(args.output) as out:
            asyncio.run(_with_store(settings, lambda store: _export(store, args.webinar_id,
                                                                    args.format, out)))
    except StoreError as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), file=sys.stderr)
        return 1
    if args.output is not None:
        print(json.dumps({"webinar_id": args.webinar_id, "format": args.format,
                          "output": args.output}))
    return 0


def cmd_admin(args: argparse.Namespace) -> int:
    from .auth.passwords import hash_password
    from .store import Store

    settings = _settings(args)

    async def run(store: Store) -> Any:
        what = args.what
        if what == "create-agency":
            return {"id": await store.create_agency(args.name)}
        if what == "create-client":
            return {"id": await store.create_client(args.agency_id, args.name)}
        if what == "create-webinar":
            w = await store.create_webinar(args.client_id, args.title,
                                           chat_mode=args.mode or (
                                               "read_only" if args.closed else "everyone"),
                                           slow_mode_seconds=args.slow_mode)
            return {"id": w.id}
        if what == "update-webinar":
            # Stored with its ROOM change; running servers deliver it with their next feed read
            # (a reconnect, or the bus's safety poll) — use the API for an instant change.
            mode = args.mode
            if mode is None and args.chat_open is not None:
                mode = "everyone" if args.chat_open else "read_only"
            w, _ = await store.update_webinar(args.webinar_id, chat_mode=mode,
                                              slow_mode_seconds=args.slow_mode)
            return {"id": w.id, "chat_open": w.chat_open, "chat_mode": w.chat_mode,
                    "slow_mode_seconds": w.slow_mode_seconds}
        if what == "create-user":
            # The API's rules for a new account (password strength, a visible display name).
            from pydantic import ValidationError

            from .server.errors import validation_message
            from .server.schemas import CreateUser
            try:
                new = CreateUser.model_validate({"email": args.email, "password": args.password,
                                                 "display_name": args.display_name,
                                                 "is_admin": args.admin})
            except ValidationError as exc:
                raise SystemExit(f"webinar-chat: {validation_message(exc)}") from None
            from .server.text_rules import RESERVED_DISPLAY_NAME, display_name_key
            if await store.staff_display_name_taken(display_name_key(new.display_name),
                                                    display_name_key):
                raise SystemExit(f"webinar-chat: display_name: {RESERVED_DISPLAY_NAME}")
            user = await store.create_user(new.email, hash_password(new.password),
                                           new.display_name, is_admin=new.is_admin)
            return {"id": user.id}
        if what == "register":
            reg = await store.register(args.webinar_id, args.user_id, args.role)
            return {"webinar_id": reg.webinar_id, "user_id": reg.user_id, "role": reg.role}
        if what == "ban":
            await store.set_banned(args.webinar_id, args.user_id, not args.unban)
            return {"ok": True}
        if what == "list":
            return {"agencies": await store.list_agencies(), "clients": await store.list_clients(),
                    "webinars": [dataclasses.asdict(w) for w in await store.list_webinars()]}
        raise SystemExit(f"unknown admin command {what}")

    from .store.store import StoreError

    try:
        result = asyncio.run(_with_store(settings, run))
    except (StoreError, ValueError) as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), file=sys.stderr)
        return 1
    print(json.dumps(result, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="webinar-chat", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def db_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--database-url", help="default: $DATABASE_URL or sqlite:///./webinar-chat.db")

    serve = sub.add_parser("serve", help="run the HTTP + WebSocket server")
    db_arg(serve)
    serve.add_argument("--host", help="default: $HOST or 127.0.0.1")
    serve.add_argument("--port", type=int, help="default: $PORT or 8000")
    serve.add_argument("--demo", action="store_true", help="create the demo data first")
    serve.add_argument("--migrate", action="store_true",
                       help="run migrations first (always done for SQLite)")
    serve.add_argument("--workers", type=int, default=1,
                       help="server processes sharing the port (needs BUS_URL); default 1")
    serve.set_defaults(fn=cmd_serve)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    db_arg(migrate)
    migrate.set_defaults(fn=cmd_migrate)

    demo = sub.add_parser("demo", help="create a demo agency, webinar, host and two attendees")
    db_arg(demo)
    demo.add_argument("--host", help="host used in the printed URL")
    demo.add_argument("--port", type=int, help="port used in the printed URL")
    demo.add_argument("--json", action="store_true", help="print one JSON object")
    demo.set_defaults(fn=cmd_demo)

    admin = sub.add_parser("admin", help="manage agencies, clients, webinars, users")
    admin_sub = admin.add_subparsers(dest="what", required=True)
    p = admin_sub.add_parser("create-agency")
    p.add_argument("name")
    p = admin_sub.add_parser("create-client")
    p.add_argument("agency_id", type=int)
    p.add_argument("name")
    p = admin_sub.add_parser("create-webinar")
    p.add_argument("client_id", type=int)
    p.add_argument("title")
    p.add_argument("--closed", action="store_true", help="the same as --mode read_only")
    p.add_argument("--mode", choices=("everyone", "hosts_only", "read_only"))
    p.add_argument("--slow-mode", type=int, default=0)
    p = admin_sub.add_parser("update-webinar")
    p.add_argument("webinar_id", type=int)
    p.add_argument("--chat-open", type=lambda s: s.lower() in ("1", "true", "yes", "open"))
    p.add_argument("--mode", choices=("everyone", "hosts_only", "read_only"))
    p.add_argument("--slow-mode", type=int)
    p = admin_sub.add_parser("create-user")
    p.add_argument("email")
    p.add_argument("password")
    p.add_argument("display_name")
    p.add_argument("--admin", action="store_true")
    p = admin_sub.add_parser("register")
    p.add_argument("webinar_id", type=int)
    p.add_argument("user_id", type=int)
    p.add_argument("--role", default="attendee", choices=["attendee", "moderator", "host"])
    p = admin_sub.add_parser("ban")
    p.add_argument("webinar_id", type=int)
    p.add_argument("user_id", type=int)
    p.add_argument("--unban", action="store_true")
    admin_sub.add_parser("list")
    p = admin_sub.add_parser("export", help="a webinar's whole transcript, deleted messages "
                             "included (docs/export.md)")
    p.add_argument("--webinar-id", type=int, required=True)
    p.add_argument("--format", choices=["json", "csv"], default="json")
    p.add_argument("--output", help="file to write (default: stdout)")
    for p in admin_sub.choices.values():
        db_arg(p)
    admin.set_defaults(fn=cmd_admin)
    admin_sub.choices["export"].set_defaults(fn=cmd_export)  # streams; prints no JSON result
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
