"""The ``poa`` command line (typer + rich)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from poa_stream.settings import Settings, get_settings

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="PoA Stream: streaming proof-of-attribution and reward ledger.")
rewards_app = typer.Typer(no_args_is_help=True, help="Contributors' reward streams.")
kafka_app = typer.Typer(no_args_is_help=True, help="The local Kafka broker (KRaft, from Maven Central).")
app.add_typer(kafka_app, name="kafka")
topics_app = typer.Typer(no_args_is_help=True, help="The PoA topics on the configured cluster.")
app.add_typer(topics_app, name="topics")
app.add_typer(rewards_app, name="rewards")
from poa_stream.cli_tools import emit_app, grafana_app, keys_app, report as report_command  # noqa: E402

app.add_typer(grafana_app, name="grafana")
app.add_typer(emit_app, name="emit")
app.add_typer(keys_app, name="keys")
from poa_stream.cli_policy import policy_app  # noqa: E402

app.add_typer(policy_app, name="policy")
from poa_stream.cli_store import store_app  # noqa: E402

app.add_typer(store_app, name="store")
app.command("report")(report_command)
from poa_stream.cli_contrib import epochs as epochs_command, explain as explain_command, tokens  # noqa: E402

app.command("epochs")(epochs_command)
app.command("explain")(explain_command)
console = Console()
err = Console(stderr=True, soft_wrap=True)

def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("poa-stream")
    except PackageNotFoundError:  # a source tree that was not installed
        return "0+unknown"


def _print_version(value: bool) -> None:
    if value:
        console.print(f"poa {_version()}")
        raise typer.Exit(0)


_TYPE_NAMES = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "path": "PATH", "file": "FILE"}
_display_type_rich = typer.core.TyperOption.display_type_rich


def _plain_type(self, ctx) -> str | None:
    """Help shows TEXT, INTEGER, PATH... for values and nothing for flags (typer's own
    rendering prints ``<bool>`` and ``<list[str]>``)."""
    if self.is_flag or self.metavar is not None:
        return self.metavar
    shown = _display_type_rich(self, ctx)
    if shown is None:
        return None
    name = shown.strip("<>.")
    if name.startswith("list[") and name.endswith("]"):
        name = name[5:-1]
    return _TYPE_NAMES.get(name, name.upper() if name.isidentifier() else name)


typer.core.TyperOption.display_type_rich = _plain_type


@app.callback()
def _check_settings(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                                 help="print the version and exit")) -> None:
    """Fail fast, in one clear line, on invalid configuration."""
    from pydantic import ValidationError
    try:
        get_settings()
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        err.print(f"[red]invalid configuration:[/] {first['msg']}")
        raise typer.Exit(2)




def _settings(store: Path | None = None, reading: bool = False) -> Settings:
    """The settings with the store of the one rule (poa/stores.py); ``reading``: a command
    that only reads may fall back to the store ``poa demo`` left."""
    from poa_stream.stores import resolve
    return resolve(get_settings(), store, reading).settings


def _open_reader(store: Path | None):
    """The store's sink for a reading command, or exit 1 with one line."""
    from poa_stream.stores import StoreError, open_store, resolve
    try:
        return open_store(resolve(get_settings(), store, reading=True), reading=True)
    except StoreError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1)


@app.command()
def schema() -> None:
    """Print the JSON Schema of event contract v1."""
    from poa_stream.streams.events import json_schema
    console.print_json(json.dumps(json_schema()))


@kafka_app.command("start")
def kafka_start() -> None:
    """Start the local broker (idempotent) and create the PoA topics."""
    from poa_stream.kafka_local import KafkaSetupError, LocalKafka, ensure_topics
    s = _settings()
    try:
        with console.status("starting the local Kafka broker (first run resolves jars with Maven)"):
            st = LocalKafka(s).start()
            created = ensure_topics(st.bootstrap, s.topic_partitions)
    except KafkaSetupError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1)
    console.print(str(st))
    k = LocalKafka(s)
    if k.secure:
        info = k.security()
        console.print("secure listeners: " + ", ".join(f"{p} {a}" for p, a in info["listeners"].items())
                      + f"; user {info['username']}, CA file and password in {k.security_file}")
    if created:
        console.print(f"created topics: {', '.join(created)}")


