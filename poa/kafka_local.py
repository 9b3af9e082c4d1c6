"""The local Kafka broker: resolved from Maven Central, run with ``java`` (KRaft, one node).

``deploy/kafka/pom.xml`` pins the broker version (the only place it is pinned) and
the logging jars the distribution tarball adds by hand. ``start()`` resolves the jars
once (``mvn dependency:copy-dependencies``), formats KRaft storage once, starts
``kafka.Kafka`` detached with its output in ``<data dir>/broker.log``, and waits until
the broker answers a metadata request. It is idempotent: a running broker is reused.
``stop()`` sends SIGTERM (a clean controlled shutdown), then SIGKILL after a timeout.

``POA_KAFKA_LOCAL_SECURITY=all`` adds three listeners beside the loopback PLAINTEXT one (which
stays for the broker's own traffic): SSL on port+2, SASL_PLAINTEXT on port+3 and SASL_SSL
on port+4, SASL with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 for one user ``poa``. The first
start generates a CA and a broker certificate (SAN localhost, 127.0.0.1) with the JDK's
keytool and a random password, and writes what a client needs into
``<data dir>/security.json`` (mode 0600): the listeners, the user, the password and the CA
file. It is for development and tests; a production cluster brings its own certificates.
"""
from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from poa_stream.settings import Settings
from poa_stream.streams.topics import ALL_TOPICS, partitions_for

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "kafka"


class KafkaSetupError(RuntimeError):
    """The local broker cannot run here; the message says what is missing and how to fix it."""


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str
    data_dir: Path

    def __str__(self) -> str:
        state = f"running (pid {self.pid})" if self.running else "stopped"
        return f"Kafka broker {state} at {self.bootstrap}, data in {self.data_dir}"


def missing_tools() -> list[str]:
    return [t for t in ("java", "mvn") if shutil.which(t) is None]


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


