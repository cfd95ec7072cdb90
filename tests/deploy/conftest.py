"""Fixtures of the deployment tests: the wheelhouse, a fresh runtime venv built from it, and the
Debian tools the checks use (installed when missing and allowed, as ``.ci/run`` does).

The wheelhouse is built once by ``make wheelhouse`` and cached under a directory keyed by the
hash of requirements.txt, the Python version and the platform: ``$KEEL_WHEELHOUSE_CACHE`` when
set (``.ci/run`` points it outside the clone, so CI re-runs are warm), else the git-ignored
``var/wheelhouse-cache/``. The venv is new in every session: nothing is reused but the wheels.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, unavailable


def _wheelhouse_key() -> str:
    digest = hashlib.sha256((ROOT / "requirements.txt").read_bytes())
    digest.update(f"{sys.version_info[:2]}-{platform.machine()}-{platform.libc_ver()}".encode())
    return digest.hexdigest()[:16]


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"{' '.join(cmd)} failed ({result.returncode}):\n{output}"
    return result


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """The runtime wheels, made by ``make wheelhouse`` (once per requirements.txt)."""
    base = Path(os.environ.get("KEEL_WHEELHOUSE_CACHE") or ROOT / "var" / "wheelhouse-cache")
    target = base / _wheelhouse_key()
    if any(target.glob("*.whl")):
        return target
    base.mkdir(parents=True, exist_ok=True)
    building = base / f".building-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    started = time.monotonic()
    _run(["make", "--no-print-directory", "wheelhouse", f"WHEELHOUSE={building}", f"PYTHON={sys.executable}"], cwd=ROOT)
    if not any(building.glob("*.whl")):
        pytest.fail(f"make wheelhouse made no wheels in {building}")
    try:
        building.rename(target)  # atomic: a concurrent run either sees all the wheels or none
    except OSError:
        shutil.rmtree(building, ignore_errors=True)  # another run got there first
    print(f"wheelhouse built in {time.monotonic() - started:.1f}s: {target}")
    return target


@pytest.fixture(scope="session")
def runtime_venv(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding requirements.txt alone, installed offline from the wheelhouse by
    deploy/install-runtime.sh (the Dockerfile's install step), with no network where the
    machine allows a network namespace of its own."""
    venv = tmp_path_factory.mktemp("runtime") / "venv"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(venv.parent), "LANG": "C.UTF-8",
           "PYTHON": sys.executable,
           # no index at all: a wheel missing from the wheelhouse fails instead of being fetched
           "PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull}
    install = [*offline(), "sh", str(ROOT / "deploy" / "install-runtime.sh"), str(venv), str(wheelhouse)]
    result = _run(install, cwd=ROOT, env=env)
    assert "offline, from the wheels" in result.stdout, result.stdout
    return venv


@functools.cache
def offline() -> list[str]:
    """A command prefix that runs a command with no network at all (a new, empty network
    namespace: ``unshare -n``), or ``[]`` where this is not permitted."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True, check=False).returncode == 0:
        return [unshare, "-n"]
    return []


def ensure_tool(binary: str, package: str) -> str:
    """The path of ``binary``; installs the Debian ``package`` when it is missing and we are root
    (CI), otherwise skips (fails under REQUIRE_SERVICES=1)."""
    found = shutil.which(binary)
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package]
        if subprocess.run(install, capture_output=True, env=env, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, check=False)
            subprocess.run(install, capture_output=True, env=env, check=False)
        found = shutil.which(binary)
    if found is None:
        unavailable(f"`{binary}` is not installed (apt-get install {package})")
    assert found is not None
    return found
