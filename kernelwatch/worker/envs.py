"""Which Python runs the harness for a FlashInfer version: one virtualenv per version.

Interface used by the worker (``worker.tasks``, ``worker.node``, ``worker.runner``):
``harness_python(version, needs_flashinfer)``, ``ready_versions()`` and
``harness_env(version)``.

Layout under ``settings.resolved_envs_dir`` (``<data_dir>/envs`` by default)::

    <version>/venv/     the virtualenv (``--system-site-packages``: the node's torch is reused)
    <version>/jit/      FlashInfer's JIT cache for this version (FLASHINFER_WORKSPACE_BASE)
    <version>/READY     JSON written last: the env is complete (a half-built env has none)
    .locks/<version>.lock   flock held while building, so two workers never build one env

The harness (the ``kernelwatch-harness`` distribution) is installed into every env from the
same source as the service's own copy (``harness_source``); READY records its fingerprint, and
an env whose harness differs from the service's gets the service's reinstalled before it runs.

FlashInfer is installed with ``--no-deps`` plus the few light packages it imports at start
(``apache-tvm-ffi`` and friends): its full dependency list names CUDA toolkits and DSL
compilers that the node's torch environment already covers or that only optional backends
use, and resolving them on a node without an index would fail. The packages one backend
needs (``BACKEND_DEPS``: the cuDNN frontend, cuda-tile for the cutile GEMMs, the CuTe DSL for
GDN) are installed where available and recorded in READY either way; one that arrives in the
wheelhouse later is installed at the env's next use. From ``KERNELWATCH_WHEELHOUSE``
(``--no-index --find-links``) when set, else from the package index.

Standard library only at import time (the GPU check uses it where kernelwatch's service
dependencies are absent); settings are read only when no explicit folder is given.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import cast

from kernelwatch_harness.backend_packages import BACKEND_DEPS

FLASHINFER = "flashinfer-python"
HARNESS = "kernelwatch-harness"
# Imported by ``import flashinfer`` (module name -> distribution). Installed only when the
# env does not already see them through the system site-packages.
LIGHT_DEPS = {
    "tvm_ffi": "apache-tvm-ffi",
    "einops": "einops",
    "click": "click",
    "tabulate": "tabulate",
    "tqdm": "tqdm",
    "requests": "requests",
    "packaging": "packaging",
    "ninja": "ninja",
    "pynvml": "nvidia-ml-py",
    "numpy": "numpy",
}
# FlashInfer dependencies that one backend needs (BACKEND_DEPS, module name -> distribution):
# installed (``--no-deps``) when the wheelhouse or index has them; without them the env still
# serves every other backend, and the harness refuses that one with the reason.
# Of those, the ones whose code lives in their dependencies: the CuTe DSL (GDN's kernels) is a
# .pth file over nvidia-cutlass-dsl-libs-{base,core,cu12}. Installed with them; pip keeps what
# the node already has that satisfies them (cuda-bindings, protobuf).
WITH_DEPENDENCIES = frozenset({"nvidia-cutlass-dsl"})
_VERSION_RE = re.compile(r"^[0-9][0-9A-Za-z.+!-]*$")


class EnvBuildError(RuntimeError):
    pass


def _settings_dirs() -> tuple[Path, str]:
    from kernelwatch.core.settings import get_settings

    s = get_settings()
    return Path(s.resolved_envs_dir), s.wheelhouse


def _root(envs_dir: Path | str | None) -> Path:
    return Path(envs_dir) if envs_dir is not None else _settings_dirs()[0]


def _wheelhouse(wheelhouse: str | None) -> str:
    return wheelhouse if wheelhouse is not None else _settings_dirs()[1]


def _check_version(version: str) -> str:
    if not _VERSION_RE.match(version):
        raise ValueError(f"not a FlashInfer version: {version!r}")
    return version


def env_dir(version: str, envs_dir: Path | str | None = None) -> Path:
    return _root(envs_dir) / _check_version(version)


def venv_python(version: str, envs_dir: Path | str | None = None) -> Path:
    return env_dir(version, envs_dir) / "venv" / "bin" / "python"


def jit_dir(version: str, envs_dir: Path | str | None = None) -> Path:
    return env_dir(version, envs_dir) / "jit"


def is_ready(version: str, envs_dir: Path | str | None = None) -> bool:
    """FlashInfer and its dependencies are installed (the harness may still be stale)."""
    return (env_dir(version, envs_dir) / "READY").is_file() and venv_python(
        version, envs_dir
    ).exists()


def ready_versions(envs_dir: Path | str | None = None) -> list[str]:
    """FlashInfer versions whose environment is built on this node."""
    root = _root(envs_dir)
    if not root.is_dir():
        return []
    out = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(v for v in out if _VERSION_RE.match(v) and is_ready(v, root))


def _ready_info(version: str, root: Path) -> dict[str, object]:
    try:
        info = json.loads((env_dir(version, root) / "READY").read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def harness_fingerprint() -> str:
    """A digest of the service's harness sources: an env whose READY records another digest
    runs an older (or newer) harness than the service speaks to, and gets it reinstalled."""
    import kernelwatch_harness

    root = Path(kernelwatch_harness.__file__).parent
    digest = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):  # the family modules too
        digest.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _lock(root: Path, version: str) -> Iterator[None]:
    locks = root / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{version}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # blocks while another worker builds this version
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _parent_site_dirs() -> list[str]:
    """Site-packages of the interpreter creating the env. When that interpreter is itself a
    virtualenv (the node's torch often lives in one), ``--system-site-packages`` would expose
    only the base interpreter's packages, so these are added through a ``.pth`` file."""
    paths = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    # and every site directory this interpreter sees through its own .pth files (a virtualenv
    # made from a virtualenv's python sees that one's packages only so): a .pth line is not
    # itself searched for .pth files, so the chain is flattened here
    paths += [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")]
    return [p for p in dict.fromkeys(paths) if Path(p).is_dir()]


def _run(cmd: list[str], log: Path) -> None:
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise EnvBuildError(f"{' '.join(cmd[:4])} … failed ({proc.returncode}):\n{tail}")


def _pip_args(wheelhouse: str) -> list[str]:
    args = ["install", "--disable-pip-version-check", "--no-input"]
    if wheelhouse:
        args += ["--no-index", "--find-links", wheelhouse]
    return args


def _make_venv(where: Path, python: Path, log: Path) -> list[str]:
    """Create the venv; return the pip command that installs into it. Where the interpreter
    has no ensurepip (some distribution builds), the venv is made without pip and the
    creating interpreter's pip installs into it (``pip --python``)."""
    try:
        _run([sys.executable, "-m", "venv", "--system-site-packages", str(where)], log)
        return [str(python), "-m", "pip"]
    except EnvBuildError:
        shutil.rmtree(where, ignore_errors=True)
        _run(
            [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(where)],
            log,
        )
        return [sys.executable, "-m", "pip", "--python", str(python)]


def _env_pip(python: Path) -> list[str]:
    """The pip command for an existing env: its own, or the worker's (``pip --python``) for
    an env made without pip (see ``_make_venv``)."""
    if (python.parent / "pip").exists():
        return [str(python), "-m", "pip"]
    return [sys.executable, "-m", "pip", "--python", str(python)]


def _missing_modules(python: Path, modules: dict[str, str]) -> list[str]:
    code = (
        "import importlib.util, json, sys\n"
        f"mods = {sorted(modules)!r}\n"
        "def found(m):\n"
        "    try:\n"
        "        return importlib.util.find_spec(m) is not None\n"
        "    except ModuleNotFoundError:  # its parent package is missing\n"
        "        return False\n"
        "print(json.dumps([m for m in mods if not found(m)]))\n"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def installed_version(python: Path, dist: str = FLASHINFER) -> str | None:
    code = (
        "import importlib.metadata as m\n"
        f"try: print(m.version({dist!r}))\n"
        "except Exception: print('')"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return out.stdout.strip() or None


def harness_source(wheelhouse: str, root: Path, log: Path, fingerprint: str) -> list[str]:
    """What pip installs the harness from, so that a version env runs exactly the harness the
    service runs: that version's wheel in the wheelhouse when it has one; else a wheel built
    by the worker's own interpreter from the folder its copy was installed from (the env's
    setuptools may be too old to build one, and a node without an index cannot fetch a build
    backend); else the wheel file it came from; else the package index."""
    dist = importlib.metadata.distribution(HARNESS)
    if wheelhouse:
        wheels = sorted(Path(wheelhouse).glob(f"kernelwatch_harness-{dist.version}-*.whl"))
        if wheels:
            return [str(wheels[-1])]
    direct = dist.read_text("direct_url.json")
    if direct:
        url = str(json.loads(direct).get("url", ""))
        if url.startswith("file://"):
            path = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
            if path.is_file():
                return [str(path)]
            out = root / ".harness" / fingerprint
            # Two versions' envs may be made at once (worker/prebuild.py): one builds the wheel.
            with _lock(root, "harness-wheel"):
                if not any(out.glob("*.whl")):
                    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                          "--no-build-isolation", "--wheel-dir", str(out), str(path)], log)
            return [str(sorted(out.glob("*.whl"))[-1])]
    return [f"{HARNESS}=={dist.version}"]


def _install_harness(pip: list[str], wheelhouse: str, root: Path, log: Path,
                     fingerprint: str) -> None:
    """Install (or replace) the harness whose sources have ``fingerprint`` in an env."""
    source = harness_source(wheelhouse, root, log, fingerprint)
    _run([*pip, *_pip_args(wheelhouse), "--no-deps", "--force-reinstall", *source], log)


def _in_wheelhouse(wheelhouse: str, dist: str) -> bool:
    """Whether the wheelhouse holds a wheel of ``dist`` (names normalized as wheels spell them)."""
    name = re.sub(r"[-_.]+", "_", dist).lower()
    return bool(wheelhouse) and any(
        w.name.lower().startswith(name + "-") for w in Path(wheelhouse).glob("*.whl"))


def _install_backend_deps(pip: list[str], wheelhouse: str, log: Path,
                          modules: list[str]) -> tuple[list[str], dict[str, str]]:
    """Install the packages of ``modules`` (keys of BACKEND_DEPS) that the wheelhouse or index
    has: (installed, {missing distribution: why})."""
    installed: list[str] = []
    unavailable: dict[str, str] = {}
    for module in modules:
        dist = BACKEND_DEPS[module]
        deps = [] if dist in WITH_DEPENDENCIES else ["--no-deps"]
        try:
            _run([*pip, *_pip_args(wheelhouse), *deps, dist], log)
            installed.append(dist)
        except EnvBuildError as exc:  # that backend is refused; the others run
            unavailable[dist] = str(exc).splitlines()[0][:300]
    return installed, unavailable


def build_env(
    version: str, envs_dir: Path | str | None = None, wheelhouse: str | None = None
) -> Path:
    """Create (or finish) the env for ``version`` and return its python. Idempotent and safe
    to call from several workers at once."""
    root = _root(envs_dir)
    wh = _wheelhouse(wheelhouse)
    fingerprint = harness_fingerprint()
    with _lock(root, version):
        if is_ready(version, root):
            info = _ready_info(version, root)
            where = env_dir(version, root)
            python = venv_python(version, root)
            changed = False
            if info.get("harness") != fingerprint:
                _install_harness(_env_pip(python), wh, root, where / "build.log", fingerprint)
                info["harness"] = fingerprint
                changed = True
            # A backend's package put into the wheelhouse after the env was made is installed
            # at its next use, so its backend is no longer refused (and nothing is rebuilt).
            lacked = cast("dict[str, str]", info.get("unavailable_backend_deps") or {})
            arrived = [m for m, d in BACKEND_DEPS.items()
                       if d in lacked and _in_wheelhouse(wh, d)]
            if arrived:
                added, still = _install_backend_deps(_env_pip(python), wh,
                                                     where / "build.log", arrived)
                before = cast("list[str]", info.get("installed_backend_deps") or [])
                info["installed_backend_deps"] = [*before, *added]
                info["unavailable_backend_deps"] = {
                    d: why for d, why in {**lacked, **still}.items() if d not in added}
                changed = True
            if changed:
                (where / "READY").write_text(json.dumps(info))
            return python
        where = env_dir(version, root)
        shutil.rmtree(where / "venv", ignore_errors=True)  # a half-built one from a crash
        where.mkdir(parents=True, exist_ok=True)
        jit_dir(version, root).mkdir(exist_ok=True)
        log = where / "build.log"
        log.write_text("")
        python = venv_python(version, root)
        pip = _make_venv(where / "venv", python, log)
        if sys.prefix != sys.base_prefix:
            site = subprocess.run(
                [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            # Appended after the env's own site-packages: the env's flashinfer wins.
            Path(site, "_kernelwatch_parent.pth").write_text("\n".join(_parent_site_dirs()) + "\n")
        _run([*pip, *_pip_args(wh), "--no-deps", f"{FLASHINFER}=={version}"], log)
        missing = [LIGHT_DEPS[m] for m in _missing_modules(python, LIGHT_DEPS)]
        if missing:
            _run([*pip, *_pip_args(wh), *missing], log)
        backend_deps, unavailable = _install_backend_deps(
            pip, wh, log, _missing_modules(python, BACKEND_DEPS))
        _install_harness(pip, wh, root, log, fingerprint)
        got = installed_version(python)
        if got != version:
            raise EnvBuildError(f"{FLASHINFER} {version}: env reports {got!r} after install")
        (where / "READY").write_text(
            json.dumps(
                {
                    "version": version,
                    "python": str(python),
                    "built_at": time.time(),
                    "wheelhouse": wh or None,
                    "installed_light_deps": missing,
                    "installed_backend_deps": backend_deps,
                    "unavailable_backend_deps": unavailable,
                    "harness": fingerprint,
                }
            )
        )
        return python


def harness_python(version: str | None, needs_flashinfer: bool) -> str:
    """The interpreter to run ``python -m kernelwatch_harness`` with. A run whose backends are all
    torch ones needs no FlashInfer, whatever version label it carries: the worker's own.
    A FlashInfer version not built yet is built now (from the wheelhouse or the index)."""
    if version is None or not needs_flashinfer:
        return sys.executable
    return str(build_env(version))


def harness_env(
    version: str | None, envs_dir: Path | str | None = None, base: dict[str, str] | None = None
) -> dict[str, str]:
    """Environment variables for the harness of ``version``: its own JIT cache folder, so
    versions never share compiled modules. ``base`` (default ``os.environ``) is copied."""
    env = dict(os.environ if base is None else base)
    if version is not None:
        jit = jit_dir(version, envs_dir)
        jit.mkdir(parents=True, exist_ok=True)
        env["FLASHINFER_WORKSPACE_BASE"] = str(jit)
    return env
