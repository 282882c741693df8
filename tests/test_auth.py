"""Writes need a bearer token; tokens are stored as sha256 hashes; reads are open unless
configured; a fresh install gets a local token saved where the CLI finds it."""

from __future__ import annotations

import hashlib
import stat

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from kernelwatch.core.db import session_scope
from kernelwatch.core.models import Token
from kernelwatch.core.settings import Settings
from kernelwatch.core.tokens import ensure_local_token, read_local_token
from tests.api_support import auth, decode_spec, make_client, new_token
from tests.conftest import configure


def test_write_without_token_is_401(kw_env: Settings) -> None:
    c = make_client()
    r = c.post("/v1/jobs", json=decode_spec())
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert "token" in r.json()["detail"]
    assert c.post("/v1/jobs/1/cancel").status_code == 401
    # Authentication comes before the body: no validation details for an anonymous client.
    assert c.post("/v1/jobs", json={"kernel": "nope"}).status_code == 401


def test_bad_and_revoked_tokens_are_401(kw_env: Settings, session: Session) -> None:
    c = make_client()
    good = new_token("a")
    r = c.post("/v1/jobs", json=decode_spec(), headers=auth(good + "x"))
    assert r.status_code == 401 and "invalid" in r.json()["detail"]
    r = c.post("/v1/jobs", json=decode_spec(), headers={"Authorization": f"Basic {good}"})
    assert r.status_code == 401
    with session_scope() as s:
        s.scalars(select(Token)).one().revoked = True
    assert c.post("/v1/jobs", json=decode_spec(), headers=auth(good)).status_code == 401


def test_valid_token_writes_and_is_stored_hashed(kw_env: Settings, session: Session) -> None:
    c = make_client()
    plaintext = new_token("ci")
    r = c.post("/v1/jobs", json=decode_spec(), headers=auth(plaintext))
    assert r.status_code == 201
    assert r.json()["submitted_by"] == "ci"
    token = session.scalars(select(Token)).one()
    assert token.token_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert plaintext not in (token.name, token.token_hash)
    assert token.last_used_at is not None


def test_reads_open_by_default_and_closable(kw_env: Settings, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    assert make_client().get("/v1/jobs").status_code == 200
    configure(monkeypatch, require_token_for_reads="true")
    c = make_client()
    plaintext = new_token()
    for path in ("/v1/jobs", "/v1/nodes", "/v1/jobs/1", "/v1/jobs/1/results"):
        assert c.get(path).status_code == 401, path
    assert c.get("/v1/jobs", headers=auth(plaintext)).status_code == 200
    assert c.get("/healthz").status_code == 200  # probes never need a token


def test_fresh_install_creates_local_token_file(kw_env: Settings,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KERNELWATCH_TOKEN", raising=False)
    with session_scope() as s:
        plaintext = ensure_local_token(s)
    assert plaintext
    path = kw_env.token_file
    assert path.read_text().strip() == plaintext
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_local_token() == plaintext
    with session_scope() as s:
        assert ensure_local_token(s) is None  # not a fresh install any more
    monkeypatch.setenv("KERNELWATCH_TOKEN", "from-env")
    assert read_local_token() == "from-env"
    c = make_client()
    assert c.post("/v1/jobs", json=decode_spec(), headers=auth(plaintext)).status_code == 201
