"""The public surface: what ``__all__`` promises exists, typed and documented."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import sqla_notify


def test_all_names_exist_and_are_documented() -> None:
    assert sorted(sqla_notify.__all__) == list(sqla_notify.__all__)
    for name in sqla_notify.__all__:
        obj = getattr(sqla_notify, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{name} has no docstring"
            for member, value in vars(obj).items():
                if not member.startswith("_") and inspect.isfunction(value):
                    assert inspect.getdoc(value), f"{name}.{member} has no docstring"


def test_no_private_names_leak() -> None:
    public = {
        n for n in dir(sqla_notify)
        if not n.startswith("_") and not inspect.ismodule(getattr(sqla_notify, n))  # e.g. .fastapi
    }
    assert public == set(sqla_notify.__all__)


def test_typed_package() -> None:
    assert (Path(sqla_notify.__file__).parent / "py.typed").exists()
    assert isinstance(sqla_notify.__version__, str)


def test_fastapi_module_surface() -> None:
    from sqla_notify import fastapi

    assert fastapi.__all__ == (
        "ALL", "Authenticate", "Credentials", "NotifyRouter", "RouterStats", "bearer_token", "notify_connection",
        "notify_origin", "notify_router", "snapshot_cursor",
    )
    for name in fastapi.__all__:
        if inspect.isfunction(getattr(fastapi, name)):
            assert inspect.getdoc(getattr(fastapi, name)), f"sqla_notify.fastapi.{name} has no docstring"
    assert inspect.getdoc(fastapi.notify_router) and inspect.getdoc(fastapi)


def test_redis_module_surface() -> None:
    from sqla_notify import redis

    assert redis.__all__ == ("RedisBroker",)
    assert inspect.getdoc(redis) and inspect.getdoc(redis.RedisBroker)
    assert issubclass(redis.RedisBroker, sqla_notify.Broker)


def test_brokers_know_only_the_broker_contract() -> None:
    """The hub pulls from brokers: no broker module imports the hub, the subscribers or the
    wire protocol (only the hub numbers, frames and fans out)."""
    package = Path(sqla_notify.__file__).parent
    for module in ("_brokers/base.py", "_brokers/outbox.py", "redis.py", "postgres.py"):
        tree = ast.parse((package / module).read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not {m for m in imported if m.split(".")[0] == "_hub"}, (module, imported)
    assert {"Batch", "Broker", "Gap", "Ready"} <= set(sqla_notify.__all__)
