"""Bearer tokens for writes. Only the sha256 of a token is stored: a leaked database does not
leak a usable credential. Tokens are long random strings, so a plain (unsalted) hash is enough
and lets a lookup be one indexed equality."""

from __future__ import annotations

import hashlib
import os
import secrets
from datetime import UTC, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kernelwatch.core.models import Token, utcnow
from kernelwatch.core.settings import get_settings

LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_token(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def create_token(session: Session, name: str) -> str:
    """Create a token named ``name`` and return its plaintext (shown once, never stored)."""
    if session.scalar(select(Token.id).where(Token.name == name)) is not None:
        raise ValueError(f"a token named {name!r} already exists; pick another --name")
    plaintext = secrets.token_urlsafe(32)
    session.add(Token(name=name, token_hash=hash_token(plaintext)))
    session.flush()
    return plaintext


def verify_token(session: Session, plaintext: str) -> Token | None:
    """The live token whose hash matches, with ``last_used_at`` updated (to the minute); None
    otherwise."""
    if not plaintext:
        return None
    token = session.scalar(select(Token).where(Token.token_hash == hash_token(plaintext)))
    if token is None or token.revoked:
        return None
    now = utcnow()
    last = token.last_used_at
    if last is not None and last.tzinfo is None:  # SQLite drops the zone; stored times are UTC
        last = last.replace(tzinfo=UTC)
    # Written at most once a minute: every request of a client uses the same token row, and an
    # UPDATE per request would hold that row's lock until each request commits, serialising
    # concurrent submissions behind one another.
    if last is None or now - last > LAST_USED_RESOLUTION:
        token.last_used_at = now
    return token


def ensure_local_token(session: Session) -> str | None:
    """On a fresh install (no token at all) create one named ``local``, save its plaintext in
    ``settings.token_file`` (mode 0600) where the CLI finds it, and return it. Otherwise None:
    an existing installation keeps its tokens and the file is left alone."""
    if session.scalar(select(func.count()).select_from(Token)):
        return None
    plaintext = create_token(session, "local")
    path = get_settings().token_file
    path.parent.mkdir(parents=True, exist_ok=True)
    # Create with 0600 from the start so the secret is never world-readable, even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(plaintext + "\n")
    os.chmod(path, 0o600)
    return plaintext


def read_local_token() -> str | None:
    """The token the CLI uses: ``KERNELWATCH_TOKEN``, else the file ``kernelwatch up`` wrote."""
    env = os.environ.get("KERNELWATCH_TOKEN", "").strip()
    if env:
        return env
    path = get_settings().token_file
    if path.exists():
        return path.read_text().strip() or None
    return None