class LocalKafka:
    def __init__(self, settings: Settings):
        self.s = settings
        self.dir = settings.kafka_dir.resolve()
        self.libs = self.dir / "libs"
        self.pid_file = self.dir / "broker.pid"
        self.log_file = self.dir / "broker.log"
        self.bootstrap = f"127.0.0.1:{settings.kafka_local_port}"

    # ---------------------------------------------------------------- setup
    def resolve_jars(self) -> Path:
        """Copy the broker's runtime jars from Maven Central into ``<data dir>/libs`` (once)."""
        marker = self.libs / ".complete"
        pom = DEPLOY / "pom.xml"
        if marker.exists() and marker.read_text() == pom.read_text():
            return self.libs
        if missing := missing_tools():
            raise KafkaSetupError(f"{' and '.join(missing)} not found: the local Kafka broker needs "
                                  "Java 17+ and Maven (apt-get install openjdk-17-jre-headless maven)")
        shutil.rmtree(self.libs, ignore_errors=True)
        self.libs.mkdir(parents=True)
        cmd = ["mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
               f"-DoutputDirectory={self.libs}", "-DincludeScope=runtime"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise KafkaSetupError(f"Maven could not resolve the Kafka broker:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
        marker.write_text(pom.read_text())
        return self.libs

    def _render_config(self) -> Path:
        conf = self.dir / "server.properties"
        text = (DEPLOY / "server.properties.template").read_text().format(
            port=self.s.kafka_local_port, controller_port=self.s.kafka_local_controller_port,
            log_dir=self.dir / "data", partitions=self.s.topic_partitions)
        if self.secure:
            text = self._secure_config(text)
        conf.touch(mode=0o600)
        conf.write_text(text)
        return conf

    # ---------------------------------------------------------------- security (POA_KAFKA_LOCAL_SECURITY=all)
    @property
    def secure(self) -> bool:
        mode = self.s.kafka_local_security.lower()
        if mode not in ("plaintext", "all"):
            raise KafkaSetupError(f"POA_KAFKA_LOCAL_SECURITY={mode!r}: expected plaintext or all")
        return mode == "all"

    @property
    def security_file(self) -> Path:
        return self.dir / "security.json"

    def secure_ports(self) -> dict[str, int]:
        p = self.s.kafka_local_port
        return {"SSL": p + 2, "SASL_PLAINTEXT": p + 3, "SASL_SSL": p + 4}

    def security(self) -> dict:
        """What a client needs for the secure listeners (``security.json``)."""
        try:
            return json.loads(self.security_file.read_text())
        except (OSError, ValueError):
            raise KafkaSetupError(f"no {self.security_file}: start the broker with POA_KAFKA_LOCAL_SECURITY=all") from None

    def _keytool(self, *args: str) -> None:
        if shutil.which("keytool") is None:
            raise KafkaSetupError("keytool not found: the secure local broker needs a JDK (openjdk-17-jdk-headless)")
        r = subprocess.run(["keytool", *args], capture_output=True, text=True)
        if r.returncode != 0:
            raise KafkaSetupError(f"keytool {args[0]} failed: {(r.stderr or r.stdout).strip()[-500:]}")

    def _ensure_tls(self) -> dict:
        """A CA and a broker key pair signed by it (once); security.json describes them."""
        if self.security_file.exists():
            return self.security()
        tls = self.dir / "tls"
        shutil.rmtree(tls, ignore_errors=True)
        tls.mkdir(parents=True, mode=0o700)
        pw = secrets.token_urlsafe(18)
        ca_ks, ks = str(tls / "ca.p12"), str(tls / "broker.p12")
        common = ["-storetype", "PKCS12", "-storepass", pw, "-keypass", pw]
        self._keytool("-genkeypair", "-alias", "ca", "-keyalg", "RSA", "-keysize", "2048", "-validity", "3650",
                      "-dname", "CN=poa-local-ca", "-ext", "bc:c=ca:true", "-ext", "ku:c=keyCertSign,cRLSign",
                      "-keystore", ca_ks, *common)
        self._keytool("-exportcert", "-rfc", "-alias", "ca", "-keystore", ca_ks, "-storepass", pw,
                      "-file", str(tls / "ca.pem"))
        self._keytool("-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048", "-validity", "3650",
                      "-dname", "CN=localhost", "-keystore", ks, *common)
        self._keytool("-certreq", "-alias", "broker", "-keystore", ks, "-storepass", pw, "-file", str(tls / "broker.csr"))
        self._keytool("-gencert", "-alias", "ca", "-keystore", ca_ks, "-storepass", pw, "-infile", str(tls / "broker.csr"),
                      "-outfile", str(tls / "broker.pem"), "-rfc", "-validity", "3650",
                      "-ext", "san=dns:localhost,ip:127.0.0.1", "-ext", "ku:c=digitalSignature,keyEncipherment",
                      "-ext", "eku=serverAuth")
        self._keytool("-importcert", "-noprompt", "-alias", "ca", "-file", str(tls / "ca.pem"), "-keystore", ks,
                      "-storepass", pw, "-storetype", "PKCS12")
        self._keytool("-importcert", "-noprompt", "-alias", "broker", "-file", str(tls / "broker.pem"), "-keystore", ks,
                      "-storepass", pw, "-storetype", "PKCS12")
        info = {"listeners": {k: f"127.0.0.1:{v}" for k, v in self.secure_ports().items()},
                "username": "poa", "password": secrets.token_urlsafe(18),
                "mechanisms": ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"],
                "ssl_cafile": str(tls / "ca.pem"), "keystore": ks, "keystore_password": pw}
        self.security_file.touch(mode=0o600)
        self.security_file.write_text(json.dumps(info, indent=2))
        return info

    def _secure_config(self, text: str) -> str:
        info = self._ensure_tls()
        ports = self.secure_ports()
        lines = [ln for ln in text.splitlines()
                 if not ln.startswith(("listeners=", "advertised.listeners=", "listener.security.protocol.map="))]
        plain = f"PLAINTEXT://127.0.0.1:{self.s.kafka_local_port}"
        extra = ",".join(f"{k}://127.0.0.1:{v}" for k, v in ports.items())
        user = f'user_{info["username"]}="{info["password"]}";'
        lines += [
            f"listeners={plain},CONTROLLER://127.0.0.1:{self.s.kafka_local_controller_port},{extra}",
            f"advertised.listeners={plain},{extra}",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SSL:SSL,"
            "SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL",
            "ssl.keystore.type=PKCS12", f"ssl.keystore.location={info['keystore']}",
            f"ssl.keystore.password={info['keystore_password']}", f"ssl.key.password={info['keystore_password']}",
            "ssl.client.auth=none",
            "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        ]
        for listener in ("sasl_plaintext", "sasl_ssl"):
            lines.append(f"listener.name.{listener}.plain.sasl.jaas.config="
                         f"org.apache.kafka.common.security.plain.PlainLoginModule required {user}")
            for mech in ("scram-sha-256", "scram-sha-512"):
                lines.append(f"listener.name.{listener}.{mech}.sasl.jaas.config="
                             "org.apache.kafka.common.security.scram.ScramLoginModule required;")
        return "\n".join(lines) + "\n"

    def _java(self, *args: str, heap: str | None = None) -> list[str]:
        cmd = ["java"]
        if heap:
            cmd += [f"-Xmx{heap}", f"-Xms{heap}"]
        return cmd + ["-XX:+UseSerialGC", "-Djava.awt.headless=true",
                      f"-Dlog4j2.configurationFile={DEPLOY / 'log4j2.properties'}",
                      "-cp", str(self.libs / "*"), *args]

    def _format(self, conf: Path) -> None:
        marker = self.dir / "data" / ".poa-security"
        if (self.dir / "data" / "meta.properties").exists():
            if self.secure and not marker.exists():
                raise KafkaSetupError(f"the broker's storage in {self.dir / 'data'} was formatted without SASL "
                                      "users; delete that folder (its topics go) or use another POA_KAFKA_DATA_DIR")
            return
        cluster_id = "-"
        while cluster_id.startswith("-"):  # as Kafka's Uuid.randomUuid(): "-..." reads as an option
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        scram: list[str] = []
        if self.secure:  # SCRAM users live in the cluster metadata: written when storage is formatted
            info = self.security()
            for mech in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                scram += ["--add-scram", f"{mech}=[name={info['username']},password={info['password']}]"]
        r = subprocess.run(self._java("kafka.tools.StorageTool", "format", "-t", cluster_id,
                                      "-c", str(conf), "-g", *scram, heap="256m"),
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise KafkaSetupError(f"formatting KRaft storage failed:\n{r.stdout}{r.stderr}")
        if self.secure:
            marker.write_text("SCRAM users formatted in\n")

    # ---------------------------------------------------------------- lifecycle
    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def status(self) -> BrokerStatus:
        pid = self.pid()
        return BrokerStatus(pid is not None and _port_open(self.s.kafka_local_port), pid,
                            self.bootstrap, self.dir)

    def start(self, timeout_s: float = 120.0) -> BrokerStatus:
        if self.pid() is not None:
            self.wait_ready(timeout_s)
            return self.status()
        ports = [(self.s.kafka_local_port, "POA_KAFKA_LOCAL_PORT"),
                 (self.s.kafka_local_controller_port, "POA_KAFKA_LOCAL_CONTROLLER_PORT")]
        if self.secure:
            ports += [(p, f"POA_KAFKA_LOCAL_PORT (the {k} listener is on port+{p - self.s.kafka_local_port})")
                      for k, p in self.secure_ports().items()]
        for port, var in ports:
            if _port_open(port):
                raise KafkaSetupError(f"port {port} is taken by another process; set {var} "
                                      "(or POA_KAFKA_BOOTSTRAP to use a running broker)")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.resolve_jars()
        conf = self._render_config()
        self._format(conf)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(self._java("kafka.Kafka", str(conf), heap=self.s.kafka_heap),
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=self.dir)
        self.pid_file.write_text(str(proc.pid))
        try:
            self.wait_ready(timeout_s, proc)
        except Exception:
            self.stop()
            raise
        return self.status()

    def wait_ready(self, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
        from kafka import KafkaAdminClient
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                lines = self.log_file.read_text(errors="replace").splitlines()
                errors = [ln for ln in lines if "ERROR" in ln or "Exception" in ln or "Caused by" in ln]
                tail = "\n".join((errors or lines)[-8:])
                raise KafkaSetupError(f"the broker exited with code {proc.returncode} "
                                      f"(full log: {self.log_file}):\n{tail}")
            if _port_open(self.s.kafka_local_port):
                try:
                    admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
                    admin.list_topics()
                    admin.close()
                    return
                except Exception as exc:  # not ready yet
                    last = exc
            time.sleep(0.5)
        raise KafkaSetupError(f"the broker did not become ready in {timeout_s:.0f}s ({last}); "
                              f"see {self.log_file}")

    def stop(self, timeout_s: float = 30.0) -> bool:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.2)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True


def ensure_topics(bootstrap: str, partitions: int) -> list[str]:
    """The PoA topics on this tool's own broker (PLAINTEXT, replication 1): streams.admin."""
    from poa_stream.streams.admin import create_topics
    return create_topics(bootstrap, partitions)


def reset_topics(bootstrap: str, partitions: int, timeout_s: float = 60.0) -> None:
    """Delete the PoA topics (and the demo/test worker's internal ones) and create them anew
    with their explicit partition counts, checked: a topic that a client's metadata request
    auto-created in between (with the broker's default count) is deleted and created again.

    Only for a broker this tool owns (the demo's and the tests'): it erases the topics' data.
    """
    from kafka import KafkaAdminClient
    deadline = time.monotonic() + timeout_s
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        doomed = [t for t in admin.list_topics() if t in ALL_TOPICS or t.startswith(("poa-demo", "poa-test"))]
        while True:
            if doomed:
                admin.delete_topics(doomed)
                while time.monotonic() < deadline and set(doomed) & set(admin.list_topics()):
                    time.sleep(0.3)
            try:
                ensure_topics(bootstrap, partitions)
                present = [t for t in ALL_TOPICS if t in set(admin.list_topics())]
                counts = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(present)}
                doomed = [t for t in present if counts.get(t) != partitions_for(t, partitions)]
                if not doomed and len(present) < len(ALL_TOPICS):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"topics missing after reset: {sorted(set(ALL_TOPICS) - set(present))}")
                    time.sleep(0.3)
                    continue  # a creation that lost a race: ensure_topics creates the rest
            except Exception:
                if time.monotonic() > deadline:
                    raise
                doomed = []
                time.sleep(0.5)
                continue
            if not doomed:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"topics with the wrong partition count after reset: {doomed}")
    finally:
        admin.close()
