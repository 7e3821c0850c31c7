"""What ships: the Lambda layer (``make build``: pip installs layers/mirrorkeeper) and the container
image (layers/mirrorkeeper/Dockerfile: ``pip install '.[ftp]'`` of the same directory) carry the
runtime package and nothing of the development tools (rsync daemon, service launcher, sample
trees, the demo)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from tests.template.cfn import ROOT

PACKAGE_DIR = ROOT / "layers" / "mirrorkeeper"
# The development package's own modules, by file name: one of them shipped would sit at the runtime
# package's top (a runtime module may share a name deeper down: serve/rsyncd.py runs the daemon in
# production, mirrorkeeper_dev/rsyncd.py plays the upstream in tests).
DEV_MODULES = {p.name for p in (ROOT / "devtools" / "mirrorkeeper_dev").glob("*.py")} - {"__init__.py"}


def test_the_shipped_wheel_holds_the_runtime_package_only(tmp_path: Path) -> None:
    # GIVEN the wheel both the layer build and the image install build from layers/mirrorkeeper
    # (built from a copy: setuptools writes its build/ directory beside the sources)
    source = shutil.copytree(PACKAGE_DIR, tmp_path / "source", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(source), "-w", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("mirrorkeeper-*.whl")
    names = [n for n in zipfile.ZipFile(wheel).namelist() if not n.split("/")[0].endswith(".dist-info")]
    # THEN it holds the mirrorkeeper package, with its deployment units, and no development module
    assert {n.split("/")[0] for n in names} == {"mirrorkeeper"}
    modules = {Path(n).stem for n in names if n.endswith(".py")}
    assert {n.removeprefix("mirrorkeeper/") for n in names if n.count("/") == 1} & DEV_MODULES == set()
    assert {"run", "workflow", "served", "state"} <= modules
    # and the runtime package declares no development extra
    metadata = zipfile.ZipFile(wheel).read(next(n for n in zipfile.ZipFile(wheel).namelist() if "METADATA" in n))
    assert b"moto" not in metadata


def test_the_image_and_the_layer_are_built_from_the_runtime_package_alone(template: dict[str, Any]) -> None:
    # The image's build context and the layer's content are the runtime package's directory...
    assert template["Resources"]["MirrorkeeperLayer"]["Properties"]["ContentUri"].rstrip("/") == "layers/mirrorkeeper"
    dockerfile = (PACKAGE_DIR / "Dockerfile").read_text()
    copied = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    assert copied == ["pyproject.toml", "mirrorkeeper"]
    # ...where no development module lives.
    assert {p.name for p in (PACKAGE_DIR / "mirrorkeeper").glob("*.py")} & DEV_MODULES == set()
    assert not [p for p in PACKAGE_DIR.rglob("*.py") if "mirrorkeeper_dev" in p.read_text()]
