"""Virtualenvs of older Celery releases, so the lab can run a cluster whose workers are of
several Celery versions (as real clusters are during an upgrade).

Each version gets its own virtualenv, built on demand from PyPI with every package pinned to
the release that Celery version shipped with (pip would otherwise pull the newest kombu into
an old Celery), under `$CELERYCTL_LAB_VENVS` (default `~/.cache/celeryctl/lab-venvs/`):

    celery-5.2/                  the virtualenv; `celeryctl-lab-venv.json` marks it complete
    wheels/                      every pinned wheel, downloaded once: rebuilding a virtualenv
                                 (deleted, or its pins changed) needs no network

A virtualenv is reused when its marker names the same pins and base interpreter; anything
else (no marker: an interrupted build) is rebuilt. Builds are serialised per version with a
file lock, so two labs or test runs starting at once do not build into each other, and
bounded: every pip call has a short network timeout and one retry, and the whole build a
deadline, so an unreachable index fails in seconds with a message that says so.

`celeryctl lab venvs` builds them up front (CI does, before the tests).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from celeryctl.lab.servers import LabError

MARKER = "celeryctl-lab-venv.json"
DEFAULT_TIMEOUT = 300.0  # one version's whole build, from cold
PIP_NETWORK = ("--timeout", "15", "--retries", "1")


@dataclass(frozen=True)
class CelerySpec:
    """One Celery line and the exact packages its lab virtualenv holds.

    `pins` is a full lock (what `pip freeze` showed after resolving the release's own
    requirements), so a build next year installs what was tested. The kombu, amqp, vine,
    billiard and redis pins follow each release's requirements and date: celery 5.2.7 requires
    kombu>=5.2.3,<6 and billiard>=3.6.4,<4; 5.3.6 kombu>=5.3.4,<6 and billiard>=4.2,<5;
    5.5.3 kombu>=5.5.2,<5.6 (kombu 5.5.4 requires redis<=5.2.1); 5.7.0 kombu>=5.7.0.
    """

    version: str  # "5.2"
    celery: str  # "5.2.7"
    kombu: str
    pins: tuple[str, ...]

    @property
    def requirements(self) -> tuple[str, ...]:
        return (f"celery=={self.celery}", f"kombu=={self.kombu}", *self.pins)


SPECS: dict[str, CelerySpec] = {s.version: s for s in (
    CelerySpec("5.2", "5.2.7", "5.2.4", (
        "amqp==5.1.1", "vine==5.0.0", "billiard==3.6.4.0", "redis==4.3.4", "click==8.1.3",
        "click-didyoumean==0.3.0", "click-repl==0.2.0", "click-plugins==1.1.1",
        "pytz==2022.1", "prompt-toolkit==3.0.53", "wcwidth==0.9.4", "six==1.17.0",
        "deprecated==1.3.1", "wrapt==2.5.2", "packaging==26.4", "async-timeout==5.0.1")),
    CelerySpec("5.3", "5.3.6", "5.3.7", (
        "amqp==5.2.0", "vine==5.1.0", "billiard==4.2.0", "redis==5.0.1", "click==8.1.7",
        "click-didyoumean==0.3.0", "click-repl==0.3.0", "click-plugins==1.1.1",
        "python-dateutil==2.8.2", "tzdata==2023.3", "prompt-toolkit==3.0.53",
        "wcwidth==0.9.4", "six==1.17.0")),
    CelerySpec("5.5", "5.5.3", "5.5.4", (
        "amqp==5.3.1", "vine==5.1.0", "billiard==4.2.1", "redis==5.2.1", "click==8.1.8",
        "click-didyoumean==0.3.1", "click-repl==0.3.0", "click-plugins==1.1.1",
        "python-dateutil==2.9.0.post0", "tzdata==2025.2", "packaging==26.4",
        "prompt-toolkit==3.0.53", "wcwidth==0.9.4", "six==1.17.0")),
    CelerySpec("5.7", "5.7.0", "5.7.0", (
        "amqp==5.4.2", "vine==5.1.0", "billiard==4.3.2", "redis==8.1.0", "click==8.5.1",
        "click-didyoumean==0.3.1", "click-repl==0.4.1", "click-plugins==1.1.1.2",
        "python-dateutil==2.9.0.post0", "tzlocal==5.4.5", "typing-extensions==4.16.0",
        "packaging==26.3", "prompt-toolkit==3.0.53", "wcwidth==0.9.4", "six==1.17.0")),
)}


def parse_versions(text: str) -> list[str]:
    """`"5.2,5.3"` -> ["5.2", "5.3"]; a version the lab has no pins for is a LabError that
    lists the known ones. `5.2.7` is accepted for `5.2`."""
    out: list[str] = []
    for raw in text.split(","):
        v = raw.strip()
        if not v:
            continue
        key = ".".join(v.split(".")[:2])
        if key not in SPECS or (v != key and v != SPECS[key].celery):
            raise LabError(f"no lab virtualenv for Celery {v!r}; known: "
                           + ", ".join(f"{k} ({s.celery})" for k, s in SPECS.items()))
        if key not in out:
            out.append(key)
    if not out:
        raise LabError("no Celery version given")
    return out


def root() -> Path:
    if os.environ.get("CELERYCTL_LAB_VENVS"):
        return Path(os.environ["CELERYCTL_LAB_VENVS"])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(cache) / "celeryctl" / "lab-venvs"


def venv_dir(version: str, base: Path | None = None) -> Path:
    return (base or root()) / f"celery-{version}"


def base_python() -> str:
    """The interpreter the virtualenvs are made from: the one running celeryctl (its base,
    when celeryctl itself runs in a virtualenv)."""
    return str(Path(getattr(sys, "_base_executable", None) or sys.executable).resolve())


def _marker_wanted(spec: CelerySpec) -> dict:
    return {"requirements": list(spec.requirements), "base_python": base_python()}


def is_valid(version: str, base: Path | None = None) -> bool:
    """Complete and built from the current pins and interpreter (no subprocess: cheap)."""
    spec = SPECS[version]
    d = venv_dir(version, base)
    try:
        marker = json.loads((d / MARKER).read_text())
    except (OSError, ValueError):
        return False
    want = _marker_wanted(spec)
    return (isinstance(marker, dict)
            and all(marker.get(k) == v for k, v in want.items())
            and (d / "bin" / "python").exists() and Path(want["base_python"]).exists())


def python_for(version: str, *, progress: Callable[[str], None] = lambda _m: None,
               timeout: float = DEFAULT_TIMEOUT, base: Path | None = None) -> str:
    """The interpreter of the Celery `version` virtualenv, building it first if needed."""
    return str(ensure(version, progress=progress, timeout=timeout, base=base) / "bin" / "python")


def ensure(version: str, *, progress: Callable[[str], None] = lambda _m: None,
           timeout: float = DEFAULT_TIMEOUT, base: Path | None = None,
           rebuild: bool = False) -> Path:
    """The virtualenv of Celery `version`: reused when valid, else (re)built within
    `timeout` seconds. Raises LabError with the reason (unreachable index, timeout, ...)."""
    if version not in SPECS:
        parse_versions(version)  # raises with the known versions
    d = venv_dir(version, base)
    if not rebuild and is_valid(version, base):
        return d
    deadline = time.monotonic() + timeout
    d.parent.mkdir(parents=True, exist_ok=True)
    with _locked(d.parent / f".celery-{version}.lock", deadline,
                 f"the Celery {version} lab virtualenv"):
        if not rebuild and is_valid(version, base):  # built by whoever held the lock
            return d
        _build(SPECS[version], d, deadline, progress)
    return d


@contextlib.contextmanager
def _locked(path: Path, deadline: float, what: str) -> Iterator[None]:
    import fcntl

    with open(path, "a") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LabError(f"{what} is being built by another process (lock "
                                   f"{path}) and was not ready in time") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build(spec: CelerySpec, d: Path, deadline: float, progress: Callable[[str], None]) -> None:
    started = time.monotonic()
    progress(f"building the Celery {spec.version} lab virtualenv (celery {spec.celery}, "
             f"kombu {spec.kombu}) in {d} ...")
    shutil.rmtree(d, ignore_errors=True)
    what = f"Celery {spec.version} lab virtualenv"
    pip = _host_pip(d / "bin" / "python")
    # Without its own pip when celeryctl's pip can install into it (2 s instead of 5 s)
    _run([base_python(), "-m", "venv", *(["--without-pip"] if pip else []), str(d)],
         deadline, f"{what}: python -m venv")
    py = str(d / "bin" / "python")
    pip = pip or [py, "-m", "pip"]
    wheels = d.parent / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    install = [*pip, "install", "-q", "--disable-pip-version-check", "--no-index",
               "--find-links", str(wheels), "--only-binary=:all:", *spec.requirements]
    r = _run(install, deadline, f"{what}: pip install", check=False)
    if r.returncode != 0:  # some wheel not downloaded yet: fetch them all (pip skips present)
        progress(f"downloading the pinned wheels for Celery {spec.version} into {wheels} ...")
        with _locked(wheels / ".lock", deadline, f"the wheelhouse {wheels}"):  # shared
            r = _run([*pip, "download", "-q", "--disable-pip-version-check",
                      "--only-binary=:all:", *PIP_NETWORK, "-d", str(wheels),
                      *spec.requirements], deadline, f"{what}: pip download", check=False)
        if r.returncode != 0:
            shutil.rmtree(d, ignore_errors=True)
            raise LabError(f"could not build the {what}: {pip_failure(r.stdout + r.stderr)}")
        _run(install, deadline, f"{what}: pip install")
    # Both transports the lab uses must import (kombu's Redis transport needs packaging,
    # which only kombu's redis extra lists)
    r = _run([py, "-c", "import json, celery, kombu, kombu.transport.redis, "
              "kombu.transport.pyamqp; "
              "print(json.dumps([celery.__version__, kombu.__version__]))"],
             deadline, f"{what}: import check")
    got = json.loads(r.stdout.strip().splitlines()[-1])
    if got != [spec.celery, spec.kombu]:
        raise LabError(f"the {what} imports celery {got[0]} / kombu {got[1]}, expected "
                       f"{spec.celery} / {spec.kombu}")
    marker = {**_marker_wanted(spec), "celery": got[0], "kombu": got[1],
              "python": ".".join(map(str, sys.version_info[:3])),
              "built_seconds": round(time.monotonic() - started, 1), "built_at": time.time()}
    tmp = d / (MARKER + ".tmp")
    tmp.write_text(json.dumps(marker, indent=2) + "\n")
    tmp.replace(d / MARKER)  # written last: its presence means "complete"


def _host_pip(target: Path) -> list[str] | None:
    """celeryctl's own pip aimed at `target` (`pip --python`, pip >= 22.3), or None."""
    try:
        from importlib.metadata import version

        major, minor = (int(x) for x in version("pip").split(".")[:2])
    except Exception:  # noqa: BLE001 - no pip, or an odd version string
        return None
    if (major, minor) < (22, 3):
        return None
    return [sys.executable, "-m", "pip", "--python", str(target)]


