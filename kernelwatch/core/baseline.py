"""Which FlashInfer release a new one is benchmarked against: FlashInfer's previous release,
whether or not kernelwatch has seen it.

The rule, in PEP 440 order over the releases FlashInfer has published:
- a final release (``0.7.4``, ``0.7.2.post1``) compares with the newest final release before
  it: pre-releases and dev releases are skipped, a post-release counts as a release
  (``0.7.2.post1`` -> ``0.7.2``; ``0.7.4`` -> ``0.7.2.post1``);
- a pre-release or dev release (``0.8.0rc2``) compares with the newest release before it of
  any kind (``0.8.0rc1``, or ``0.7.4`` for the first candidate);
- releases whose every file is yanked are not baselines.

The list of releases comes from the package index (PEP 691 JSON, ``KERNELWATCH_PACKAGE_INDEX_URL``)
or, on a service without network, from the wheelhouse's file names
(``KERNELWATCH_WHEELHOUSE``). An operator can always name the baseline instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from packaging.version import InvalidVersion, Version

PACKAGE = "flashinfer-python"
PEP691 = "application/vnd.pypi.simple.v1+json"
# flashinfer_python-0.6.18.post1-cp39-abi3-manylinux_2_28_x86_64.whl, ...-0.5.3.tar.gz, and the
# repacked ...whl.tar.xz of a large wheel.
_FILE_RE = re.compile(r"^flashinfer[_-]python-([0-9][^-]*?)(?:-|\.tar\.gz$|\.zip$)", re.I)


class BaselineUnavailable(RuntimeError):
    """No list of FlashInfer's releases could be had (index unreachable, empty wheelhouse)."""


@dataclass(frozen=True)
class ReleaseList:
    versions: tuple[str, ...]  # PEP 440 order, oldest first, yanked ones left out
    source: str  # "index <url>" or "wheelhouse <folder>"


def _sorted(versions: Iterable[str]) -> tuple[str, ...]:
    parsed: dict[Version, str] = {}
    for v in versions:
        try:
            parsed.setdefault(Version(v), str(Version(v)))
        except InvalidVersion:
            continue
    return tuple(parsed[v] for v in sorted(parsed))


def previous_release(version: str, releases: Iterable[str]) -> str | None:
    """The baseline of ``version`` among ``releases`` by the rule above; None when FlashInfer
    published nothing before it."""
    new = Version(version)
    older = [Version(v) for v in _sorted(releases) if Version(v) < new]
    if not (new.is_prerelease or new.is_devrelease):
        older = [v for v in older if not (v.is_prerelease or v.is_devrelease)]
    return str(older[-1]) if older else None


def parse_index(doc: dict[str, Any]) -> tuple[str, ...]:
    """Versions of a PEP 691 project page, leaving out those whose every file is yanked."""
    files = doc.get("files") or []
    live: set[str] = set()
    seen: set[str] = set()
    for f in files:
        m = _FILE_RE.match(str(f.get("filename", "")))
        if not m:
            continue
        seen.add(m.group(1))
        if not f.get("yanked"):
            live.add(m.group(1))
    listed = [str(v) for v in doc.get("versions") or seen]
    return _sorted(v for v in listed if v not in seen or v in live)


def index_releases(index_url: str, timeout: float = 5.0) -> ReleaseList:
    """Short timeout: the webhook waits on it, and GitHub gives a delivery 10 s."""
    url = f"{index_url.rstrip('/')}/{PACKAGE}/"
    try:
        resp = httpx.get(url, headers={"Accept": PEP691}, timeout=timeout,
                         follow_redirects=True)
        resp.raise_for_status()
        doc = resp.json()
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        raise BaselineUnavailable(f"package index {url}: {exc}") from exc
    versions = parse_index(doc)
    if not versions:
        raise BaselineUnavailable(f"package index {url} lists no {PACKAGE} release")
    return ReleaseList(versions, f"index {index_url}")


def wheelhouse_releases(folder: str | Path) -> ReleaseList:
    path = Path(folder)
    names = [p.name for p in path.iterdir()] if path.is_dir() else []
    versions = _sorted(m.group(1) for n in names if (m := _FILE_RE.match(n)))
    if not versions:
        raise BaselineUnavailable(f"wheelhouse {folder} holds no {PACKAGE} file")
    return ReleaseList(versions, f"wheelhouse {folder}")


def known_releases(index_url: str, wheelhouse: str) -> ReleaseList:
    """FlashInfer's releases: from the wheelhouse when the service is configured with one (a
    node without network), else from the package index."""
    if wheelhouse:
        return wheelhouse_releases(wheelhouse)
    return index_releases(index_url)
