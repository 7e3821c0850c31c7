"""The sockets the servers listen on, made alike, so that ``--host`` means the same to all of them."""

import ipaddress
import socket
from http.server import BaseHTTPRequestHandler


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
