"""How the front ends name their clients and their own address: HTTP's per-client cap key, the
socket family a ``--host`` needs, the URL they log, and what they say when they cannot listen."""

import errno
import socket

import pytest

from mirrorkeeper.commands.serve_common import cannot_listen, listening_url
from mirrorkeeper.serve.http import client_key
from mirrorkeeper.sockets import address_family


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),  # an IPv4 client on a dual-stack socket is that IPv4 client
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),  # the same host's /64: one client
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::1", "::/64"),
        ("fe80::1%eth0", "fe80::/64"),
    ],
)
def test_the_per_client_cap_counts_ipv4_addresses_and_ipv6_64s(host: str, key: str) -> None:
    assert client_key(host) == key


@pytest.mark.parametrize(
    ("host", "family"),
    [
        ("::", socket.AF_INET6),
        ("::1", socket.AF_INET6),
        ("0.0.0.0", socket.AF_INET),
        ("127.0.0.1", socket.AF_INET),
        ("", socket.AF_INET),
        ("localhost", socket.AF_INET),
    ],
)
def test_an_ipv6_literal_gets_an_ipv6_socket_and_anything_else_ipv4(host: str, family: socket.AddressFamily) -> None:
    assert address_family(host) == family


def test_the_logged_url_brackets_an_ipv6_host() -> None:
    assert listening_url("http", ("::", 8080, 0, 0)) == "http://[::]:8080/"
    assert listening_url("ftp", ("127.0.0.1", 2121)) == "ftp://127.0.0.1:2121/"


@pytest.mark.parametrize(
    ("host", "port", "error", "says"),
    [
        ("127.0.0.1", 2121, OSError(errno.EADDRINUSE, "in use"), "--port 2121: the port is already in use"),
        ("203.0.113.1", 2121, OSError(errno.EADDRNOTAVAIL, "nope"), "203.0.113.1 is not an address of this host"),
        ("0.0.0.0", 21, PermissionError(errno.EACCES, "denied"), "ports below 1024 need root"),
        ("nowhere.invalid", 21, socket.gaierror(socket.EAI_NONAME, "unknown"), "nowhere.invalid is neither"),
        ("::", 21, OSError(errno.EAFNOSUPPORT, "no v6"), "this host has no IPv6"),
        ("::", 21, OSError(errno.ENOBUFS, "No buffer space available"), "No buffer space available; fix --host or"),
    ],
)
def test_an_address_that_cannot_be_bound_says_which_setting_to_change(
    host: str, port: int, error: OSError, says: str
) -> None:
    message = cannot_listen(host, port, error)
    assert message.startswith(f"cannot listen on --host {host} --port {port}: ") and says in message
    assert "\n" not in message
