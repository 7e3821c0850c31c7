"""The CloudFront Function and its Python twin against the one table of requests (cloudfront/cases.json)."""

import itertools
import json
import posixpath
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

from mirrorkeeper.serve.routing import route

CLOUDFRONT = Path(__file__).resolve().parents[2] / "cloudfront"
CASES = json.loads((CLOUDFRONT / "cases.json").read_text())["cases"]
# Every way to spell a segment that resolution must tell apart: names (one with a plus), dot segments
# plain, encoded and half-encoded, a double-encoded one (a name), three dots (a name), and the
# empty segment of "//". Every path of up to four of them: about 16,000 requests.
SPELLINGS = ("a", "b+c", ".", "..", "%2e", "%2E%2e", ".%2E", "%2e.", "%252e%252e", "...", "")
EVERY_PATH = ["/" + "/".join(parts) for n in range(1, 5) for parts in itertools.product(SPELLINGS, repeat=n)]


def run_node(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: install Node.js (Debian package 'nodejs') to test the CloudFront Function")
    return subprocess.run(
        [node, str(CLOUDFRONT / "run-cases.js"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_cloudfront_function_passes_every_case_under_node() -> None:
    # WHEN the table runs through function.js as viewer-request events
    result = run_node()
    # THEN every case passes, and the runner saw all of them
    summary = json.loads(result.stdout)
    assert summary["failures"] == [] and result.returncode == 0, result.stderr
    assert summary["cases"] == summary["passed"] == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_serve_http_routes_every_case_as_cloudfront_does(case: dict[str, object]) -> None:
    routed = route(str(case["request"]))
    assert routed.status == case["status"]
    if routed.ok:
        assert (routed.origin_uri, routed.path) == (case["origin_uri"], case["path"])


def test_no_spelling_of_a_path_climbs_out_or_keeps_a_dot_segment() -> None:
    # posixpath resolves the decoded path below names of its own, so a climb shows as losing one
    base = "/" + "/".join(f"above{i}" for i in range(5))
    for request in EVERY_PATH:
        decoded = unquote(request)
        resolved = posixpath.normpath(base + decoded)
        routed = route(request)
        if not (resolved + "/").startswith(base + "/"):
            assert routed.status == 400, request
            continue
        # THEN the route is posixpath's resolution, and a final "", "." or ".." keeps a directory URL
        assert routed.ok, request
        assert routed.path.rstrip("/") == resolved[len(base) + 1 :], request
        assert routed.is_directory == (routed.path == "" or decoded.rsplit("/", 1)[1] in ("", ".", "..")), request


def test_the_twins_route_every_spelling_alike() -> None:
    # WHEN every path of the spellings goes through function.js and through routing.py
    result = run_node("--route", stdin=json.dumps(EVERY_PATH))
    assert result.returncode == 0, result.stderr
    by_node = json.loads(result.stdout)
    # THEN both refuse the same ones and send the others to the same origin URI
    for request, cloudfront in zip(EVERY_PATH, by_node, strict=True):
        routed = route(request)
        assert cloudfront == ({"status": 200, "uri": routed.origin_uri} if routed.ok else {"status": routed.status})
