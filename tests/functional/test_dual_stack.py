"""``serve-http`` and ``serve-ftp`` over IPv6 as well as IPv4, as real CLI servers on loopback:
``--host ::`` takes both families on one socket, ``--host ::1`` the IPv6 loopback. A machine
without an IPv6 loopback fails these tests rather than skipping them."""

import ftplib
import http.client
import io
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import BUCKET, serve_cli

REPO = Path(__file__).resolve().parents[2]
BINDV6ONLY = Path("/proc/sys/net/ipv6/bindv6only")


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


@pytest.mark.usefixtures("mirror")
def test_serve_ftp_refuses_pasv_to_an_ipv6_client_and_serves_it_through_epsv(endpoint: str) -> None:
    with serve_cli("serve-ftp", endpoint, "--masquerade-address", "192.0.2.10", host="::") as port:
        ftp = ftplib.FTP(timeout=10)
        try:
            ftp.connect("::1", port)
            ftp.login("anonymous", "mirror-test@example.org")
            # WHEN an IPv6 client asks for PASV THEN it is told to use EPSV, and given no IPv4 address to reach
            with pytest.raises(ftplib.error_temp, match=r"^425 Use EPSV"):
                ftp.sendcmd("PASV")
            # AND EPSV gives it its data connection (ftplib uses EPSV over IPv6)
            out = io.BytesIO()
            ftp.retrbinary("RETR /a.txt", out.write)
            assert out.getvalue() == b"over both families"
        finally:
            ftp.close()
        # AND an IPv4 client on the same socket is sent the masquerade address (ftplib connects to the
        # control connection's address anyway)
        passive, body, _ = fetch_over_ftp("127.0.0.1", port, "/a.txt")
        assert passive.startswith("227") and "(192,0,2,10," in passive
        assert body == b"over both families"


def test_both_servers_on_the_ipv6_any_address_serve_ipv4_clients_whatever_bindv6only_says(
    request: pytest.FixtureRequest,
) -> None:
    if BINDV6ONLY.read_text().strip() != "1":
        # This host's IPv6 sockets take IPv4 too unless told otherwise: run the test again where they do
        # not, in a network namespace of its own whose bindv6only is 1 (a sysctl of the namespace).
        rerun_where_ipv6_sockets_are_ipv6_only(request.node.nodeid)
        return
    request.getfixturevalue("mirror")
    endpoint = request.getfixturevalue("endpoint")
    with serve_cli("serve-ftp", endpoint, host="::") as ftp_port, serve_cli("serve-http", endpoint, host="::") as port:
        # WHEN an IPv4 client logs in THEN it is served, its data port bound on its ::ffff: address
        passive, body, _ = fetch_over_ftp("127.0.0.1", ftp_port, "/a.txt")
        assert passive.startswith("227") and "(127,0,0,1," in passive and body == b"over both families"
        assert fetch_over_ftp("::1", ftp_port, "/a.txt")[1] == b"over both families"
        assert get("127.0.0.1", port, "/a.txt") == get("::1", port, "/a.txt") == (200, b"over both families")


def rerun_where_ipv6_sockets_are_ipv6_only(nodeid: str) -> None:
    usable = os.geteuid() == 0 and shutil.which("ip") and shutil.which("unshare")
    if not usable or subprocess.run(["unshare", "--net", "true"], check=False).returncode:
        pytest.skip("needs root, ip and unshare to make a network namespace whose bindv6only is 1")
    setup = 'ip link set lo up && echo 1 > /proc/sys/net/ipv6/bindv6only && exec "$@"'
    inner = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", nodeid]
    result = subprocess.run(
        ["unshare", "--net", "sh", "-c", setup, "sh", *inner],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout, result.stdout[-2000:]
