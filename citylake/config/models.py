"""The models of ``city.yaml``: the one file an operator writes.

The root knows sources only by their common keys (``name``, ``type``, ``url``);
each adapter owns the model of its own keys and the ingest registry validates a
source against it by ``type``, so this floor never imports an adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
Port = Annotated[int, Field(ge=0, le=65535)]
# number: `readings.value` only; text: `readings.text` only; any: either (a
# status that is sometimes a code, sometimes a word).
MetricType = Literal["number", "text", "any"]
MetricName = Annotated[str, Field(min_length=1, max_length=128)]


class SourceConfig(BaseModel):
    """Keys every source has. Adapter models subclass this and forbid extras."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: Name = Field(description="unique name of this source; becomes `readings.source`")
    type: Name = Field(description="adapter type, e.g. mqtt, modbus, gb28181")
    url: str = Field(description="where to connect or listen, e.g. mqtt://127.0.0.1:1883")
    enabled: bool = Field(default=True, description="false keeps the source configured but idle")
    metric_types: dict[MetricName, MetricType] = Field(
        default_factory=dict,
        description="metric -> number | text | any; a metric not named keeps the type it is first seen "
        "with, and a value of the other type is rejected",
    )

    @field_validator("url")
    @classmethod
    def _url_has_scheme_and_host(cls, value: str) -> str:
        parts = urlsplit(value)
        if not parts.scheme or not (parts.hostname or parts.path):
            raise ValueError(f"expected scheme://host:port, got {value!r}")
        return value


class IngestConfig(BaseModel):
    """How ingest batches, lands and holds back."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flush_max_rows: int = Field(default=50_000, ge=1, description="flush a table's buffer at this many rows")
    flush_max_age_s: float = Field(default=0.5, gt=0, description="flush at this age: bounds ack latency")
    max_buffered_rows: int = Field(
        default=500_000, ge=1, description="above this, streaming sources are held back and polls skipped"
    )
    live_pubsub: str | None = Field(
        default=None,
        max_length=128,
        description="Dapr pub/sub component to publish landed readings to (needs a sidecar: DAPR_HTTP_PORT)",
    )
    live_topic: str = Field(default="readings", min_length=1, max_length=128, description="the live topic")
    landing_max_bytes: int | None = Field(
        default=None, ge=1, description="landing zone bound; at it flushes wait and sources are held back"
    )
    metric_types_max: int = Field(
        default=100_000,
        ge=1,
        description="(source, metric) types fixed at first sight that are remembered; beyond, the least "
        "recently seen is forgotten (and fixed again when it next arrives)",
    )
    accept_past_days: float | None = Field(
        default=3650,
        gt=0,
        description="rows whose event time is older than this many days are rejected (null: only 2000..2100)",
    )
    accept_future_s: float | None = Field(
        default=86_400,
        ge=0,
        description="rows whose event time is this far ahead of the ingest clock are rejected: a device "
        "clock in 2099 would pin every 'latest' query (null: only 2000..2100)",
    )
    reject_rate_per_s: float = Field(
        default=50.0, gt=0, description="rejects one source may write per second; beyond, counted and dropped"
    )
    reject_burst: int = Field(default=500, ge=1, description="rejects one source may write at once")


class DeviceMetadata(BaseModel):
    """What an operator may say about a device a source configures (a Modbus
    slave, an OPC UA device): it lands in `devices` when ingest starts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, max_length=256, description="devices.name")
    device_type: str | None = Field(
        default=None, max_length=128, description="devices.type, e.g. water_meter"
    )
    district: str | None = Field(
        default=None, max_length=128, description="devices.district: the place name, e.g. Gulou"
    )
    civil_code: str | None = Field(
        default=None, pattern=r"^[0-9]{2,12}$", description="devices.civil_code: GB/T 2260 code, e.g. 320106"
    )
    address: str | None = Field(
        default=None, max_length=512, description="devices.address (a street address)"
    )
    longitude: float | None = Field(default=None, ge=-180, le=180, description="WGS 84")
    latitude: float | None = Field(default=None, ge=-90, le=90, description="WGS 84")

    @model_validator(mode="after")
    def _both_coordinates(self) -> DeviceMetadata:
        if (self.longitude is None) != (self.latitude is None):
            raise ValueError("give both longitude and latitude, or neither")
        return self


