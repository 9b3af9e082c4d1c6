"""Command-line tools for the people who use PoA Stream: ``poa grafana``, ``poa emit``, ``poa report``.

Registered by poa/cli.py: ``app.add_typer(grafana_app, name="grafana")``,
``app.add_typer(emit_app, name="emit")`` and ``app.command()(report)``.

- ``poa grafana generate [--out DIR]`` writes the dashboards' JSON (deploy/grafana/dashboards
  by default); ``poa grafana push --url URL`` creates or updates them in the folder
  "PoA Stream" of a Grafana, with the token from ``POA_GRAFANA_TOKEN`` (settings or
  environment; never an argument, so it stays out of shell history).
- ``poa emit usage|contribution|validation|model ...`` validates one event (from options,
  ``--json '{...}'`` or every line of ``--file events.jsonl``) before connecting to Kafka,
  prints each produced event as one JSON line, and exits 2 with the reason when an event
  is invalid (nothing is produced then). ``--dry-run`` validates and prints only.
- ``poa report [--store DIR] --out report.html`` writes the self-contained HTML report.

Exit codes: 0 done, 1 the service failed (Kafka, Grafana, the store), 2 bad input.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

grafana_app = typer.Typer(no_args_is_help=True, help="Grafana dashboards as code.")
emit_app = typer.Typer(no_args_is_help=True,
                       help="Produce validated events (operators, contributors, validators).")
keys_app = typer.Typer(no_args_is_help=True, help="Signing keys (ed25519) for signed events.")
err = Console(stderr=True, soft_wrap=True)
console = Console()


def _settings():
    from poa_stream.settings import get_settings
    return get_settings()


# ---------------------------------------------------------------- grafana
@grafana_app.command("generate")
def grafana_generate(out_dir: Optional[Path] = typer.Option(
        None, "--out", help="directory for the JSON files (default: deploy/grafana/dashboards)")) -> None:
    """Write one JSON file per dashboard (Grafana's file provisioning reads that folder) and
    the alert rules (Grafana provisioning and Prometheus rule files, poa/alerts.py)."""
    from poa_stream.alerts import write_all
    from poa_stream.grafana import DEFAULT_OUT_DIR, GrafanaExtraMissing, generate_all
    for p in write_all():  # alert rules as code: no SDK needed
        console.print(f"wrote {p}")
    try:
        paths = generate_all(out_dir or DEFAULT_OUT_DIR)
    except GrafanaExtraMissing as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2)
    for p in paths:
        console.print(f"wrote {p}")


def grafana_token() -> str | None:
    """The Grafana service-account token: settings' ``grafana_token`` or ``POA_GRAFANA_TOKEN``,
    read afresh (not the process's cached settings: a token set or revoked since counts)."""
    from poa_stream.settings import Settings
    tok = getattr(Settings(), "grafana_token", None)
    if tok is not None and hasattr(tok, "get_secret_value"):
        tok = tok.get_secret_value()
    return tok or os.environ.get("POA_GRAFANA_TOKEN") or None


@grafana_app.command("push")
def grafana_push(url: str = typer.Option(..., "--url", envvar="POA_GRAFANA_URL",
                                         help="Grafana base URL, e.g. http://localhost:3000"),
                 timeout_s: float = typer.Option(30.0, "--timeout-s", help="HTTP timeout")) -> None:
    """Create or update the dashboards in folder "PoA Stream" (token: POA_GRAFANA_TOKEN)."""
    from poa_stream.grafana import GrafanaExtraMissing, push
    token = grafana_token()
    if not token:
        err.print("[red]error:[/] no Grafana token: set POA_GRAFANA_TOKEN to a service-account "
                  "token with dashboard write permission")
        raise typer.Exit(2)
    try:
        answers = push(url, token, timeout_s=timeout_s)
    except GrafanaExtraMissing as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2)
    except Exception as exc:  # grafana-client / HTTP errors: say which and stop
        err.print(f"[red]push to {url} failed:[/] {exc}")
        raise typer.Exit(1)
    for a in answers:
        console.print(f"{a.get('status', 'ok')}: {a.get('uid', '?')} version {a.get('version', '?')} "
                  f"{a.get('url', '')}")


# ---------------------------------------------------------------- emit
def _load_objects(json_text: str | None, file: Path | None) -> list[tuple[str, dict]]:
    """(where, object) pairs from --json / --file; raises EventError with the place."""
    from poa_stream.streams.events import EventError
    items = []
    if json_text is not None:
        items.append(("--json", json_text))
    if file is not None:
        with open(file, encoding="utf-8") as f:
            items += [(f"{file}:{n}", line) for n, line in enumerate(f, 1) if line.strip()]
    objs = []
    for where, text in items:
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise EventError(f"{where}: invalid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise EventError(f"{where}: an event must be a JSON object")
        objs.append((where, obj))
    return objs


def _emit(etype: str, fields: dict, json_text: str | None, file: Path | None, event_id: str | None,
          ts: str | None, bootstrap: str | None, dry_run: bool, builder, sign: Path | None = None) -> None:
    """Build and validate every event first, then produce them all (or none)."""
    from poa_stream.emit import build_event
    from poa_stream.streams.events import EventError
    given = {k: v for k, v in fields.items() if v is not None}
    try:
        if json_text is not None or file is not None:
            if given:
                raise EventError(f"give either field options ({', '.join('--' + k.replace('_', '-') for k in given)}) "
                                 "or --json/--file, not both")
            events = []
            for where, obj in _load_objects(json_text, file):
                try:
                    events.append(build_event(etype, obj, event_id=event_id, ts=ts))
                except EventError as exc:
                    raise EventError(f"{where}: {exc.reason}") from None
        else:
            events = [builder(**fields, event_id=event_id, ts=ts)]
    except EventError as exc:
        err.print(f"[red]invalid event:[/] {exc.reason}")
        raise typer.Exit(2)
    except OSError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2)
    if sign is not None and dry_run:
        from poa_stream.client import ClientError, load_key
        from poa_stream.streams.signing import sign_event
        try:
            account, key = load_key(sign)
        except ClientError as exc:
            err.print(f"[red]{exc}[/]")
            raise typer.Exit(2)
        events = [sign_event(ev, account, key) for ev in events]
    if etype == "usage":
        _warn_unknown_models(events)
    if not dry_run:
        events = _produce(events, bootstrap, sign)
    for ev in events:
        sys.stdout.write(json.dumps(ev, sort_keys=True, ensure_ascii=False) + "\n")


def _warn_unknown_models(events: list[dict]) -> None:
    """One line per model id the store (``poa store``; through a running worker's endpoint
    when it serves it) does not know: such a usage waits for the model's registration, up to
    the policy's ``wait_expiry_s`` (one epoch by default), then is dead-lettered. A hint
    only: without a readable store nothing is said, and the event is sent either way (the
    registration may be on its way)."""
    from poa_stream.stores import open_store, resolve
    wanted = sorted({ev["model_id"] for ev in events})
    try:
        r = resolve(_settings(), None, reading=True)
        if not r.exists:
            return
        sink = open_store(r, reading=True)
    except Exception:  # a hint must never stop a report (StoreError included)
        return
    try:
        ids = ", ".join("'" + m.replace("\\", "\\\\").replace("'", "\\'") + "'" for m in wanted)
        _, rows = sink.query(f"SELECT DISTINCT model_id FROM {sink.database}.models WHERE model_id IN ({ids})")
        known = {r[0] for r in rows}
    except Exception:
        return
    finally:
        sink.close()
    for m in wanted:
        if m not in known:
            err.print(f"[yellow]warning:[/] model {m!r} is not registered in {r.where}: the usage waits for "
                      "its registration (up to wait_expiry_s, one epoch by default), then is dead-lettered")


def _produce(events: list[dict], bootstrap: str | None, sign: Path | None = None) -> list[dict]:
    """Send each event and wait for its acknowledgement (poa/client.py); the events as
    sent (signed when ``sign``). One line and exit 1 on the first failure, naming the
    events already acknowledged."""
    from poa_stream.client import Client, ClientError, DeliveryError
    s = _settings()
    try:
        client = Client(bootstrap, settings=s, key_file=sign)
    except ClientError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1)
    sent = []
    try:
        for ev in events:
            sent.append(client.send(ev).event)
    except DeliveryError as exc:
        done = f" ({len(sent)} earlier events were acknowledged)" if sent else ""
        err.print(f"[red]{exc}[/]{done}; re-send it: the same event_id is processed once")
        raise typer.Exit(1)
    finally:
        client.close()
    return sent


