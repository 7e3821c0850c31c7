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

import pytest

from mirrorkeeper_dev import lambda_rsync
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


def test_the_layers_rsync_loads_its_own_libraries_and_needs_no_newer_glibc_than_the_runtime(tmp_path: Path) -> None:
    # GIVEN the layer's rsync as the layer build bundles it
    written = lambda_rsync.bundle(tmp_path, Path(str(shutil.which("rsync"))))
    # THEN run with nothing of this machine's environment, every library but glibc's own is the bundle's
    traced = subprocess.run(
        [str(tmp_path / "bin" / "rsync")],
        env={"LD_TRACE_LOADED_OBJECTS": "1"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    loaded = dict(line.strip().split(" => ") for line in traced.splitlines() if " => " in line)
    assert loaded and all(
        path.startswith(f"{tmp_path}/bin/../rsync/lib/")
        for name, path in loaded.items()
        if not lambda_rsync.GLIBC_LIBRARIES.match(name)
    ), traced
    # AND each file asks for glibc 2.34 at most (Amazon Linux 2023, the python3.13 runtime's)
    wrapper = tmp_path / "bin" / "rsync"
    assert all(lambda_rsync.glibc_needed(path) <= (2, 34) for path in written if path != wrapper)
    assert lambda_rsync.glibc_needed(Path(sys.executable).resolve()) > (2, 0)  # the reader finds versions at all


def test_an_rsync_the_runtime_could_not_start_is_left_out_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a runtime older than every glibc this machine's rsync could need
    monkeypatch.setattr(lambda_rsync, "RUNTIME_GLIBC", (2, 1))
    # WHEN the layer is built
    assert lambda_rsync.main([str(tmp_path)]) == 0
    # THEN the build goes on without rsync, saying why and what the deployed verify will do
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 1 and "built without rsync" in said[0] and "newer than the Lambda runtime's 2.1" in said[0]
    assert "handshake only" in said[0] and not list(tmp_path.iterdir())