class FlinkConfig(BaseModel):
    """How pipelines run: Flink's embedded mini-cluster unless ``rest_url`` is set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    parallelism: int = Field(default=1, ge=1, le=256)
    checkpoint_interval_s: float = Field(
        default=5.0, gt=0, description="streaming jobs commit lake files at each checkpoint"
    )
    monitor_interval_s: float = Field(
        default=1.0, gt=0, description="how often streaming jobs look for new landing files"
    )
    rest_url: str | None = Field(
        default=None, description="Flink session cluster REST endpoint for `pipeline submit`"
    )
    allowed_lateness_s: float = Field(
        default=60.0, ge=0, description="event-time windows wait this long for late readings"
    )
    dedupe_window_s: float = Field(
        default=300.0,
        gt=0,
        description="a reading's (device, metric, ts) key is remembered this long to drop repeats",
    )
    local_heap_mb: int | None = Field(
        default=1024,
        ge=256,
        description="heap of each `pipeline run` mini-cluster JVM (-Xmx); unset: the JVM's default, "
        "a quarter of the machine's memory",
    )
    local_managed_mb: int = Field(
        default=64,
        ge=16,
        description="managed memory of the mini-cluster's TaskManager (RocksDB, batch sorts; "
        "streaming state is on the heap); batch runs take at least 256",
    )
    local_network_mb: int = Field(
        default=32, ge=16, description="network buffers of the mini-cluster's TaskManager (direct memory)"
    )


class AlertRule(BaseModel):
    """One alert rule. ``threshold`` compares each reading's value; ``rate``
    compares its change per second since the device's previous reading of the
    metric. An alert opens when a reading crosses ``above`` (or goes under
    ``below``) and closes at the first reading back inside the bounds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name = Field(description="unique rule name; becomes `alerts.rule`")
    metric: str = Field(min_length=1, max_length=128, description="the `readings.metric` it watches")
    kind: Literal["threshold", "rate"] = "threshold"
    above: float | None = Field(default=None, description="alert while value (or rate per s) > above")
    below: float | None = Field(default=None, description="alert while value (or rate per s) < below")
    severity: Literal["info", "warning", "critical"] = "warning"
    device_prefix: str | None = Field(
        default=None, max_length=128, description="only devices whose id starts with this"
    )
    message: str | None = Field(default=None, max_length=500, description="text for `alerts.message`")

    @model_validator(mode="after")
    def _has_a_bound(self) -> AlertRule:
        if self.above is None and self.below is None:
            raise ValueError(f"rule {self.name!r} needs `above`, `below` or both")
        if self.above is not None and self.below is not None and self.below >= self.above:
            raise ValueError(
                f"rule {self.name!r}: `below` ({self.below}) must be less than `above` ({self.above})"
            )
        return self


# A table or column name a data engineer declares: a plain SQL identifier in
# Flink and DuckDB alike (no hyphen, no quoting needed anywhere).
Identifier = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
# The column types an output table may declare, as Flink and DuckDB both know
# them; `timestamp` is an instant (UTC), as every citylake time column is.
ColumnType = Literal["string", "double", "float", "bigint", "int", "boolean", "timestamp", "bytes"]


