"""One settings class for every process (prefix ``KERNELWATCH_``).

With nothing configured kernelwatch runs embedded: a SQLite database and a SQLite-backed
Celery broker under the user's data directory, so ``kernelwatch up`` works on a laptop.
Point ``KERNELWATCH_DATABASE_URL`` at Postgres and ``KERNELWATCH_BROKER_URL`` at Redis for a
real deployment; the code is the same.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from platformdirs import user_data_dir
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    return Path(user_data_dir("kernelwatch", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KERNELWATCH_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str = ""
    broker_url: str = ""
    # Prefix of every Celery queue name; tests use a unique one so parallel runs never meet.
    queue_prefix: str = "kw"

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8050
    # Where the CLI and notifications find the service.
    api_url: str = "http://127.0.0.1:8000"
    dashboard_url: str = "http://127.0.0.1:8050"
    # Reads are open unless this is set.
    require_token_for_reads: bool = False
    max_body_bytes: int = 1024 * 1024

    # Worker
    worker_tags: str = ""  # comma-separated operator tags added to the detected ones
    worker_name: str = ""
    heartbeat_seconds: float = 10.0
    node_stale_seconds: float = 60.0
    wheelhouse: str = ""  # folder of wheels for nodes without a package index
    envs_dir: Path | None = None  # one virtualenv per FlashInfer version lives here
    chunk_points: int = 0  # 0: split a sweep across the live nodes of a tag

    # Release CI
    webhook_secret: str = ""
    notify_url: str = ""
    release_suite: str = ""  # path to a YAML sweep spec; default: the one shipped in core/
    # Cross-check every release's GPU points with flashinfer_benchmark.py (core.crosscheck);
    # off: as each suite entry says (its `crosscheck`).
    release_crosscheck: bool = False
    # Before a node measures its first run of a release, build the JIT modules of all the
    # release's runs queued for its tag side by side (worker.prebuild); off: each run builds
    # what it calls as it goes.
    release_prebuild: bool = True
    # Seconds the side-by-side builds may take; those still running then are stopped and the
    # runs build the rest as they measure (a build that never ends must not hold the release).
    # 0.7.4's sampling module alone took more than 540 s on an H100: a limit near that stops
    # it just before it ends, and its run then builds it again from the start.
    release_prebuild_timeout: float = 1800.0
    # Measure each of a release's runs as soon as its own build ends, while slower builds go
    # on (worker.prebuild); off: every run waits for the release's last build.
    release_measure_while_building: bool = True
    # The CPU priority (nice) of the builds' harnesses and their compilers: below the
    # measuring harness's, so that compiling beside a measurement does not delay its launches.
    release_build_niceness: int = Field(default=10, ge=0, le=19)
    flashinfer_repo: str = "flashinfer-ai/flashinfer"
    # The source archive of a release's tag, for its benchmarks/flashinfer_benchmark.py (the
    # cross-check); a wheelhouse's copy is used first (worker.benchmark_scripts).
    benchmarks_url: str = "https://github.com/{repo}/archive/refs/tags/v{version}.tar.gz"
    # Where FlashInfer's list of releases is read (PEP 691 JSON) to choose a release's
    # baseline; a configured wheelhouse is read instead (core.baseline).
    package_index_url: str = "https://pypi.org/simple"
    regression_threshold: float = 0.03
    # Per-kernel thresholds for the release flow, e.g. '{"batch_prefill": 0.05}' (JSON).
    kernel_thresholds: dict[str, float] = Field(default_factory=dict)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'kernelwatch.sqlite'}"

    @property
    def shown_database_url(self) -> str:
        """The database URL as messages print it: its password masked."""
        from sqlalchemy.engine import make_url

        return make_url(self.resolved_database_url).render_as_string(hide_password=True)

    @property
    def resolved_broker_url(self) -> str:
        if self.broker_url:
            return self.broker_url
        return f"sqla+sqlite:///{self.data_dir / 'broker.sqlite'}"

    @property
    def resolved_envs_dir(self) -> Path:
        return self.envs_dir or self.data_dir / "envs"

    @property
    def token_file(self) -> Path:
        return self.data_dir / "token"

    @property
    def embedded(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    def ensure_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
