"""FlashInfer's own benchmark (``benchmarks/flashinfer_benchmark.py`` and its ``routines/``) for
each version, as its source tag has it, cached once per version beside the version envs for
the cross-check (core.crosscheck). Wheels do not ship it, so it comes from the source:

- the wheelhouse, for nodes without network: ``flashinfer-benchmarks-<version>.tar.gz``
  (``kernelwatch wheelhouse benchmarks`` writes one from a git checkout) or the tag's source
  archive ``flashinfer-<version>.tar.gz``;
- else the tag's source archive, downloaded (``settings.benchmarks_url``).

Layout under ``settings.resolved_envs_dir``::

    benchmarks/<version>/benchmarks/flashinfer_benchmark.py, routines/...
    benchmarks/<version>/READY      JSON written last: where it came from
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import tarfile
import urllib.request
from pathlib import Path, PurePosixPath

from kernelwatch.core.settings import get_settings
from kernelwatch.worker.envs import _check_version, _lock, _root, _wheelhouse

SCRIPT = "flashinfer_benchmark.py"
SOURCE = "SOURCE"  # in an archive made from git: the ref and commit its benchmarks/ came from
DOWNLOAD_TIMEOUT_S = 120


class NoBenchmarkScript(RuntimeError):
    """The version's flashinfer_benchmark.py could not be had: the reason says from where."""


def cache_dir(version: str, envs_dir: Path | str | None = None) -> Path:
    return _root(envs_dir) / "benchmarks" / _check_version(version)


def wheelhouse_names(version: str) -> tuple[str, str]:
    return f"flashinfer-benchmarks-{version}.tar.gz", f"flashinfer-{version}.tar.gz"


def source_url(version: str) -> str:
    s = get_settings()
    return s.benchmarks_url.format(repo=s.flashinfer_repo, version=version)


# The folders of FlashInfer's tests/ that the tool's routines import their references from:
# routines/mamba.py and gdn.py put tests/mamba and tests/gdn on sys.path (mamba's
# triton_reference, gdn's reference_delta_rule), found from the benchmarks folder's parent.
REFERENCE_DIRS = ("tests/mamba", "tests/gdn")


def _members(tar: tarfile.TarFile, top: str,
             keep: tuple[str, ...] | None = None) -> list[tuple[tarfile.TarInfo, PurePosixPath]]:
    """The regular files under ``top/`` (at the archive's top, or one folder down as in a
    source archive), with their paths relative to it; with ``keep``, only those under one of
    those folders (given from the archive's top, ``tests/mamba``). No path that climbs out."""
    out = []
    for m in tar.getmembers():
        parts = PurePosixPath(m.name).parts
        if top not in parts[:2] or not m.isfile() or ".." in parts:
            continue
        rel = PurePosixPath(*parts[parts.index(top) + 1:])
        if not rel.parts:
            continue
        if keep is not None and not any(
                PurePosixPath(top, rel).is_relative_to(k) for k in keep):
            continue
        out.append((m, rel))
    return out


def _write(tar: tarfile.TarFile, members: list[tuple[tarfile.TarInfo, PurePosixPath]],
           into: Path) -> None:
    for member, rel in members:
        data = tar.extractfile(member)
        if data is None:
            continue
        target = into / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.read())