class OutputTableConfig(BaseModel):
    """One lake table a user job writes: its columns, in order, with types.

    ``time_column`` partitions the table by date like the built-in tables (and
    lets retention and backfills select by it); without one the table is a
    single unpartitioned directory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    columns: dict[Identifier, ColumnType] = Field(
        min_length=1,
        description="column name -> type (string, double, float, bigint, int, boolean, "
        "timestamp, bytes), in the order the job's SELECT produces them",
    )
    required: list[Identifier] = Field(
        default_factory=list, description="columns that are never null (the lake's contract)"
    )
    time_column: Identifier | None = Field(
        default=None, description="a `timestamp` column: the table is partitioned by its UTC date"
    )
    description: str = Field(default="", max_length=500)

    @model_validator(mode="after")
    def _columns_known(self) -> OutputTableConfig:
        if self.time_column is not None and self.columns.get(self.time_column) != "timestamp":
            raise ValueError(
                f"time_column {self.time_column!r} must be one of the columns, of type timestamp"
            )
        if "date" in self.columns:
            raise ValueError("`date` is the lake's partition column; name the column otherwise")
        unknown = sorted(set(self.required) - set(self.columns))
        if unknown:
            raise ValueError(f"required names columns that are not declared: {', '.join(unknown)}")
        return self


class UserJobConfig(BaseModel):
    """A data engineer's own Flink job, kept outside citylake's source tree.

    Either ``sql``: a file holding one SELECT over the ``landing_<input>``
    tables (the common case; the job has exactly one output), or ``module``: a
    Python module with ``transform(t_env, config) -> {output: Table}`` (found on
    ``path``, or installed). Relative paths are relative to city.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sql: Path | None = Field(default=None, description="the job's SELECT, a .sql file")
    module: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$",
        description="dotted name of a module with transform(t_env, config)",
    )
    path: Path | None = Field(default=None, description="module: a directory put on sys.path first")
    inputs: list[Identifier] = Field(
        default_factory=list, description="landing tables the job reads, as landing_<table>"
    )
    lake_inputs: list[Identifier] = Field(
        default_factory=list,
        description="lake tables the job reads, as lake_<table>, in batch mode only: a run reads the "
        "table's snapshot when it starts (compaction rewrites the lake's files, which a streaming "
        "scan of the directory would read twice)",
    )
    outputs: dict[Identifier, OutputTableConfig] = Field(min_length=1, description="lake tables it writes")
    description: str = Field(default="", max_length=500)

    @model_validator(mode="after")
    def _one_kind(self) -> UserJobConfig:
        if not self.inputs and not self.lake_inputs:
            raise ValueError("name what the job reads: `inputs` (landing tables), `lake_inputs` or both")
        if (self.sql is None) == (self.module is None):
            raise ValueError("give exactly one of `sql` (a .sql file) or `module` (a Python module)")
        if self.sql is not None and len(self.outputs) != 1:
            raise ValueError(
                "a `sql` job's one SELECT writes one output table; a job writing several is a `module`"
            )
        if self.path is not None and self.module is None:
            raise ValueError("`path` is where a `module` is found; a `sql` job has none")
        return self


