"""The one faust application, built by a function; no global app, no import-time side effects."""

from __future__ import annotations

from typing import Any

from streams.settings import WorkerSettings


def create_app(settings: WorkerSettings, **overrides: Any) -> Any:
    """Build the faust app from our settings.

    faust reads environment variables (``BROKER_URL``, ``APP_DATADIR``, ...) that override
    its keyword arguments; ``env={}`` cuts that channel so only our settings count.
    """
    import faust

    kafka = settings.kafka
    options: dict[str, Any] = {
        "broker": f"kafka://{kafka.bootstrap_servers}",
        "broker_credentials": _faust_credentials(settings),
        "store": settings.store,
        "datadir": str(settings.data_dir),
        "processing_guarantee": settings.processing_guarantee,
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": settings.heartbeat_interval_s,
        "broker_rebalance_timeout": settings.rebalance_timeout_s,
        "topic_partitions": settings.topic_partitions,
        "topic_replication_factor": 1,
        "topic_allow_declare": False,
        "web_enabled": False,
        # the bounds in schemas/bounds.py keep every record and slice under this
        "producer_max_request_size": settings.producer_max_request_bytes,
        "consumer_max_fetch_size": settings.producer_max_request_bytes,
        "env": {},
    }
    options.update(overrides)
    app = faust.App(settings.app_id, **options)
    app.transport = _transport(app, kafka.librdkafka(), int(settings.fetch_max_wait_s * 1000))
    return app


def _transport(app: Any, kafka_config: dict[str, str], fetch_max_wait_ms: int) -> Any:
    """faust's aiokafka transport, whose consumer takes a partition's end from a fetch
    response (:func:`streams.topic_reader.end_offsets`), right on any Kafka-protocol broker.

    faust's table recovery reads a changelog partition up to ``highwaters()``, which is
    ListOffsets(latest). Tansu answers that with the newest record batch's base offset + 1,
    so recovery ended inside the newest batch and the records after its first were never
    applied: a restarted worker, or one taking a partition over, lost the hours those
    slices held (docs/matching.md, "Crash and rebalance safety").

    Its fetches wait at most ``fetch_max_wait_ms`` for records (faust fixes 1,500 ms).
    """
    from streams.faust_compat import transport_with_fetch_highwaters
    from streams.topic_reader import end_offsets

    return transport_with_fetch_highwaters(
        app, lambda tps: end_offsets(kafka_config, tps), fetch_max_wait_ms
    )


def _faust_credentials(settings: WorkerSettings) -> Any:
    import ssl

    import faust

    kafka = settings.kafka
    context = None
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(
            cafile=str(kafka.ssl_ca_location) if kafka.ssl_ca_location else None
        )
        if kafka.ssl_certificate_location:
            context.load_cert_chain(
                str(kafka.ssl_certificate_location),
                str(kafka.ssl_key_location) if kafka.ssl_key_location else None,
                kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None,
            )
    if kafka.security_protocol.startswith("SASL"):
        password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""
        if kafka.sasl_mechanism == "PLAIN":
            return faust.SASLCredentials(
                username=kafka.sasl_username, password=password, ssl_context=context
            )
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=password,
            ssl_context=context,
            mechanism=kafka.sasl_mechanism,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None