_JSON = typer.Option(None, "--json", help="the whole event as a JSON object")
_FILE = typer.Option(None, "--file", exists=True, dir_okay=False, help="JSONL file, one event per line")
_EVENT_ID = typer.Option(None, "--event-id", help="idempotency key (default: a uuid4)")
_TS = typer.Option(None, "--ts", help="RFC 3339 event time (default: now, UTC)")
_BOOTSTRAP = typer.Option(None, "--bootstrap", help="Kafka bootstrap servers (default: settings)")
_DRY = typer.Option(False, "--dry-run", help="validate and print, produce nothing")
_SIGN = typer.Option(None, "--sign", exists=True, dir_okay=False,
                     help="sign with this key file (poa keys new); the key's account is the signer")


def _read_text(text: str | None, path: Path | None, what: str) -> str | None:
    if text is not None and path is not None:
        err.print(f"[red]invalid event:[/] give --{what} or --{what}-file, not both")
        raise typer.Exit(2)
    return path.read_text(encoding="utf-8") if path is not None else text


@emit_app.command("usage")
def emit_usage_cmd(
        model_id: Optional[str] = typer.Option(None, "--model-id"),
        fee: Optional[int] = typer.Option(None, "--fee", help="fee in micro-units (1 token = 1,000,000)"),
        output: Optional[str] = typer.Option(None, "--output", help="the model's output text"),
        output_file: Optional[Path] = typer.Option(None, "--output-file", exists=True, dir_okay=False),
        request_id: Optional[str] = typer.Option(None, "--request-id", help="default: a uuid4"),
        influence: Optional[str] = typer.Option(None, "--influence", help="c1=0.5,c2=0.2"),
        json_text: Optional[str] = _JSON, file: Optional[Path] = _FILE, event_id: Optional[str] = _EVENT_ID,
        ts: Optional[str] = _TS, bootstrap: Optional[str] = _BOOTSTRAP, dry_run: bool = _DRY,
        sign: Optional[Path] = _SIGN) -> None:
    """A paid inference: the model, its fee and output, optional influence scores."""
    from poa_stream.emit import usage_event
    text = _read_text(output, output_file, "output")
    fields = {"model_id": model_id, "fee": fee, "output": text, "request_id": request_id,
              "influence": influence}
    _emit("usage", fields, json_text, file, event_id, ts, bootstrap, dry_run, usage_event, sign)


