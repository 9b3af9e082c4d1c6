"""One frozen settings class for the whole system.

Every value comes from environment variables prefixed ``POA_`` (or a ``.env`` /
``POA_SETTINGS_FILE`` file); with none set, everything runs on the embedded
defaults: a local Kafka broker under ``.poa/kafka`` and an embedded chdb store
under ``.poa/store``. Names carry their units (``_s``, ``_ms``, ``_micro``).
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from poa_stream.streams.policy import MICRO_PER_TOKEN, Policy, read_keys_file

__all__ = ["MICRO_PER_TOKEN", "Settings", "get_settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="POA_",
        env_file=os.environ.get("POA_SETTINGS_FILE", ".env"),
        extra="ignore",
        frozen=True,
    )

    # --- working directory (embedded defaults live under it)
    home: Path = Path(".poa")

    # --- Kafka
    kafka_bootstrap: str | None = None  # None => `poa demo` starts the local broker
    kafka_local_port: int = 19092
    kafka_local_controller_port: int = 19093
    kafka_data_dir: Path | None = None  # default: <home>/kafka
    kafka_heap: str = "512m"
    client_timeout_s: float = 5.0  # poa.client: connect and per-send acknowledgement deadline
    # security, one configuration for every client (streams/connection.py)
    kafka_security_protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    kafka_sasl_mechanism: str | None = None  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 (SASL_*: default PLAIN)
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None  # PEM CA bundle for the brokers' certificates (None: system CAs)
    kafka_ssl_certfile: Path | None = None  # client certificate, for brokers that require TLS client auth
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_ssl_check_hostname: bool = True
    kafka_local_security: str = "plaintext"  # `poa kafka start`: plaintext | all (adds SSL and SASL listeners)
    topic_partitions: int = 3
    topic_replication_factor: int = 1  # `poa topics create` and the worker's start (1 suits one broker)
    worker_id: str = "poa-worker"
    metrics_host: str = "127.0.0.1"  # the worker's /metrics, /health, /ready (processors/metrics.py)
    metrics_port: int = 9464  # 0: a free port (written to the status file as ops_url); -1: off
    log_level: str = "info"  # poa worker: our loggers' level; libraries stay at warning unless debug
    log_format: str = "text"  # text | json (one object per line)
    worker_batch_max: int = 1000
    worker_batch_within_s: float = 0.5
    worker_idle_release_s: float = 120.0  # liveness valve: release all after this long idle
    worker_session_timeout_s: float = 30.0  # consumer group session: how soon a dead worker's partitions move
    # static group membership (KIP-345): a restarted worker with the same instance id takes its
    # partitions back at once instead of waiting out the dead session; "" = dynamic membership
    worker_instance_id: str = "worker-0"
    # scaled: any number of workers in one consumer group, intake spread over them, one
    # deterministic sequence (processors/scaled.py); single: one worker per deployment that
    # releases caught-up partitions in arrival order (processors/app.py); auto: scaled, except on
    # a store the single topology wrote (processors/app.py resolve_topology)
    worker_topology: str = "auto"
    merge_tick_after_s: float = 2.0  # scaled: nothing released this long while held -> tick idle partitions
    # how often the worker's consumer and producer refresh topic metadata: partitions added to an
    # input topic reach the group (a rebalance) and the owner's producer within this
    worker_metadata_max_age_s: float = 30.0
    order_lateness_s: float = 3600.0  # event time an event may arrive behind later ones and still be ordered
    worker_status_file: Path | None = None  # default: <home>/worker-status.json
    outbox_max_messages: int = 20_000  # output messages per Kafka transaction (streams/outbox.py)
    inbox_prune_interval_s: float = 600.0  # the worker deletes processed events from `inbox`

    # --- ClickHouse
    store_engine: str = "chdb"  # chdb | http
    store_dir: Path | None = None  # chdb data path; default: <home>/store
    clickhouse_url: str = "http://localhost:8123"
    clickhouse_user: str = "default"
    clickhouse_password: SecretStr = SecretStr("")
    clickhouse_database: str = "poa"
    # one writer per store (sinks/lease.py): a writer silent this long may be replaced
    store_lease_ttl_s: float = 30.0
    # live read-only SQL on the embedded store while the worker runs (sinks/ch_http.py): the
    # worker serves ClickHouse's HTTP interface here and writes <store>.sql.json for the CLI
    sql_http_enabled: bool = True
    sql_http_host: str = "127.0.0.1"
    sql_http_port: int = 0  # 0: any free port (the endpoint file says which)
    sql_http_user: str = "reader"
    sql_http_password: SecretStr | None = None  # None: no password (bound to 127.0.0.1 by default)
    # core snapshots beside the store (processors/snapshots.py): restart = newest valid
    # snapshot + the log after it; one every this many logged events and at each epoch close
    snapshot_every_events: int = 20_000  # 0: no snapshots (restart replays the whole log)
    snapshot_dir: Path | None = None  # default: <store_dir>.snapshots (chdb) or <home>/snapshots
    snapshot_keep: int = 3
    replay_batch_events: int = 2000  # `poa replay` stores its rows every this many lines

    # --- economics (shares of each usage fee, in basis points; must sum to 10_000)
    share_contributors_bps: int = 7000
    share_operator_bps: int = 2000
    share_validators_bps: int = 500
    share_protocol_bps: int = 500
    treasury_account: str = "protocol:treasury"
    epoch_s: int = 86_400
    epoch_sweep_passes: int = 1  # full EM passes over all votes at each epoch close (0: off)
    emission_per_epoch_micro: int = 1_000 * MICRO_PER_TOKEN  # emission budget of the first epoch
    emission_decay_bps: int = 100  # each later epoch's budget shrinks by this share
    emission_contributors_bps: int = 8000  # the rest of an epoch's emission goes to validators

    # --- Grafana (`poa grafana push`)
    grafana_url: str | None = None
    grafana_token: SecretStr | None = None

    # --- security
    keys_file: Path | None = None  # JSON account -> hex ed25519 public key (streams/signing.py)
    require_signatures: bool = False

    # --- attribution (a replay must use the same values to reproduce a ledger)
    span_min_tokens: int = 8
    neardup_threshold: float = 0.8  # estimated Jaccard of word 5-gram shingles
    minhash_num_perm: int = 128
    minhash_seed: int = 1
    influence_mix: float = 0.3  # share of the operator's influence scores when spans matched
    attribution_top_k: int = 32  # contributions credited by evidence per usage; the rest: pools
    inherit_defaults: dict[str, float] = {"pretrain": 0.0, "finetune": 0.5, "lora": 0.7,
                                          "distill": 0.8, "merge": 1.0}

    # --- policy overrides: a JSON file of streams.policy.Policy fields (constants included)
    policy_file: Path | None = None

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        if self.store_engine not in ("chdb", "http"):
            raise ValueError("POA_STORE_ENGINE must be 'chdb' or 'http'")
        Policy(**self._policy_fields())  # fee shares and ranges are checked at load
        return self

    def _policy_fields(self) -> dict:
        return {f: getattr(self, f) for f in POLICY_SETTINGS}

    def policy(self) -> Policy:
        """The ledger policy these settings configure: the ``POA_*`` ledger settings above,
        then ``policy_file`` (any Policy field, constants included), and the keys in force
        from ``keys_file`` (streams/policy.py). The store refuses a policy it did not record."""
        data = self._policy_fields()
        data["keys"] = read_keys_file(self.keys_file)
        if self.policy_file is not None:
            try:
                extra = json.loads(Path(self.policy_file).read_text())
            except (OSError, ValueError) as exc:
                raise ValueError(f"cannot read the policy file {self.policy_file}: {exc}") from None
            if not isinstance(extra, dict):
                raise ValueError(f"the policy file {self.policy_file} must hold a JSON object")
            data.update(extra)
        return Policy(**data)

    def kafka(self, bootstrap: str | None = None):
        """The Kafka connection every client uses (streams.connection.KafkaConnection);
        raises KafkaConfigError, naming the setting, when the security settings disagree."""
        from poa_stream.streams.connection import KafkaConnection
        secret = lambda v: v.get_secret_value() if v is not None else None  # noqa: E731
        return KafkaConnection(
            bootstrap=bootstrap or self.bootstrap, security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism, sasl_username=self.kafka_sasl_username,
            sasl_password=secret(self.kafka_sasl_password), ssl_cafile=self.kafka_ssl_cafile,
            ssl_certfile=self.kafka_ssl_certfile, ssl_keyfile=self.kafka_ssl_keyfile,
            ssl_key_password=secret(self.kafka_ssl_key_password), ssl_check_hostname=self.kafka_ssl_check_hostname)

    @property
    def kafka_dir(self) -> Path:
        return self.kafka_data_dir or self.home / "kafka"

    @property
    def status_file(self) -> Path:
        return self.worker_status_file or self.home / "worker-status.json"

    @property
    def store_path(self) -> Path:
        return self.store_dir or self.home / "store"

    def sql_endpoint_file(self, store: Path | None = None) -> Path:
        """Where a worker serving ``store`` (default: this store) over HTTP writes its address."""
        p = Path(store or self.store_path)
        return p.with_name(p.name + ".sql.json")

    @property
    def snapshot_path(self) -> Path:
        """Where the core's snapshots of this store live (beside an embedded store)."""
        if self.snapshot_dir is not None:
            return self.snapshot_dir
        if self.store_engine == "chdb":
            p = self.store_path
            return p.with_name(p.name + ".snapshots")
        return self.home / "snapshots" / self.clickhouse_database

    @property
    def bootstrap(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_local_port}"


# Settings that are also ledger policy fields (the rest of the policy comes from its defaults
# or POA_POLICY_FILE): the core reads them only through Settings.policy().
POLICY_SETTINGS = tuple(f for f in Settings.model_fields if f in Policy.model_fields)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