def extract(archive: bytes, into: Path) -> None:
    """``benchmarks/`` into ``into``, and the reference folders of ``tests/`` beside it (into
    ``into``'s parent), where the routines look for them."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
        members = _members(tar, "benchmarks")
        if not any(str(rel) == SCRIPT for _, rel in members):
            raise NoBenchmarkScript(f"the archive has no benchmarks/{SCRIPT}")
        _write(tar, members, into)
        _write(tar, _members(tar, "tests", REFERENCE_DIRS), into.parent / "tests")


def _from_wheelhouse(version: str, wheelhouse: str) -> tuple[bytes, str] | None:
    if not wheelhouse:
        return None
    for name in wheelhouse_names(version):
        path = Path(wheelhouse) / name
        if path.is_file():
            return path.read_bytes(), str(path)
    return None


def _download(version: str) -> tuple[bytes, str]:
    url = source_url(version)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
            return resp.read(), url
    except Exception as e:
        raise NoBenchmarkScript(
            f"flashinfer_benchmark.py of {version}: not in the wheelhouse "
            f"({' or '.join(wheelhouse_names(version))}) and {url} could not be read: {e}"
        ) from None


def script_dir(version: str, envs_dir: Path | str | None = None,
               wheelhouse: str | None = None) -> Path:
    """The folder holding the version's flashinfer_benchmark.py, fetched on first use."""
    root = _root(envs_dir)
    where = cache_dir(version, root)
    benchmarks = where / "benchmarks"
    if (where / "READY").is_file():
        return benchmarks
    wh = _wheelhouse(wheelhouse)
    with _lock(root, f"benchmarks-{version}"):
        if (where / "READY").is_file():  # another worker fetched it meanwhile
            return benchmarks
        archive = _from_wheelhouse(version, wh) or _download(version)
        if benchmarks.exists():  # a half-written earlier attempt
            import shutil

            shutil.rmtree(benchmarks)
        benchmarks.mkdir(parents=True)
        extract(archive[0], benchmarks)
        origin = benchmarks / SOURCE
        info = {"version": version, "source": archive[1]}
        if origin.is_file():
            info["git"] = origin.read_text().strip()
        (where / "READY").write_text(json.dumps(info))
    return benchmarks


def _release(version: str) -> str:
    """The numeric release of a version string: 0.6.18.post1 and 0.6.18rc2 are 0.6.18."""
    found = re.match(r"\d+(?:\.\d+)*", version.strip())
    return found.group() if found else version.strip()


def source_version(repo: Path, commit: str) -> str | None:
    """The FlashInfer version a commit's ``version.txt`` names (None where it has none)."""
    got = subprocess.run(["git", "-C", str(repo), "show", f"{commit}:version.txt"],
                         capture_output=True, text=True)
    return got.stdout.strip() or None if got.returncode == 0 else None


def archive_from_git(repo: Path, version: str, out_dir: Path, ref: str | None = None,
                     other_release: bool = False) -> Path:
    """``flashinfer-benchmarks-<version>.tar.gz`` in ``out_dir``: ``benchmarks/`` of the tag
    ``v<version>`` (or of ``ref``, for a release whose tag the checkout lacks) from a FlashInfer
    git checkout, for a wheelhouse of nodes without network, with the reference folders of
    ``tests/`` its routines import (``REFERENCE_DIRS``). The archive's ``benchmarks/SOURCE``
    names the ref and commit it came from; the cache's READY records it.

    A ref whose ``version.txt`` names another release is refused: its routines are not the
    version's (a 0.7.4 archive from a branch still at 0.6.18 called a testing helper with an
    argument 0.7.4's lacks). ``other_release`` takes it anyway, and SOURCE then says which
    release the scripts are."""
    ref = ref or f"v{version}"
    out = out_dir / wheelhouse_names(version)[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", f"{ref}^{{commit}}"],
                                check=True, capture_output=True, text=True).stdout.strip()
        theirs = source_version(repo, commit)
        differs = theirs is not None and _release(theirs) != _release(version)
        if differs and not other_release:
            raise NoBenchmarkScript(
                f"{ref} ({commit[:12]}) holds FlashInfer {theirs} (its version.txt), not "
                f"{version}: its benchmark routines are not {version}'s. Give the ref of "
                f"{version}'s source, or take it anyway (--other-release), recorded so.")
        source = f"{ref} {commit}" + (f" version.txt={theirs}" if differs else "")
        # the reference folders the release has (0.5.3 has neither)
        present = subprocess.run(["git", "-C", str(repo), "ls-tree", "--name-only", commit,
                                  *REFERENCE_DIRS], check=True, capture_output=True,
                                 text=True).stdout.split()
        data = subprocess.run(
            ["git", "-C", str(repo), "archive", "--format=tar.gz",
             f"--add-virtual-file=benchmarks/{SOURCE}:{source}\n", commit, "benchmarks",
             *present],
            check=True, capture_output=True).stdout
    except subprocess.CalledProcessError as e:
        err = e.stderr if isinstance(e.stderr, str) else e.stderr.decode()
        raise NoBenchmarkScript(f"git archive {ref} benchmarks in {repo}: {err.strip()}") from None
    out.write_bytes(data)
    return out