@emit_app.command("contribution")
def emit_contribution_cmd(
        contributor: Optional[str] = typer.Option(None, "--contributor"),
        datanet: Optional[str] = typer.Option(None, "--datanet"),
        content: Optional[str] = typer.Option(None, "--content"),
        content_file: Optional[Path] = typer.Option(None, "--content-file", exists=True, dir_okay=False),
        kind: Optional[str] = typer.Option(None, "--kind", help="dataset (default), annotation, knowledge, feedback"),
        contribution_id: Optional[str] = typer.Option(None, "--contribution-id", help="default: c-<uuid4>"),
        license: Optional[str] = typer.Option(None, "--license", help="SPDX id"),
        stake: Optional[int] = typer.Option(None, "--stake"),
        json_text: Optional[str] = _JSON, file: Optional[Path] = _FILE, event_id: Optional[str] = _EVENT_ID,
        ts: Optional[str] = _TS, bootstrap: Optional[str] = _BOOTSTRAP, dry_run: bool = _DRY,
        sign: Optional[Path] = _SIGN) -> None:
    """An upload into a datanet."""
    from poa_stream.emit import contribution_event
    fields = {"contributor": contributor, "datanet": datanet,
              "content": _read_text(content, content_file, "content"), "kind": kind,
              "contribution_id": contribution_id, "license": license, "stake": stake}
    _emit("contribution", fields, json_text, file, event_id, ts, bootstrap, dry_run, contribution_event, sign)