class PipelinesConfig(BaseModel):
    """The Flink jobs: how they run, which ones, and the alert rules.

    The ``alerts`` job takes its rules from ``alerts_from`` (the alerts
    service, where rules are created through its API) or, unset, from
    ``alerts``; ``citylake pipeline run alerts --rules-from`` overrides both."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flink: FlinkConfig = FlinkConfig()
    jobs: list[Name] = Field(default_factory=lambda: ["readings"])
    combine: bool = Field(
        default=True,
        description="`citylake run` runs all `jobs` as ONE streaming Flink job (one mini-cluster JVM, "
        "landing readings read and deduplicated once); false: one job and JVM each",
    )
    alerts: list[AlertRule] = Field(
        default_factory=list,
        max_length=1000,
        description="rules of the `alerts` job when `alerts_from` is unset (and the alerts service's "
        "rules until its first change); a streaming job follows edits of this file",
    )
    alerts_from: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="where the `alerts` job reads its rules instead: the alerts service's URL "
        "(http://127.0.0.1:8082) or its Dapr app id (`alerts`, through the job's sidecar, DAPR_HTTP_PORT); "
        "a streaming job re-plans itself from a savepoint when they change",
    )
    alerts_poll_s: float = Field(
        default=5.0, gt=0, le=3600, description="how often a streaming `alerts` job asks for its rules"
    )
    user_jobs: dict[Name, UserJobConfig] = Field(
        default_factory=dict,
        description="data engineers' own jobs, by name: run and submitted like the built-in ones "
        "(README, Write your own job)",
    )

    @model_validator(mode="after")
    def _rule_names_unique(self) -> PipelinesConfig:
        names = [rule.name for rule in self.alerts]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"alert rule names used twice: {', '.join(twice)}")
        return self

    @model_validator(mode="after")
    def _outputs_written_once(self) -> PipelinesConfig:
        writers: dict[str, str] = {}
        for name, job in self.user_jobs.items():
            for output in job.outputs:
                if output in writers:
                    raise ValueError(
                        f"user jobs {writers[output]} and {name} both write the table {output!r}"
                    )
                writers[output] = name
        return self


class ServiceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: Port = 8080
    api_keys: list[str] = Field(
        default_factory=list,
        description="keys with the read and write scopes; with any key set, every route but /healthz "
        "(and /docs, /openapi.json) needs X-API-Key",
    )
    read_keys: list[str] = Field(
        default_factory=list, description="keys with the read scope only (alerts: cannot change rules)"
    )
    keys_file: Path | None = Field(
        default=None,
        description="more keys, `read <key>` or `write <key>` per line (a Kubernetes Secret as a file)",
    )
    allow_open: bool = Field(
        default=False,
        description="serve without keys on a non-loopback host; off, such a service refuses to start",
    )
    sql_max_rows: int = Field(default=10_000, ge=1)
    sql_timeout_s: float = Field(default=10.0, gt=0)
    sql_max_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="largest SQL response body, in bytes"
    )
    sql_max_chars: int = Field(default=100_000, ge=16, description="longest SQL statement, in characters")
    sql_max_concurrent: int = Field(
        default=4, ge=1, description="SQL queries run at once; more are answered 429"
    )
    query_timeout_s: float = Field(
        default=10.0, gt=0, description="time limit of each lake query a /v1 route (not /v1/sql) runs"
    )
    memory_limit_mb: int = Field(
        default=1024, ge=64, description="memory DuckDB may use for the service's lake queries, in MiB"
    )
    sql_memory_mb: int = Field(
        default=1024,
        ge=384,
        description="query: hard address-space limit of each /v1/sql worker process, in MiB (RLIMIT_AS)",
    )
    sql_temp_max_mb: int = Field(
        default=256,
        ge=0,
        description="query: disk each /v1/sql worker may spill to, under <data_dir>/tmp/query-sql, in MiB",
    )
    duckdb_threads: int = Field(
        default=1, ge=1, le=64, description="query: DuckDB threads of the service and of each SQL worker"
    )
    max_concurrent_requests: int = Field(
        default=16,
        ge=1,
        description="query: /v1 requests served at once (SQL included); more are answered 429",
    )
    page_max_rows: int = Field(default=10_000, ge=1, description="largest `limit` of a paged route")
    readings_max_range_days: float = Field(
        default=31, gt=0, description="longest from/to range of /v1/devices/{id}/readings"
    )
    rollups_1m_max_range_days: float = Field(
        default=92, gt=0, description="longest from/to range of 1-minute rollups"
    )
    rollups_1h_max_range_days: float = Field(
        default=1830, gt=0, description="longest from/to range of 1-hour rollups"
    )
    live_pubsub: str | None = Field(
        default=None,
        max_length=128,
        description="query: Dapr pub/sub component of the live feed; set, the hot tier serves latest values",
    )
    live_topic: str = Field(default="readings", min_length=1, max_length=128, description="query: live topic")
    hot_window_s: float = Field(
        default=600.0, gt=0, le=86_400, description="query: recent readings the hot tier keeps in memory"
    )
    max_request_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="largest request body; larger ones are answered 413"
    )
    # The serving store (services/query/store.py): the lake's newest days in
    # a DuckDB file under <data_dir>/cache/query/, in the order ranges read them.
    serving_days: int = Field(
        default=8,
        ge=0,
        le=366,
        description="query: newest days of readings and readings_1h the serving store keeps (0: no store)",
    )
    serving_1m_days: int = Field(
        default=2,
        ge=0,
        le=366,
        description="query: newest days of readings_1m the serving store keeps (0: none)",
    )
    serving_max_rows: int = Field(
        default=400_000_000,
        ge=1,
        description="query: rows of one table the serving store keeps at most; past it the oldest days leave",
    )
    serving_memory_mb: int = Field(
        default=512, ge=64, description="query: memory DuckDB may use for the serving store, in MiB"
    )
    serving_refresh_s: float = Field(
        default=0.5, gt=0, le=3600, description="query: how often the serving store looks for lake changes"
    )
    # The hot tier's bounds (services/query/hot_tier.py HotTierBounds): at the
    # defaults its latest values take at most 150k x 32 x 29 B = 133 MiB and
    # the window at most 4M x 45 B = 172 MiB, whatever the live feed invents.
    hot_max_devices: int = Field(
        default=150_000, ge=1, description="query: devices the hot tier holds; past it the least recent leave"
    )
    hot_max_metrics: int = Field(
        default=32,
        ge=1,
        le=4096,
        description="query: distinct metrics the hot tier holds; past it the rarest leave with their devices",
    )
    hot_max_units: int = Field(default=1024, ge=1, description="query: distinct units the hot tier holds")
    hot_max_window_rows: int = Field(
        default=4_000_000,
        ge=1,
        description="query: readings of the hot tier's recent window; past it the oldest leave",
    )


class ServicesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    query: ServiceConfig = ServiceConfig()
    registry: ServiceConfig = ServiceConfig(port=8081)
    alerts: ServiceConfig = ServiceConfig(port=8082)


class MaintenanceConfig(BaseModel):
    """``citylake lake maintain``: how often each maintenance task runs and how
    much one run may do, so a run on a 2-core edge node stays short."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    compact_every_s: float = Field(default=300.0, ge=1, description="seconds between compaction runs")
    retain_every_s: float = Field(default=3600.0, ge=1, description="seconds between retention runs")
    vacuum_every_s: float = Field(default=300.0, ge=1, description="seconds between vacuum runs")
    compact_max_groups: int = Field(
        default=8, ge=1, description="merged file groups one compaction run commits per table at most"
    )
    tables: list[Name] = Field(
        default_factory=list, description="tables compacted and vacuumed; empty: every table"
    )


