"""Version environments built from a wheelhouse of real (tiny, test-built) wheels: one venv per
version, --no-index from the wheelhouse, READY marker, per-version JIT folder, the build lock,
and the node's packages visible inside the env (--system-site-packages + parent .pth)."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import sysconfig
import threading
import zipfile
from pathlib import Path

import pytest

from kernelwatch.worker import envs


def _wheel(folder: Path, dist: str, version: str, module: str | None, body: str,
           requires: tuple[str, ...] = ()) -> Path:
    """A minimal valid pure-Python wheel (PEP 427) holding ``module/__init__.py`` (none for
    a package whose code is all in its ``requires``)."""
    name = dist.replace("-", "_")
    info = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires)
    files = {
        **({f"{module.replace('.', '/')}/__init__.py": body} if module else {}),
        f"{info}/METADATA": metadata,
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    out = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
        zf.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return out


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wh = tmp_path_factory.mktemp("wheelhouse")
    for v in ("0.0.1", "0.0.2"):
        _wheel(wh, "flashinfer-python", v, "flashinfer", f"__version__ = {v!r}\n")
    # The light dependencies the env does not already see get installed from here too, and
    # the packages one backend needs (the cuDNN frontend, module ``cudnn``; cuda-tile, module
    # ``cuda.tile``, a namespace package's submodule).
    for module, dist in {**envs.LIGHT_DEPS, **envs.BACKEND_DEPS}.items():
        if dist not in envs.WITH_DEPENDENCIES:
            _wheel(wh, dist, "0.0.1", module, "FAKE = True\n")
    # The CuTe DSL as it ships: nvidia-cutlass-dsl holds no code, its libs package does.
    _wheel(wh, "nvidia-cutlass-dsl", "0.0.1", None, "", requires=("nvidia-cutlass-dsl-libs",))
    _wheel(wh, "nvidia-cutlass-dsl-libs", "0.0.1", "cutlass.cute", "FAKE = True\n")
    return wh


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Path:
    root = tmp_path_factory.mktemp("envs")
    envs.build_env("0.0.1", root, str(wheelhouse))
    return root


def _py(python: Path, code: str) -> str:
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_env_has_its_version_and_sees_the_node_torch(built: Path) -> None:
    python = envs.venv_python("0.0.1", built)
    assert envs.ready_versions(built) == ["0.0.1"]
    assert _py(python, "import flashinfer; print(flashinfer.__version__)") == "0.0.1"
    # torch is not installed into the env: it comes from the interpreter that built it.
    torch_file = _py(python, "import torch; print(torch.__file__)")
    assert not torch_file.startswith(str(built))
    # A run of torch backends only needs no FlashInfer env: the worker's own interpreter.
    assert envs.harness_python("0.0.1", needs_flashinfer=False) == sys.executable
    assert envs.harness_python(None, needs_flashinfer=True) == sys.executable


def test_versions_side_by_side_with_own_jit_cache(built: Path, wheelhouse: Path) -> None:
    envs.build_env("0.0.2", built, str(wheelhouse))
    assert envs.ready_versions(built) == ["0.0.1", "0.0.2"]
    a = envs.harness_env("0.0.1", built, base={})
    b = envs.harness_env("0.0.2", built, base={})
    assert a["FLASHINFER_WORKSPACE_BASE"] != b["FLASHINFER_WORKSPACE_BASE"]
    assert Path(a["FLASHINFER_WORKSPACE_BASE"]).is_dir()
    assert envs.harness_env(None, built, base={"X": "1"}) == {"X": "1"}


def test_build_is_idempotent_and_locked(built: Path, wheelhouse: Path) -> None:
    marker = built / "0.0.1" / "READY"
    before = marker.read_text()
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(
        str(envs.build_env("0.0.1", built, str(wheelhouse))))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and marker.read_text() == before


def test_backend_packages_are_installed_where_the_wheelhouse_has_them(built: Path) -> None:
    """FlashInfer's cuDNN paths need the cuDNN frontend (without it FlashInfer runs sm100-only
    cubins): installed into the env when available, and READY says so."""
    import json

    python = envs.venv_python("0.0.1", built)
    assert _py(python, "import cudnn; print(cudnn.FAKE)") == "True"
    assert _py(python, "import cuda.tile; print(cuda.tile.FAKE)") == "True"
    assert _py(python, "import cutlass.cute; print(cutlass.cute.FAKE)") == "True"
    ready = json.loads((built / "0.0.1" / "READY").read_text())
    assert ready["installed_backend_deps"] == ["cuda-tile", "nvidia-cudnn-frontend",
                                               "nvidia-cutlass-dsl"]
    assert ready["unavailable_backend_deps"] == {}


def test_a_missing_backend_package_leaves_a_working_env(tmp_path: Path,
                                                       wheelhouse: Path) -> None:
    """A wheelhouse without the cuDNN frontend still builds the env (every other backend
    runs; the harness refuses cudnn with the reason), and READY names what was missing."""
    import json
    import shutil

    partial = tmp_path / "wheelhouse"
    partial.mkdir()
    for whl in wheelhouse.glob("*.whl"):
        if not whl.name.startswith("nvidia_cudnn_frontend"):
            shutil.copy(whl, partial)
    python = envs.build_env("0.0.1", tmp_path / "envs", str(partial))
    assert _py(python, "import flashinfer; print(flashinfer.__version__)") == "0.0.1"
    assert _py(python, "import importlib.util; print(importlib.util.find_spec('cudnn'))") \
        == "None"
    ready = json.loads((tmp_path / "envs" / "0.0.1" / "READY").read_text())
    assert ready["installed_backend_deps"] == ["cuda-tile", "nvidia-cutlass-dsl"]
    assert "nvidia-cudnn-frontend" in ready["unavailable_backend_deps"]


def test_a_backend_package_that_arrives_later_is_installed_at_the_next_use(
        tmp_path: Path, wheelhouse: Path) -> None:
    """An env made while the wheelhouse lacked the CuTe DSL (with its libs) gets it when the
    wheelhouse has it and the env is next asked for, without being rebuilt; READY says so."""
    import json
    import shutil

    partial = tmp_path / "wheelhouse"
    partial.mkdir()
    for whl in wheelhouse.glob("*.whl"):
        if not whl.name.startswith("nvidia_cutlass_dsl"):
            shutil.copy(whl, partial)
    root = tmp_path / "envs"
    python = envs.build_env("0.0.1", root, str(partial))
    ready = root / "0.0.1" / "READY"
    assert "nvidia-cutlass-dsl" in json.loads(ready.read_text())["unavailable_backend_deps"]
    envs.build_env("0.0.1", root, str(partial))  # still absent: nothing tried, nothing changed
    assert "nvidia-cutlass-dsl" in json.loads(ready.read_text())["unavailable_backend_deps"]
    kept = python.parent.parent / "kept"  # in the venv: gone if the env were made again
    kept.write_text("")
    for whl in wheelhouse.glob("nvidia_cutlass_dsl*.whl"):
        shutil.copy(whl, partial)
    assert envs.build_env("0.0.1", root, str(partial)) == python
    assert _py(python, "import cutlass.cute; print(cutlass.cute.FAKE)") == "True"
    info = json.loads(ready.read_text())
    assert info["installed_backend_deps"] == ["cuda-tile", "nvidia-cudnn-frontend",
                                              "nvidia-cutlass-dsl"]
    assert info["unavailable_backend_deps"] == {}
    assert kept.exists()


def test_missing_version_in_wheelhouse_fails_and_is_not_ready(tmp_path: Path,
                                                                wheelhouse: Path) -> None:
    with pytest.raises(envs.EnvBuildError, match=r"flashinfer-python==9\.9\.9"):
        envs.build_env("9.9.9", tmp_path, str(wheelhouse))
    assert envs.ready_versions(tmp_path) == []


def test_bad_version_string_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        envs.env_dir("../../etc", tmp_path)


def test_env_runs_its_own_installed_harness(built: Path, wheelhouse: Path) -> None:
    """The harness is installed into the env (a wheel built from the service's own copy), not
    reached through PYTHONPATH: the env imports it from its own site-packages, and an env whose
    harness differs from the service's gets the service's reinstalled before it is used."""
    import json

    python = envs.venv_python("0.0.1", built)
    where = _py(python, "import kernelwatch_harness; print(kernelwatch_harness.__file__)")
    assert where.startswith(str(envs.env_dir("0.0.1", built)))
    ready = envs.env_dir("0.0.1", built) / "READY"
    assert json.loads(ready.read_text())["harness"] == envs.harness_fingerprint()
    # A harness from an older service: its marker is stale; the next use reinstalls it.
    installed = Path(where).parent / "protocol.py"
    installed.write_text("PROTOCOL_VERSION = -1\n")
    info = json.loads(ready.read_text())
    ready.write_text(json.dumps({**info, "harness": "stale"}))
    envs.build_env("0.0.1", built, str(wheelhouse))
    assert json.loads(ready.read_text())["harness"] == envs.harness_fingerprint()
    import kernelwatch_harness.protocol as proto

    got = _py(python, "import kernelwatch_harness.protocol as p; print(p.PROTOCOL_VERSION)")
    assert got == str(proto.PROTOCOL_VERSION)


def test_site_dirs_seen_through_pth_files_reach_the_env(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker in a virtualenv made from another virtualenv's python sees that one's packages
    through a .pth line, which the env's own .pth would not follow: every site directory on the
    worker's sys.path is listed, in order, once."""
    node = tmp_path / "node" / "lib" / "site-packages"
    node.mkdir(parents=True)
    monkeypatch.setattr(sys, "path", [*sys.path, str(node), str(node), str(tmp_path / "x")])
    dirs = envs._parent_site_dirs()
    assert dirs.count(str(node)) == 1 and str(tmp_path / "x") not in dirs
    assert dirs[0] == sysconfig.get_paths()["purelib"]
