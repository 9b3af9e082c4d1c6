"""One Kafka connection configuration for every client: Faust, aiokafka, kafka-python.

``KafkaConnection`` holds the bootstrap servers and the security settings (from
``Settings.kafka()``: ``POA_KAFKA_*`` environment variables or the settings file, never
from code) and renders them for each client library:

- ``kafka_python()``: keyword arguments for ``KafkaProducer``, ``KafkaConsumer`` and
  ``KafkaAdminClient`` (topic creation, group lag, ``poa emit``, ``poa rewards tail``);
- ``aiokafka()``: keyword arguments for ``AIOKafkaProducer`` (the transactional outbox,
  the async client), which needs an ``ssl.SSLContext`` rather than file names;
- ``faust_credentials()``: the Faust app's ``broker_credentials``.

Protocols: PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL; SASL mechanisms PLAIN,
SCRAM-SHA-256 and SCRAM-SHA-512. A misconfiguration (SASL without a user, a CA file
that does not exist, an unknown protocol) raises ``KafkaConfigError`` with one line
naming the setting, before any client connects: nothing silently falls back to
PLAINTEXT. Every function that connects accepts a ``KafkaConnection`` or a bare bootstrap
string (PLAINTEXT), through ``as_connection``.
"""
from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaConfigError(ValueError):
    """The Kafka security settings are inconsistent; the message names the setting."""


@dataclass(frozen=True)
class KafkaConnection:
    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: Path | None = None  # PEM CA bundle that signed the brokers' certificates (None: system CAs)
    ssl_certfile: Path | None = None  # client certificate (PEM) for brokers that require client TLS auth
    ssl_keyfile: Path | None = None
    ssl_key_password: str | None = field(default=None, repr=False)
    ssl_check_hostname: bool = True

    def __post_init__(self) -> None:
        proto = self.security_protocol.upper()
        object.__setattr__(self, "security_protocol", proto)
        if proto not in PROTOCOLS:
            raise KafkaConfigError(f"POA_KAFKA_SECURITY_PROTOCOL={self.security_protocol!r}: "
                                   f"expected one of {', '.join(PROTOCOLS)}")
        if self.sasl:
            mech = (self.sasl_mechanism or "PLAIN").upper()
            object.__setattr__(self, "sasl_mechanism", mech)
            if mech not in MECHANISMS:
                raise KafkaConfigError(f"POA_KAFKA_SASL_MECHANISM={self.sasl_mechanism!r}: "
                                       f"expected one of {', '.join(MECHANISMS)}")
            if not self.sasl_username or self.sasl_password is None:
                raise KafkaConfigError(f"{proto} needs POA_KAFKA_SASL_USERNAME and POA_KAFKA_SASL_PASSWORD")
        elif self.sasl_mechanism:
            raise KafkaConfigError(f"POA_KAFKA_SASL_MECHANISM is set but POA_KAFKA_SECURITY_PROTOCOL is {proto}: "
                                   "use SASL_PLAINTEXT or SASL_SSL")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise KafkaConfigError(f"POA_KAFKA_{name.upper()}={path}: no such file")
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise KafkaConfigError("POA_KAFKA_SSL_KEYFILE needs POA_KAFKA_SSL_CERTFILE")

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    def describe(self) -> str:
        """One line for logs and errors; never the password."""
        who = f" as {self.sasl_username} ({self.sasl_mechanism})" if self.sasl else ""
        return f"{self.bootstrap} over {self.security_protocol}{who}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context every client uses (None for PLAINTEXT and SASL_PLAINTEXT)."""
        if not self.tls:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=str(self.ssl_cafile) if self.ssl_cafile else None)
        ctx.check_hostname = self.ssl_check_hostname
        if self.ssl_certfile is not None:
            ctx.load_cert_chain(str(self.ssl_certfile), str(self.ssl_keyfile) if self.ssl_keyfile else None,
                                password=self.ssl_key_password)
        return ctx

    def kafka_python(self) -> dict:
        """``bootstrap_servers`` and security options for kafka-python clients."""
        opts: dict = {"bootstrap_servers": self.bootstrap, "security_protocol": self.security_protocol}
        if self.sasl:
            opts.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                        sasl_plain_password=self.sasl_password)
        if self.tls:
            opts["ssl_context"] = self.ssl_context()
        return opts

    aiokafka = kafka_python  # aiokafka takes the same keywords (TLS as ``ssl_context``)

    def faust_credentials(self):
        """The Faust app's ``broker_credentials`` (None for PLAINTEXT)."""
        import faust
        if self.sasl:
            return faust.SASLCredentials(username=self.sasl_username, password=self.sasl_password,
                                         mechanism=self.sasl_mechanism, ssl_context=self.ssl_context())
        if self.tls:
            return faust.SSLCredentials(self.ssl_context())
        return None

    def faust_broker(self) -> str:
        """The broker URL list for ``faust.App(broker=...)``."""
        return ";".join(f"kafka://{h.strip()}" for h in self.bootstrap.split(",") if h.strip())


def as_connection(conn: KafkaConnection | str) -> KafkaConnection:
    """A ``KafkaConnection`` as it is, or a bare bootstrap string as a PLAINTEXT connection."""
    return conn if isinstance(conn, KafkaConnection) else KafkaConnection(bootstrap=conn)