def _kafka(s: Settings):
    """The one Kafka connection (streams/connection.py), or one line and exit code 1."""
    from poa_stream.streams.connection import KafkaConfigError
    try:
        return s.kafka()
    except KafkaConfigError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1)


@topics_app.command("create")
def topics_create(partitions: int = typer.Option(None, help="partitions per topic (default: POA_TOPIC_PARTITIONS)"),
                  replication_factor: int = typer.Option(None, help="default: POA_TOPIC_REPLICATION_FACTOR")) -> None:
    """Create the missing PoA topics (explicit partitions, replication, configs) with the
    configured credentials; run it before any producer so none auto-creates a topic."""
    from poa_stream.stores import first_line
    from poa_stream.streams.admin import create_topics
    s = _settings()
    conn = _kafka(s)
    try:
        created = create_topics(conn, partitions or s.topic_partitions,
                                replication_factor or s.topic_replication_factor)
    except Exception as exc:
        err.print(f"[red]error:[/] cannot create topics on {conn.describe()}: {first_line(exc)}")
        raise typer.Exit(1)
    console.print(f"created topics: {', '.join(created)}" if created else "all PoA topics exist")


@kafka_app.command("stop")
def kafka_stop() -> None:
    """Stop the local broker (SIGTERM, then SIGKILL after 30 s)."""
    from poa_stream.kafka_local import LocalKafka
    k = LocalKafka(_settings())
    console.print("stopped" if k.stop() else "no local broker was running")


@kafka_app.command("status")
def kafka_status() -> None:
    """Is the local broker running? Exit code 0 if so, 3 if not."""
    from poa_stream.kafka_local import LocalKafka
    st = LocalKafka(_settings()).status()
    console.print(str(st))
    raise typer.Exit(0 if st.running else 3)


@rewards_app.command("tail")
def rewards_tail(account: str = typer.Option(..., "--account", help="the account to follow"),
                 follow: bool = typer.Option(True, help="keep following new credits"),
                 from_beginning: bool = typer.Option(True, help="start at the first credit"),
                 as_json: bool = typer.Option(False, "--json", help="one JSON object per credit")) -> None:
    """Follow an account's credits on poa.rewards (deduplicated by entry_id)."""
    from poa_stream.streams.rewards import tail_rewards
    s = _settings()
    total = 0
    try:
        for c in tail_rewards(_kafka(s), account, from_beginning=from_beginning, follow=follow):
            total += c["amount"]
            if as_json:
                sys.stdout.write(json.dumps(c, sort_keys=True) + "\n")
                sys.stdout.flush()
            else:  # one line per credit in any terminal width (no wrapping), amounts in tokens
                sys.stdout.write(f"{c['ts']}  epoch {c['epoch']}  {c['source']:<8} {c['role']:<11} "
                                 f"{tokens(c['amount']):>16}  total {tokens(total)}  {c['ref_event_id']}\n")
                sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    if not as_json:
        sys.stdout.write(f"total for {account}: {tokens(total)} tokens ({total:,} micro-units)\n")


@app.command()
def worker(loglevel: str = typer.Option(None, help="log level (default POA_LOG_LEVEL, info); libraries "
                                                   "log at warning unless debug"),
           log_format: str = typer.Option(None, help="text or json (default POA_LOG_FORMAT, text)")) -> None:
    """Run the Faust worker (production path) until SIGTERM/SIGINT."""
    from poa_stream.processors.app import run_worker
    s = _settings()
    run_worker(s, loglevel=loglevel or s.log_level, log_format=log_format or s.log_format)


