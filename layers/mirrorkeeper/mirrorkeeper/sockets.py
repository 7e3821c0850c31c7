"""The sockets the servers listen on, made alike, so that ``--host`` means the same to all of them."""

import ipaddress
import logging
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)


def address_family(host: str) -> socket.AddressFamily:
    """IPv6 for an IPv6 literal ('::', '::1'), IPv4 for anything else, host names included."""
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return socket.AF_INET


def both_families(sock: socket.socket) -> None:
    """Before ``bind``: an IPv6 socket on '::' then takes IPv4 clients too (as ::ffff:a.b.c.d), and one on
    an IPv4-mapped address binds at all, whatever the host's ``net.ipv6.bindv6only`` says (an image does
    not control it). An IPv4 socket is left alone."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket listening on ``host``:``port``, as :func:`both_families` says; OSError (errno kept) when
    it cannot be bound."""
    family = address_family(host)
    return socket.create_server((host, port), family=family, dualstack_ipv6=family == socket.AF_INET6)


class NamedRequestHandler(BaseHTTPRequestHandler):
    """What every HTTP server of ours answers with: HTTP/1.1, ``Server: mirrorkeeper`` and no more
    (http.server would append the Python version)."""

    protocol_version = "HTTP/1.1"
    server_version = "mirrorkeeper"

    def version_string(self) -> str:
        return self.server_version


class DualStackHTTPServer(ThreadingHTTPServer):
    """Our threaded HTTP servers' base: it listens on ``address`` as :func:`listening_socket` does
    (an IPv6 host by IPv6, and '::' for IPv4 clients too)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler_class: type[BaseHTTPRequestHandler]) -> None:
        self.address_family = address_family(address[0])  # TCPServer makes its socket with this
        super().__init__(address, handler_class)

    def server_bind(self) -> None:
        both_families(self.socket)
        super().server_bind()

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exception(), ConnectionError | TimeoutError):
            # A client that resets or stalls is the network's doing, not a fault worth a traceback.
            log.debug("connection lost", extra={"client": client_address[0]})
            return
        super().handle_error(request, client_address)