class LakeConfig(BaseModel):
    """Lake maintenance: compaction, retention, and how long replaced files stay."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retention_days: dict[str, int] = Field(
        default_factory=dict, description="per dated table, date partitions kept (today included)"
    )
    compact_target_mb: int = Field(default=128, ge=1, description="compaction merges files up to this size")
    compact_memory_mb: int = Field(
        default=256, ge=16, description="DuckDB memory for one compaction; the sort spills to disk beyond it"
    )
    compact_min_files: int = Field(
        default=4, ge=2, description="a partition is compacted at this many small files"
    )
    vacuum_grace_s: float = Field(
        default=600.0, ge=0, description="replaced files stay this long for queries already planned"
    )
    maintenance: MaintenanceConfig = Field(
        default_factory=MaintenanceConfig, description="the schedule of `citylake lake maintain`"
    )

    @field_validator("retention_days")
    @classmethod
    def _positive(cls, value: dict[str, int]) -> dict[str, int]:
        bad = {t: d for t, d in value.items() if d < 1}
        if bad:
            raise ValueError(f"retention must keep at least 1 day: {bad}")
        return value


class LandingConfig(BaseModel):
    """How long landing files stay once the lake holds their rows
    (``citylake lake gc-landing``, lake/landing_gc.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    replay_window_h: float = Field(
        default=3.0,
        ge=0,
        description="a landing file stays this long after it landed, even once every job consumed it",
    )
    collect_max_files: int = Field(
        default=600,
        ge=1,
        description="landing files one collector run examines (oldest first): bounds its cost",
    )
    collect_every_s: float = Field(
        default=60.0, ge=1, description="`citylake lake maintain` runs the collector this often"
    )


class SyncConfig(BaseModel):
    """Edge → region sync (``citylake sync push`` at an edge, ``citylake sync
    serve`` at its region). One model for both ends: a site reads the keys of
    its role and ignores the others."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The edge: where and how it ships its lake.
    region_url: str | None = Field(
        default=None, description="edge: the region's sync receiver, e.g. http://region.example:8090"
    )
    api_key: str | None = Field(
        default=None, description="edge: sent as X-API-Key to the region (its key for this site)"
    )
    api_key_file: Path | None = Field(
        default=None, description="edge: a file holding that key instead (a Kubernetes Secret as a file)"
    )
    region_ca_file: Path | None = Field(
        default=None, description="edge: CA certificates that verify an https region_url (default: system's)"
    )
    tables: list[Name] = Field(default_factory=list, description="edge: tables shipped; empty: every table")
    bandwidth_bytes_per_s: int | None = Field(
        default=None, ge=1024, description="edge: uplink budget of the sync (token bucket); unset: unlimited"
    )
    burst_bytes: int = Field(
        default=64 * 1024, ge=1024, description="edge: bytes the token bucket lets out at once"
    )
    chunk_bytes: int = Field(
        default=1024 * 1024,
        ge=4096,
        le=64 * 1024 * 1024,
        description="edge: upload chunk; a cut costs at most one chunk again",
    )
    commit_batch_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1, description="edge: partitions are committed after this many bytes"
    )
    wire_codec: str = Field(
        default="zstd-3",
        pattern=r"^(none|zstd-([1-9]|1[0-9]))$",
        description="edge/region pushing: codec of upload chunks on this sender's link, `zstd-<level>` or "
        "`none` (sync/README.md, Compression: zstd-9 on a slow edge uplink, zstd-1 on a LAN)",
    )
    interval_s: float = Field(default=10.0, gt=0, description="edge: time between rounds with --follow")
    timeout_s: float = Field(default=30.0, gt=0, description="edge: connect/read/write timeout of a request")
    retry_max_s: float = Field(
        default=10.0, gt=0, description="edge: longest wait between retries of a failed request"
    )
    retry_window_s: float = Field(
        default=60.0,
        gt=0,
        description="edge: a round gives up after the region was unreachable this long (the next re-plans)",
    )
    # The region: how it receives.
    host: str = Field(default="127.0.0.1", description="region: listen address of `sync serve`")
    port: Port = Field(default=8090, description="region: listen port of `sync serve`")
    site_keys: dict[Name, list[str]] = Field(
        default_factory=dict,
        description="region: per edge site, the keys it sends; a key reads and writes only its own site, "
        "and with any key set every route but /healthz needs one",
    )
    keys_file: Path | None = Field(
        default=None, description="region: more site keys, `<site> <key>` per line (a Secret as a file)"
    )
    allow_open: bool = Field(
        default=False, description="region: serve without keys off loopback; off, `sync serve` refuses"
    )
    tls_cert_file: Path | None = Field(default=None, description="region: serve HTTPS with this certificate")
    tls_key_file: Path | None = Field(default=None, description="region: the certificate's private key")
    tls_client_ca_file: Path | None = Field(
        default=None, description="region: require client certificates signed by these CAs (mutual TLS)"
    )
    sites: list[Name] = Field(
        default_factory=list, description="region/centre: sending sites accepted (edges, regions); empty: any"
    )
    regions: dict[Name, list[Name]] = Field(
        default_factory=dict,
        description="centre: per region, its sites; a region's key may write its own data and its sites' "
        "(files named synced-<site>.…); any other sender only its own",
    )
    max_chunk_bytes: int = Field(
        default=8 * 1024 * 1024, ge=4096, description="region: largest upload chunk (decoded); larger: 413"
    )
    max_file_bytes: int = Field(
        default=4 * 1024**3, ge=1, description="region: largest file an edge may ship; larger: 413"
    )
    incoming_max_bytes: int = Field(
        default=16 * 1024**3, ge=1, description="region: bound of uploads not yet committed; beyond: 507"
    )
    request_timeout_s: float = Field(
        default=120.0, gt=0, description="region: a request body must arrive within this time; else 408"
    )

    @model_validator(mode="before")
    @classmethod
    def _no_shared_keys(cls, data: object) -> object:
        if isinstance(data, dict) and "api_keys" in data:
            raise ValueError(
                "sync.api_keys was replaced by sync.site_keys ({site: [keys]}): a key now writes only "
                "its own site, so one edge cannot overwrite another's data"
            )
        return data

    @model_validator(mode="after")
    def _tls_pair(self) -> SyncConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("sync.tls_cert_file and sync.tls_key_file go together: set both or neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("sync.tls_client_ca_file needs sync.tls_cert_file and sync.tls_key_file")
        if self.api_key is not None and self.api_key_file is not None:
            raise ValueError("set sync.api_key or sync.api_key_file, not both")
        return self

    @field_validator("region_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"expected http(s)://host:port, got {value!r}")
        return value


ServiceName = Literal["query", "registry", "alerts"]


class SidecarConfig(BaseModel):
    """Dapr sidecars ``citylake run`` starts beside the services and ingest
    (where a node has no Dapr injector: a single host, the demo). In
    Kubernetes the injector adds them and this stays off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=False, description="start a daprd beside each service and beside ingest")
    daprd: Path | None = Field(
        default=None, description="the daprd binary; unset: `daprd` on PATH, then ~/.dapr/bin/daprd"
    )
    resources_path: Path | None = Field(
        default=None, description="Dapr component files (deploy/dapr/components in a checkout)"
    )
    config: Path | None = Field(
        default=None,
        description="the sidecars' Dapr Configuration (deploy/dapr/config.yaml in a checkout); "
        "unset: daprd's defaults, which label HTTP metrics by full path (a series per device)",
    )
    mqtt_url: str | None = Field(
        default=None, description="broker of the pub/sub component (CITYLAKE_MQTT_URL); unset: no pub/sub"
    )


