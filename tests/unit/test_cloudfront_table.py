"""The CloudFront Function and its Python twin against the one table of requests (cloudfront/cases.json)."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mirrorkeeper.serve.routing import route

CLOUDFRONT = Path(__file__).resolve().parents[2] / "cloudfront"
CASES = json.loads((CLOUDFRONT / "cases.json").read_text())["cases"]


def test_the_cloudfront_function_passes_every_case_under_node() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: install Node.js (Debian package 'nodejs') to test the CloudFront Function")
    # WHEN the table runs through function.js as viewer-request events
    result = subprocess.run(
        [node, str(CLOUDFRONT / "run-cases.js")], capture_output=True, text=True, timeout=60, check=False
    )
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
