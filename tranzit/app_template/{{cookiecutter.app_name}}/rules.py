"""Websocket rules of the {{ cookiecutter.app_name }} app: ``rule(conn, *args)``; the return value is the reply."""

from tranzit.ws import Connection


async def hello(conn: Connection) -> str:
    """``{{ cookiecutter.app_name }}_hello|`` is answered ``{{ cookiecutter.app_name }}_hello|<greeting>``."""
    who = conn.user if conn.user is not None else "there"
    return f"Hello {who}, from the {{ cookiecutter.app_name }} app"