class SiteRunConfig(BaseModel):
    """What ``citylake run`` starts and how it supervises it. Ingest runs when
    sources are configured, each of ``pipelines.jobs`` as a streaming job,
    lake maintenance when ``maintenance`` is on, sync by the ``sync`` keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    services: list[ServiceName] = Field(
        default_factory=list, description="services to serve, each on its services.<name> host and port"
    )
    maintenance: bool = Field(
        default=True, description="run `citylake lake maintain` (compaction, retention)"
    )
    sync_serve: bool = Field(
        default=False, description="region/centre: run `citylake sync serve` (sync.port)"
    )
    sidecars: SidecarConfig = SidecarConfig()
    ingest_metrics_port: Port = Field(
        default=9464, description="ingest's /healthz and /metrics port; 0: free"
    )
    health_host: str = Field(
        default="127.0.0.1", description="address of the site's own /healthz and /metrics"
    )
    health_port: Port = Field(default=9460, description="port of the site's /healthz and /metrics; 0: off")
    restart_initial_s: float = Field(default=1.0, gt=0, description="first wait before restarting a unit")
    restart_max_s: float = Field(default=60.0, gt=0, description="longest wait between restarts (doubling)")
    stable_after_s: float = Field(
        default=60.0, gt=0, description="a unit up this long is stable again: its backoff starts over"
    )
    stop_timeout_s: float = Field(
        default=20.0, gt=0, description="SIGTERM, then SIGKILL after this long (Flink jobs need a few s)"
    )


class CityConfig(BaseModel):
    """The root of ``city.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site: Name = Field(description="this edge site's name; becomes `readings.site`")
    data_dir: Path = Field(default=Path("./var"), description="landing zone, lake, checkpoints")
    sources: list[SourceConfig] = Field(default_factory=list)
    ingest: IngestConfig = IngestConfig()
    pipelines: PipelinesConfig = PipelinesConfig()
    lake: LakeConfig = LakeConfig()
    landing: LandingConfig = LandingConfig()
    services: ServicesConfig = ServicesConfig()
    sync: SyncConfig = SyncConfig()
    run: SiteRunConfig = SiteRunConfig()

    @model_validator(mode="after")
    def _source_names_unique(self) -> CityConfig:
        seen: set[str] = set()
        for source in self.sources:
            if source.name in seen:
                raise ValueError(f"source name {source.name!r} is used twice")
            seen.add(source.name)
        return self

    def source(self, name: str) -> SourceConfig:
        for source in self.sources:
            if source.name == name:
                return source
        known = ", ".join(s.name for s in self.sources) or "none"
        raise KeyError(f"no source named {name!r} (configured: {known})")
