"""A release's baseline is FlashInfer's previous release by PEP 440, read from the package
index's listing (a recorded PEP 691 page of flashinfer-python) or the wheelhouse's files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernelwatch.core.baseline import (
    BaselineUnavailable,
    index_releases,
    known_releases,
    parse_index,
    previous_release,
    wheelhouse_releases,
)
from tests.index_support import LISTING as INDEX
from tests.index_support import serve_index


def _listing() -> dict[str, object]:
    return dict(json.loads(INDEX.read_text()))


def test_final_releases_compare_with_the_previous_final_one() -> None:
    releases = parse_index(_listing())
    assert previous_release("0.7.4", releases) == "0.7.2.post1"
    assert previous_release("0.7.2.post1", releases) == "0.7.2"  # a post-release is a release
    assert previous_release("0.6.18.post1", releases) == "0.6.18"
    assert previous_release("0.6.0", releases) == "0.5.3"
    assert previous_release("0.2.0.post1", releases) is None  # the first on the index
    # A release newer than the listing (the index has not caught up yet): the newest listed.
    assert previous_release("0.7.5", releases) == "0.7.4"


def test_pre_releases_are_skipped_by_finals_and_compared_with_the_latest_release() -> None:
    releases = ["0.7.2", "0.7.3rc1", "0.7.3rc2", "0.7.3", "0.8.0.dev1", "0.8.0rc1"]
    assert previous_release("0.7.3", releases) == "0.7.2"  # its candidates are not baselines
    assert previous_release("0.8.0", releases) == "0.7.3"
    assert previous_release("0.7.3rc2", releases) == "0.7.3rc1"
    assert previous_release("0.7.3rc1", releases) == "0.7.2"
    assert previous_release("0.8.0rc2", releases) == "0.8.0rc1"
    assert previous_release("0.8.0rc1", releases) == "0.8.0.dev1"
    # v-prefixed or unnormalised spellings are PEP 440 versions too.
    assert previous_release("0.7.3", ["v0.7.2", "0.7.03"]) == "0.7.2"


def test_a_release_whose_files_are_all_yanked_is_not_a_baseline() -> None:
    doc = _listing()
    files = [dict(f) for f in doc["files"]]  # type: ignore[attr-defined]
    for f in files:
        if "-0.7.2.post1" in f["filename"]:
            f["yanked"] = "broken wheel"
    assert previous_release("0.7.4", parse_index({**doc, "files": files})) == "0.7.2"


def test_wheelhouse_file_names_list_the_releases(tmp_path: Path) -> None:
    for name in ("flashinfer_python-0.6.18.post1-py3-none-any.whl",
                 "flashinfer_python-0.7.4-py3-none-any.whl.tar.xz",  # a repacked large wheel
                 "flashinfer_python-0.5.3.tar.gz", "apache_tvm_ffi-0.1.0-py3-none-any.whl",
                 "unpack.sh"):
        (tmp_path / name).write_text("")
    found = wheelhouse_releases(tmp_path)
    assert found.versions == ("0.5.3", "0.6.18.post1", "0.7.4")
    assert found.source == f"wheelhouse {tmp_path}"
    # A configured wheelhouse is read instead of the index (the node may have no network).
    assert known_releases("http://127.0.0.1:9/unused", str(tmp_path)).versions == found.versions
    assert previous_release("0.7.4", found.versions) == "0.6.18.post1"
    with pytest.raises(BaselineUnavailable, match="holds no flashinfer-python"):
        wheelhouse_releases(tmp_path / "missing")


@pytest.fixture
def index_url() -> Iterator[str]:
    yield from serve_index()


def test_the_index_is_read_over_http_as_pep_691_json(index_url: str) -> None:
    found = index_releases(index_url)
    assert found.source == f"index {index_url}"
    assert found.versions[0] == "0.2.0.post1" and found.versions[-1] == "0.7.4"
    assert known_releases(index_url, "").versions == found.versions
    with pytest.raises(BaselineUnavailable, match="package index"):
        index_releases("http://127.0.0.1:9/simple", timeout=2)