@app.command()
def replay(events: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL event log"),
           store: Path = typer.Option(..., "--store", help="embedded store directory"),
           in_order: bool = typer.Option(False, "--in-order", help="the file is a processing log "
                                         "(a store's events payloads by seq): keep its order exactly")) -> None:
    """Process a JSONL event log without Kafka (audits, backfills) into an embedded store."""
    from rich.progress import Progress

    from poa_stream.processors.replay import replay_file
    from poa_stream.sinks.chdb_sink import ChdbSink
    from poa_stream.sinks.lease import StoreLocked
    from poa_stream.streams.policy import PolicyMismatch
    from poa_stream.stores import first_line
    s = _settings(store)
    total = sum(1 for line in open(events, "rb") if line.strip())
    try:
        sink = ChdbSink(store, s.clickhouse_database)
    except Exception as exc:  # missing permissions, a store another process holds
        err.print(f"[red]poa replay: cannot open the store {store}:[/] {first_line(exc)}")
        raise typer.Exit(1)
    try:
        with Progress(console=console) as prog:
            task = prog.add_task("replaying", total=total)
            core = replay_file(events, s, sink, on_progress=lambda n: prog.update(task, completed=n),
                               in_order=in_order)
    except (StoreLocked, PolicyMismatch) as exc:
        err.print(f"[red]poa replay:[/] {exc}")
        raise typer.Exit(2)
    finally:
        sink.close()
    st = core.stats
    console.print(f"replayed {total} lines: {core.seq - core.restored_seq} new events logged "
                  f"({core.restored_seq} were in the store), {st.redelivered} re-deliveries ignored; "
                  f"store now holds {st.deadlettered} dead letters, {st.duplicates} duplicates, "
                  f"{st.waiting} events waiting for a reference; store: {store}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def sql(ctx: typer.Context,
        queries: list[str] = typer.Option([], "-q", "--query", help="a query; repeatable", show_default=False),
        queries_file: Optional[Path] = typer.Option(None, "--queries-file", exists=True, dir_okay=False,
                                                    help="a file of queries separated by ;", show_default=False),
        fmt: Optional[str] = typer.Option(None, "--format", "-f", show_default=False,
                                          help="output format (default: TSV when piped, PrettyCompactMonoBlock "
                                               "on a terminal, or the query's own FORMAT clause)"),
        write: bool = typer.Option(False, "--write", help="allow writes and DDL (read-only without it)"),
        store: Optional[Path] = typer.Option(None, "--store", help="embedded store (default: `poa store`)",
                                             show_default=False)) -> None:
    """Run SQL against the store, like clickhouse-client.

    poa sql [QUERY] [OPTIONS] [--param_NAME=VALUE ...]. The queries: QUERY, -q,
    --queries-file or stdin; database `poa` is the default; `{name:Type}` parameters come
    from `--param_name=value`; read-only unless `--write` (no INSERT, DDL, settings changes
    or table functions such as file() and url())."""
    from poa_stream.sqltool import SqlUsageError, collect_queries, parse_params, run_queries
    from poa_stream.stores import StoreError, open_store, resolve
    try:
        params, positional = parse_params(ctx.args)
        texts = collect_queries(positional, queries, queries_file, sys.stdin)
    except SqlUsageError as exc:
        err.print(f"[red]poa sql:[/] {exc}")
        raise typer.Exit(2)
    try:
        sink = open_store(resolve(get_settings(), store), reading=True)
    except StoreError as exc:
        err.print(f"[red]poa sql:[/] {exc}")
        raise typer.Exit(1)
    try:
        out_fmt = fmt or (None if not sys.stdout.isatty() else "PrettyCompactMonoBlock")
        rc = run_queries(sink, texts, params, out_fmt, write, sys.stdout.buffer, err)
    finally:
        sink.close()
    raise typer.Exit(rc)


