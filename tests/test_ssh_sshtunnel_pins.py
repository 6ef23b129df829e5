"""The private names of sshtunnel that heron_remote/ssh/sshtunnel_backend.py builds on.

sshtunnel exposes its forward server and request handler only under private names. A release
that renames or reshapes them must fail here, saying what changed, before a user meets it.
"""

from __future__ import annotations

import logging
import socketserver
from typing import NoReturn

import pytest
import sshtunnel

_WHAT_TO_DO = (
    "heron_remote/ssh/sshtunnel_backend.py builds its tunnels on these private sshtunnel names: "
    "adapt it to this release, or pin sshtunnel below it in pyproject.toml."
)


def _fail(problems: list[str]) -> None:
    if problems:
        _gone(problems)


def _gone(problems: list[str]) -> NoReturn:
    version = getattr(sshtunnel, "__version__", "?")
    pytest.fail(f"sshtunnel {version} changed: " + "; ".join(problems) + ". " + _WHAT_TO_DO)


def test_the_forward_handler_is_a_request_handler_with_the_attributes_we_set() -> None:
    problems = []
    handler = getattr(sshtunnel, "_ForwardHandler", None)
    if not isinstance(handler, type):
        _gone(["sshtunnel._ForwardHandler is gone"])
    if not issubclass(handler, socketserver.BaseRequestHandler):
        problems.append("sshtunnel._ForwardHandler is no longer a socketserver.BaseRequestHandler")
    for attribute in ("remote_address", "logger"):  # we set both; its server reads them in handle_error
        if not hasattr(handler, attribute):
            problems.append(f"sshtunnel._ForwardHandler has no class attribute {attribute!r}")
    _fail(problems)


def test_the_threading_forward_server_takes_our_handler_and_logger_and_serves() -> None:
    server_class = getattr(sshtunnel, "_ThreadingForwardServer", None)
    if not isinstance(server_class, type):
        _gone(["sshtunnel._ThreadingForwardServer is gone"])
    problems = []
    for base in (socketserver.ThreadingMixIn, socketserver.TCPServer):
        if not issubclass(server_class, base):
            problems.append(f"sshtunnel._ThreadingForwardServer is no longer a {base.__name__}")
    _fail(problems)

    class Handler(sshtunnel._ForwardHandler):
        remote_address = ("127.0.0.1", 4242)
        logger = logging.getLogger("test")

    log = logging.getLogger("test.pins")
    try:
        server = server_class(("127.0.0.1", 0), Handler, logger=log)
    except TypeError as exc:
        _gone([f"sshtunnel._ThreadingForwardServer(address, handler, logger=...) fails: {exc}"])
    try:
        if server.logger is not log:
            problems.append("sshtunnel._ThreadingForwardServer ignores its logger= argument")
        if getattr(server, "remote_address", None) != ("127.0.0.1", 4242):
            problems.append("sshtunnel._ThreadingForwardServer no longer reads remote_address off its handler")
        if not hasattr(server, "daemon_threads"):
            problems.append("sshtunnel._ThreadingForwardServer has no daemon_threads")
        if not isinstance(server.server_address[1], int):
            problems.append("sshtunnel._ThreadingForwardServer.server_address has no port")
    finally:
        server.server_close()
    _fail(problems)