@emit_app.command("validation")
def emit_validation_cmd(
        validator: Optional[str] = typer.Option(None, "--validator"),
        contribution_id: Optional[str] = typer.Option(None, "--contribution-id"),
        verdict: Optional[str] = typer.Option(None, "--verdict", help="accept or reject"),
        quality: Optional[float] = typer.Option(None, "--quality", help="0..1"),
        stake: Optional[int] = typer.Option(None, "--stake"),
        json_text: Optional[str] = _JSON, file: Optional[Path] = _FILE, event_id: Optional[str] = _EVENT_ID,
        ts: Optional[str] = _TS, bootstrap: Optional[str] = _BOOTSTRAP, dry_run: bool = _DRY,
        sign: Optional[Path] = _SIGN) -> None:
    """A validator's vote on a contribution."""
    from poa_stream.emit import validation_event
    fields = {"validator": validator, "contribution_id": contribution_id, "verdict": verdict,
              "quality": quality, "stake": stake}
    _emit("validation", fields, json_text, file, event_id, ts, bootstrap, dry_run, validation_event, sign)


@emit_app.command("model")
def emit_model_cmd(
        model_id: Optional[str] = typer.Option(None, "--model-id"),
        operator: Optional[str] = typer.Option(None, "--operator", help="account paid the operator share"),
        method: Optional[str] = typer.Option(None, "--method", help="pretrain, finetune, lora, distill, merge"),
        datanets: Optional[str] = typer.Option(None, "--datanets", help="name=weight[,name=weight...]"),
        base_model: Optional[list[str]] = typer.Option(None, "--base-model", help="repeat for each base model"),
        inherit: Optional[float] = typer.Option(None, "--inherit", help="0..1 share passed to base models"),
        json_text: Optional[str] = _JSON, file: Optional[Path] = _FILE, event_id: Optional[str] = _EVENT_ID,
        ts: Optional[str] = _TS, bootstrap: Optional[str] = _BOOTSTRAP, dry_run: bool = _DRY,
        sign: Optional[Path] = _SIGN) -> None:
    """A model registration: its operator, training method, datanets and lineage."""
    from poa_stream.emit import model_event
    fields = {"model_id": model_id, "operator": operator, "method": method, "datanets": datanets,
              "base_models": base_model or None, "inherit": inherit}
    _emit("model", fields, json_text, file, event_id, ts, bootstrap, dry_run, model_event, sign)


# ---------------------------------------------------------------- keys
@keys_app.command("new")
def keys_new(account: str = typer.Option(..., "--account", help="the account the key signs for"),
             out: Path = typer.Option(..., "--out", help="key file to write (mode 0600; refuses to overwrite)")) -> None:
    """A new ed25519 key: the private key file for `poa emit --sign` and the client, and the
    public key line to add to the keys file the worker reads (POA_KEYS_FILE)."""
    from poa_stream.client import new_key
    doc = new_key(account)
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        err.print(f"[red]{out} exists: not overwritten[/]")
        raise typer.Exit(1)
    except OSError as exc:
        err.print(f"[red]cannot write {out}: {exc}[/]")
        raise typer.Exit(1)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
        f.write("\n")
    console.print(f"wrote {out} (keep it private). Register the public key in the keys file "
                  f"(POA_KEYS_FILE):", soft_wrap=True)
    sys.stdout.write(json.dumps({account: doc["public_key"]}) + "\n")


# ---------------------------------------------------------------- report
def report(store: Optional[Path] = typer.Option(None, "--store", help="embedded store directory "
                                                "(default: the configured store)"),
           out: Path = typer.Option(Path("poa-report.html"), "--out", help="HTML file to write"),
           database: Optional[str] = typer.Option(None, "--database", help="database (default: settings)")) -> None:
    """Write a self-contained HTML report (charts and tables of the dashboards) of a store."""
    from poa_stream.report import write_report
    from poa_stream.stores import StoreError, open_store, resolve
    r = resolve(_settings(), store, reading=True)
    if database:
        r = type(r)(r.settings.model_copy(update={"clickhouse_database": database}), r.where, r.why, r.exists)
    try:
        sink = open_store(r, reading=True)
    except StoreError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1)
    try:
        path = write_report(sink, out)
    except Exception as exc:
        err.print(f"[red]report failed:[/] {exc}")
        raise typer.Exit(1)
    finally:
        sink.close()
    console.print(f"wrote {path} (open it in any browser; it needs no network)")