@app.command()
def proof(account: str = typer.Option("", "--account"), epoch: int = typer.Option(-1, "--epoch"),
          store: Path | None = typer.Option(None, "--store", help="embedded store (default: settings)"),
          out: Path | None = typer.Option(None, "--out", help="write the proof here (default: stdout)"),
          schema: bool = typer.Option(False, "--schema", help="print the proof's JSON Schema and exit")) -> None:
    """Inclusion proof of an account's ledger entries in an epoch's Merkle root (RFC 6962
    audit paths; `poa proof --schema` prints the format)."""
    from poa_stream.processors.audit import PROOF_SCHEMA, AuditError, build_proof
    if schema:
        sys.stdout.write(json.dumps(PROOF_SCHEMA, indent=2) + "\n")
        raise typer.Exit(0)
    if not account or epoch < 0:
        err.print("[red]poa proof needs --account A and --epoch E (see `poa epochs`)[/]")
        raise typer.Exit(2)
    sink = _open_reader(store)
    try:
        doc = build_proof(sink, account, epoch)
    except AuditError as exc:
        err.print(f"[red]no proof:[/] {exc}")
        raise typer.Exit(1)
    finally:
        sink.close()
    text = json.dumps(doc, indent=2)
    if out:
        out.write_text(text)
        console.print(f"{len(doc['proofs'])} entries of {account} in epoch {epoch}, root "
                      f"{doc['merkle_root']}: proof written to {out}")
    else:
        sys.stdout.write(text + "\n")


@app.command()
def verify(proof_file: Path = typer.Argument(..., help="a proof written by `poa proof`"),
           root: Optional[str] = typer.Option(None, "--root", help="the trusted root (hex) of the proof's epoch, "
                                              "e.g. one published by the network", show_default=False),
           store: Optional[Path] = typer.Option(None, "--store", help="take the trusted root from this store",
                                                show_default=False),
           as_json: bool = typer.Option(False, "--json", help="one JSON object: valid, trusted_root, problems")) -> None:
    """Check an inclusion proof against a trusted root (--root HEX, or --store for the stored
    root). Exit 0: valid against that root; 1: invalid or unreadable; 2: the paths are
    consistent but no trusted root was given, so nothing ties the file to the ledger."""
    from poa_stream.processors.audit import shape_problem, stored_root, verify_proof
    result = {"file": str(proof_file), "valid": False, "trusted_root": None, "problems": []}

    def finish(code: int, line: str) -> None:
        if as_json:
            sys.stdout.write(json.dumps(result) + "\n")
        elif code == 0:
            console.print(line, soft_wrap=True)
        else:
            err.print(f"[red]{line}[/]")
        raise typer.Exit(code)
    try:
        doc = json.loads(proof_file.read_text())
    except (OSError, ValueError) as exc:
        from poa_stream.stores import first_line
        result["problems"] = [f"cannot read {proof_file}: {first_line(exc)}"]
        finish(1, f"invalid: {result['problems'][0]}")
    if (shape := shape_problem(doc)) is not None:
        result["problems"] = [f"{proof_file} is not a proof: {shape}"]
        finish(1, f"invalid: {result['problems'][0]}")
    problems = verify_proof(doc)
    trusted, source = root, "--root"
    if store is not None:
        sink = _open_reader(store)
        try:
            trusted, source = stored_root(sink, doc["epoch"]), f"the store {store}"
        finally:
            sink.close()
        if trusted is None:
            problems.append(f"the store has no root for epoch {doc['epoch']} (not closed)")
    if trusted is not None and trusted.lower() != doc["merkle_root"]:
        problems.append(f"the proof's root {doc['merkle_root']} is not the trusted root {trusted.lower()} ({source})")
    result.update(problems=problems, trusted_root=trusted.lower() if trusted else None)
    n = len(doc["proofs"])
    if problems:
        finish(1, "invalid: " + "; ".join(problems))
    if trusted is None:
        result["valid"] = False
        result["problems"] = ["no trusted root: pass --root HEX or --store DIR"]
        finish(2, f"not verified: the {n} entries are consistent with the file's own root "
                  f"{doc['merkle_root']}, but no trusted root was given (pass --root HEX or --store DIR)")
    result["valid"] = True
    finish(0, f"valid: {n} entries of {doc['account']} are in epoch {doc['epoch']}'s root "
              f"{doc['merkle_root']} ({source})")