def _run(cmd: list[str], deadline: float, what: str,
         check: bool = True) -> subprocess.CompletedProcess:
    left = deadline - time.monotonic()
    if left <= 0:
        raise LabError(f"{what}: out of time")
    env = dict(os.environ)
    for k in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV"):
        env.pop(k, None)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=left, env=env,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise LabError(f"{what}: timed out (is the package index reachable?)") from None
    if check and r.returncode != 0:
        raise LabError(f"{what} failed (exit {r.returncode}): {_tail(r.stdout + r.stderr)}")
    return r


def _tail(text: str, n: int = 6) -> str:
    lines = [x for x in text.strip().splitlines()
             if x.strip() and "is ignored: it is neither a file nor a directory" not in x]
    return "\n".join(lines[-n:])


UNREACHABLE = ("NewConnectionError", "Max retries exceeded", "Connection refused",
               "Network is unreachable", "Temporary failure in name resolution",
               "Name or service not known", "ConnectTimeoutError", "ReadTimeoutError",
               "ProxyError", "SSLError")


def pip_failure(output: str) -> str:
    """pip's failure, named: the index unreachable (offline, proxy, DNS) reads differently
    from a pinned release missing from it."""
    if any(m in output for m in UNREACHABLE):
        return ("the package index (PyPI, or the one pip is configured with) is unreachable; "
                "build the lab virtualenvs where it is reachable (celeryctl lab venvs), or "
                "point pip at a mirror (PIP_INDEX_URL). pip said:\n" + _tail(output, 4))
    if "No matching distribution" in output or "Could not find a version" in output:
        return "a pinned release is not on the package index: " + _tail(output, 4)
    return _tail(output)


def describe(version: str, base: Path | None = None) -> dict:
    """What `lab venvs` prints for one version."""
    spec = SPECS[version]
    d = venv_dir(version, base)
    marker: dict = {}
    with contextlib.suppress(OSError, ValueError):
        marker = json.loads((d / MARKER).read_text())
    return {"version": version, "celery": spec.celery, "kombu": spec.kombu, "path": str(d),
            "valid": is_valid(version, base), "python": marker.get("python")}
