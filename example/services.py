"""The services the example app needs, already running on the machine: MariaDB and RabbitMQ.

Missing services fail loudly with the command that starts them; nothing here skips.
"""

from __future__ import annotations

import socket

import pymysql

MARIADB = ("127.0.0.1", 3306)
RABBITMQ = ("127.0.0.1", 5672)
BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"
START = {
    "MariaDB": "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd",
    "RabbitMQ": "rabbitmq-server -detached",
}


class ServiceMissing(RuntimeError):
    """A service the example app needs is not reachable."""


def reachable(address: tuple[str, int]) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(address) == 0


def require() -> None:
    """Fail with the start command when MariaDB or RabbitMQ is not listening."""
    for name, address in (("MariaDB", MARIADB), ("RabbitMQ", RABBITMQ)):
        if not reachable(address):
            raise ServiceMissing(f"{name} is not listening on {address[0]}:{address[1]}; start it: {START[name]}")


def mariadb(database: str | None = None) -> pymysql.connections.Connection:
    return pymysql.connect(host=MARIADB[0], port=MARIADB[1], user="root", password="", database=database,
                           autocommit=True)  # fmt: skip


def create_database(name: str) -> None:
    with mariadb() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4")


def drop_database(name: str) -> None:
    with mariadb() as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cur.execute(f"DROP DATABASE IF EXISTS `test_{name}`")


def delete_queue(name: str) -> None:
    """Remove a Celery queue from RabbitMQ (kombu comes with celery)."""
    from kombu import Connection

    with Connection(BROKER_URL, connect_timeout=5) as conn:
        try:
            conn.default_channel.queue_delete(name)
        except Exception:  # noqa: BLE001 (a queue that was never declared is fine)
            pass