@app.command()
def audit(store: Optional[Path] = typer.Option(None, "--store", help="embedded store directory (default: "
                                                                    "the configured store)")) -> None:
    """Recompute the ledger from the input topics (read back from Kafka, through the scaled
    topology's merge) and compare it with the store: events, ledger entries, epoch roots.
    Exit 0 equal, 1 different (the first difference printed) or a failure."""
    from poa_stream.audit import run_audit
    raise typer.Exit(run_audit(get_settings(), store, console, err))


@app.command()
def scenario(seed: int = typer.Option(7, help="random seed"),
             scale: float = typer.Option(1.0, help="size multiplier"),
             out: Path = typer.Option(Path("scenario"), help="output directory"),
             world: str = typer.Option("", help="an adversarial world instead (poa/adversarial.py): "
                                                "fee0, fee1, sybil, micro, spread or copycat"),
             ratio: float = typer.Option(1.0, help="adversarial world: emission per epoch / honest fees"),
             baseline: bool = typer.Option(False, help="adversarial world without the attacker's usage")) -> None:
    """Write a seeded scenario: events.jsonl and truth.json (or an adversarial world:
    events.jsonl and policy.json, its emission budget for --ratio)."""
    if world:
        import json as _json
        from poa_stream import adversarial
        try:
            records = adversarial.world(world, ratio, attack=not baseline, seed=seed)
        except ValueError as exc:
            err.print(f"[red]poa scenario:[/] {exc}")
            raise typer.Exit(2)
        out.mkdir(parents=True, exist_ok=True)
        (out / "events.jsonl").write_bytes(b"".join(raw + b"\n" for _, raw in records))
        (out / "policy.json").write_text(_json.dumps(adversarial.policy_for(world, ratio), indent=1))
        console.print(f"wrote {out / 'events.jsonl'} ({len(records):,} events) and {out / 'policy.json'} "
                      f"(replay with POA_POLICY_FILE={out / 'policy.json'})")
        return
    from poa_stream.scenario import generate, write
    ev, truth = write(generate(seed=seed, scale=scale), out)
    console.print(f"wrote {ev} and {truth}")


@app.command()
def loadgen(seed: int = typer.Option(7, help="scenario seed"),
            scale: float = typer.Option(1.0, help="size multiplier")) -> None:
    """Load generator: produce a seeded scenario (malformed messages included) to Kafka."""
    from rich.progress import Progress

    from poa_stream.scenario import generate
    from poa_stream.streams.producer import produce_records
    s = _settings()
    records = [(t, line.encode("utf-8")) for t, line in generate(seed=seed, scale=scale).records]
    with Progress(console=console) as prog:
        task = prog.add_task(f"producing to {s.bootstrap}", total=len(records))
        produce_records(_kafka(s), records, lambda n: prog.update(task, completed=n))
    console.print(f"produced {len(records):,} messages (seed {seed})")


@app.command()
def demo(seed: int = typer.Option(7, help="scenario seed"),
         scale: float = typer.Option(1.0, help="scenario size multiplier"),
         keep_broker: bool = typer.Option(False, help="leave a broker this command started running"),
         topology: str = typer.Option("scaled", help="the worker's topology: scaled (the deterministic "
                                      "merge, checked against an offline replay of the input log) or single")) -> None:
    """The main job on one machine: broker, worker, a seeded scenario, a summary."""
    from poa_stream.demo import run_demo
    if topology not in ("single", "scaled"):
        err.print(f"[red]poa demo:[/] --topology must be single or scaled, not {topology!r}")
        raise typer.Exit(2)
    raise typer.Exit(run_demo(_settings(), seed=seed, scale=scale, keep_broker=keep_broker, console=console,
                              topology=topology))


WORKER_MODULES = {"faust", "mode", "chdb", "clickhouse_connect", "numba", "numpy", "llvmlite", "yaml",
                  "prometheus_client", "pyarrow"}


def main() -> None:
    """The ``poa`` console script: the app, and one line (exit 1) when a command needs the
    worker extra that this install lacks (the base install is the light client one)."""
    try:
        app()
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in WORKER_MODULES:
            raise
        err.print(f"[red]error:[/] this command needs the worker install ({exc.name} is missing): "
                  "pip install 'poa-stream\\[worker]'")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
