"""``serve-http`` and ``serve-ftp`` over IPv6 as well as IPv4, as real CLI servers on loopback:
``--host ::`` takes both families on one socket, ``--host ::1`` the IPv6 loopback. A machine
without an IPv6 loopback fails these tests rather than skipping them."""

import ftplib
import http.client
import io
import socket
from typing import Any

import pytest

from tests.support import BUCKET, serve_cli


def get(address: str, port: int, path: str, source: str | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(address, port, timeout=10, source_address=(source, 0) if source else None)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def fetch_over_ftp(address: str, port: int, path: str) -> tuple[str, bytes, list[str]]:
    """Log in from ``address``'s family, list '/' and RETR ``path`` through a passive data connection
    (ftplib sends PASV over IPv4 and EPSV over IPv6); the first passive reply, the bytes, the names."""
    ftp = ftplib.FTP(timeout=10)
    try:
        ftp.connect(address, port)
        ftp.login("anonymous", "mirror-test@example.org")
        passive = ftp.sendcmd("PASV" if ftp.af == socket.AF_INET else "EPSV")
        out = io.BytesIO()
        ftp.retrbinary(f"RETR {path}", out.write)
        return passive, out.getvalue(), ftp.nlst("/")
    finally:
        ftp.close()


@pytest.fixture
def mirror(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="pub/a.txt", Body=b"over both families", Metadata={"mtime": "1600000000"})


@pytest.mark.usefixtures("mirror")
def test_serve_http_on_the_ipv6_any_address_answers_ipv4_and_ipv6_clients(endpoint: str) -> None:
    with serve_cli("serve-http", endpoint, "--max-connections-per-ip", "1", host="::") as port:
        # WHEN a client asks over each family THEN both are answered by the one socket
        assert get("127.0.0.1", port, "/a.txt") == (200, b"over both families")
        assert get("::1", port, "/a.txt") == (200, b"over both families")
        # AND an IPv4 client, which the socket sees as ::ffff:127.0.0.2, is capped as 127.0.0.2
        with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=("127.0.0.2", 0)):
            assert get("127.0.0.1", port, "/a.txt", source="127.0.0.2")[0] == 503
            assert get("127.0.0.1", port, "/a.txt", source="127.0.0.3")[0] == 200
            assert get("::1", port, "/a.txt")[0] == 200


@pytest.mark.usefixtures("mirror")
def test_serve_http_on_the_ipv6_loopback(endpoint: str) -> None:
    with serve_cli("serve-http", endpoint, host="::1") as port:
        assert get("::1", port, "/a.txt") == (200, b"over both families")


@pytest.mark.usefixtures("mirror")
def test_serve_ftp_on_the_ipv6_any_address_serves_ipv4_and_ipv6_clients(endpoint: str) -> None:
    with serve_cli("serve-ftp", endpoint, host="::") as port:
        # WHEN an IPv4 client logs in THEN PASV names its IPv4 address (not ::ffff:...) and RETR works
        passive, body, names = fetch_over_ftp("127.0.0.1", port, "/a.txt")
        assert passive.startswith("227") and "(127,0,0,1," in passive
        assert (body, names) == (b"over both families", ["a.txt"])
        # AND an IPv6 client gets its data connections through EPSV
        passive, body, names = fetch_over_ftp("::1", port, "/a.txt")
        assert passive.startswith("229")
        assert (body, names) == (b"over both families", ["a.txt"])


@pytest.mark.usefixtures("mirror")
def test_serve_ftp_on_the_ipv6_loopback(endpoint: str) -> None:
    with serve_cli("serve-ftp", endpoint, host="::1") as port:
        passive, body, _ = fetch_over_ftp("::1", port, "/a.txt")
        assert passive.startswith("229") and body == b"over both families"
