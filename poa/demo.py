"""``poa demo``: the whole system on one machine, end to end.

1. Starts the local Kafka broker when no bootstrap server is configured (and stops it
   at the end); recreates the PoA topics on a broker it owns so the run starts clean.
2. Starts ``poa worker`` (the production Faust worker) as a child process, writing
   into a fresh embedded store under ``<home>/demo/store``; by default in the scaled
   topology (processors/scaled.py, a consumer group of its own per run), whose ledger is
   a function of the input log alone.
3. Produces a seeded scenario (``poa.scenario``; malformed messages and re-deliveries
   included), then shows progress from the worker's committed consumer offsets until
   it has processed everything.
4. Stops the worker, reads the store, prints the summary and checks the invariants
   (the credits of every usage event sum exactly to its fee) and, in the scaled topology,
   that the event log, ledger and epoch roots equal the offline merge of the input topics
   read back from Kafka (exit 1 otherwise).
Without Java or Maven it says so in one line and runs the same scenario through the
replay path instead, labelled as such.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from poa_stream.settings import Settings
from poa_stream.streams import topics


def _summary(sink, console: Console, label: str, store: Path) -> int:
    db = sink.database
    q = lambda sql: sink.scalar(sql)  # noqa: E731
    events = q(f"SELECT count() FROM {db}.events")
    dead = q(f"SELECT count() FROM {db}.deadletter")
    dups = q(f"SELECT countIf(status = 'duplicate') FROM {db}.contributions FINAL")
    spam = q(f"SELECT countIf(status = 'spam') FROM {db}.contributions FINAL")
    farms = q(f"SELECT uniqExact(contributor) FROM {db}.flags WHERE reason IN ('sybil_farm', 'label_farm')")
    bad_validators = q(f"SELECT uniqExact(contributor) FROM {db}.flags WHERE reason LIKE 'validator_%'")
    wash = q(f"SELECT count() FROM {db}.flags WHERE reason LIKE 'wash_%'")
    fees = q(f"SELECT sum(fee) FROM {db}.usage")
    usage = q(f"SELECT count() FROM {db}.usage")
    bad = q(f"SELECT count() FROM (SELECT u.event_id, any(u.fee) AS fee, sum(l.amount) AS credited "
            f"FROM {db}.usage u LEFT JOIN {db}.reward_ledger l ON l.ref_event_id = u.event_id "
            f"WHERE u.fee > 0 GROUP BY u.event_id HAVING credited != fee)")
    _, by_role = sink.query(f"SELECT source, role, count(), sum(amount) FROM {db}.reward_ledger "
                            f"GROUP BY source, role ORDER BY source DESC, role")
    _, epochs = sink.query(f"SELECT count(), sum(emitted), sum(carried_out) FROM {db}.epochs")
    _, by_type = sink.query(f"SELECT type, count() FROM {db}.events GROUP BY type ORDER BY type")
    t = Table(title=f"PoA Stream demo — {label}")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("events logged", f"{events:,}")
    for typ, n in by_type:
        t.add_row(f"  {typ}", f"{n:,}")
    t.add_row("dead-lettered", f"{dead:,}")
    t.add_row("duplicate contributions", f"{dups:,}")
    t.add_row("spam contributions (low quality, sybil farm)", f"{spam:,}")
    t.add_row("sybil-farm accounts / flagged validators", f"{farms:,} / {bad_validators:,}")
    t.add_row("usage events", f"{usage:,}")
    t.add_row("suspected wash usage (operator-epoch flags)", f"{wash:,}")
    t.add_row("fees (micro-units)", f"{fees or 0:,}")
    for source, role, n, amount in by_role:
        t.add_row(f"{source}-funded credits, {role} ({n:,} entries)", f"{amount:,}")
    n_ep, emitted, carried = epochs[0]
    t.add_row("closed epochs (emitted / carried over)", f"{n_ep} ({emitted or 0:,} / {carried or 0:,})")
    t.add_row("usage events whose credits != fee", f"{bad}")
    console.print(t)
    console.print(f"store: {store}  (try: poa sql --store {store} "
                  "\"SELECT account, sum(amount) FROM reward_ledger GROUP BY account ORDER BY 2 DESC LIMIT 10\")")
    return 0 if bad == 0 else 1


def _report(sink, store: Path, console: Console) -> None:
    from poa_stream.report import write_report
    console.print(f"report: {write_report(sink, store.parent / 'report.html')}  (open it in a browser)")


def _group_progress(conn, group: str, topic_names=topics.INPUT_TOPICS) -> tuple[int, int]:
    """(messages consumed and committed, messages in all) over ``topic_names``."""
    from poa_stream.streams.admin import group_progress
    parts = group_progress(conn, group, topic_names)
    return sum(p.position - p.begin for p in parts), sum(p.end - p.begin for p in parts)


def _worker_status(path: Path) -> dict:
    import json
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def run_demo(settings: Settings, seed: int = 7, scale: float = 1.0, keep_broker: bool = False,
             console: Console | None = None, topology: str = "scaled") -> int:
    from poa_stream.kafka_local import KafkaSetupError, LocalKafka, missing_tools
    from poa_stream.scenario import generate
    console = console or Console()
    home = settings.home.resolve() / "demo"
    store = home / "store"
    shutil.rmtree(store, ignore_errors=True)
    home.mkdir(parents=True, exist_ok=True)
    with console.status(f"generating the seeded scenario (seed {seed})"):
        scen = generate(seed=seed, scale=scale)
    records = [(t, line.encode("utf-8")) for t, line in scen.records]
    console.print(f"scenario: {len(records):,} messages on {len(topics.INPUT_TOPICS)} topics (seed {seed})")

    local = None
    if settings.kafka_bootstrap is None:
        if missing := missing_tools():
            console.print(f"[yellow]{' and '.join(missing)} not found, so no local Kafka broker: "
                          "running the same scenario through the replay path (no Kafka).[/]")
            return _replay_fallback(settings, records, store, console)
        local = LocalKafka(settings)
        try:
            with console.status("starting the local Kafka broker (first run resolves jars with Maven)"):
                was_running = local.status().running
                local.start()
        except KafkaSetupError as exc:
            console.print(f"[red]local Kafka broker failed:[/] {exc}")
            return 1
        if was_running:
            local = None  # not ours to stop
        console.print(f"Kafka broker at {settings.bootstrap}")
    try:
        return _run_streaming(settings, records, store, home, console, own_broker=settings.kafka_bootstrap is None,
                              topology=topology)
    finally:
        if local is not None and not keep_broker:
            with console.status("stopping the local Kafka broker"):
                local.stop()


def _run_streaming(settings: Settings, records, store: Path, home: Path, console: Console,
                   own_broker: bool, topology: str = "scaled") -> int:
    from poa_stream.kafka_local import reset_topics
    from poa_stream.streams.producer import produce_records
    # the scaled topology's sequence belongs to one store: a fresh store, a fresh group
    group = "poa-demo" if topology == "single" else f"poa-demo-{uuid.uuid4().hex[:8]}"
    if own_broker:
        with console.status("recreating the PoA topics"):
            reset_topics(settings.bootstrap, settings.topic_partitions)
    status_file = home / "worker-status.json"
    status_file.unlink(missing_ok=True)
    env = dict(os.environ, POA_KAFKA_BOOTSTRAP=settings.bootstrap, POA_STORE_ENGINE="chdb",
               POA_STORE_DIR=str(store), POA_WORKER_ID=group, POA_HOME=str(settings.home.resolve()),
               POA_WORKER_STATUS_FILE=str(status_file), POA_WORKER_TOPOLOGY=topology)
    log_path = home / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "poa_stream.cli", "worker", "--loglevel", "info"],
                                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*cols, console=console) as prog:
            t_prod = prog.add_task("producing", total=len(records))
            produce_records(settings.kafka(), records, lambda n: prog.update(t_prod, completed=n))
            _, end = _group_progress(settings.kafka(), group)
            t_proc = prog.add_task("processed by the worker", total=end)
            deadline = time.monotonic() + 900
            settled = 0
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"the worker exited with code {proc.returncode}; see {log_path}")
                done, end = _group_progress(settings.kafka(), group)
                prog.update(t_proc, completed=done, total=end)
                st = _worker_status(status_file)
                if topology == "single":
                    finished = done >= end and st.get("buffered", 1) == 0
                else:  # every input forwarded, the sequence consumed, nothing held by the merge
                    seq_done, seq_end = _group_progress(settings.kafka(), group, (topics.sequence_topic(group),))
                    finished = done >= end and seq_done >= seq_end and st.get("held", 1) == 0 \
                        and st.get("sequence_owner", False)
                settled = settled + 1 if finished else 0
                if settled >= 2:  # twice in a row: nothing was in flight between the reads
                    break
                time.sleep(1.0)
            else:
                raise RuntimeError(f"the worker did not catch up in 15 minutes; see {log_path}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    from poa_stream.sinks.chdb_sink import ChdbSink
    sink = ChdbSink(store, settings.clickhouse_database)
    try:
        rc = _summary(sink, console, f"Kafka -> Faust worker ({topology} topology) -> embedded ClickHouse",
                      store)
        if topology == "scaled":
            rc = max(rc, _check_against_offline_merge(settings, sink, console))
        _report(sink, store, console)
        return rc
    finally:
        sink.close()


def _check_against_offline_merge(settings: Settings, sink, console: Console) -> int:
    """The scaled topology's promise, checked as `poa audit` does (poa/audit.py): the stored
    event log, ledger and epoch roots equal the offline merge of the input topics."""
    from poa_stream.audit import audit, print_result
    with console.status("replaying the input log offline (the deterministic merge) to compare"):
        r = audit(settings, sink)
    print_result(r, console)
    return 0 if r.ok else 1


def _replay_fallback(settings: Settings, records, store: Path, console: Console) -> int:
    from poa_stream.processors.replay import replay_into
    from poa_stream.sinks.chdb_sink import ChdbSink
    sink = ChdbSink(store, settings.clickhouse_database)
    try:
        with Progress(console=console) as prog:
            task = prog.add_task("replaying (no Kafka)", total=len(records))
            replay_into(records, settings, sink, on_progress=lambda n: prog.update(task, completed=n))
        rc = _summary(sink, console, "REPLAY PATH (no Kafka broker)", store)
        _report(sink, store, console)
        return rc
    finally:
        sink.close()
