"""Checks: every setting validated when the settings load (``load_settings`` calls
``check_settings``), by area; a ``SettingsError`` names the setting.

The comma-separated mini-languages are parsed here by the same functions their users parse
them with when they start (``MessagingPolicy.from_settings``, ``parse_windows``,
``parse_witnesses``), imported when needed so that loading stays cheap and cycle-free.
"""

from __future__ import annotations

from mailveil.config.settings import Settings, SettingsError

_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def nameservers(text: str) -> tuple[list[str], int]:
    """(resolver IPs, port) from ``dns_nameservers``; one port for all of them."""
    import ipaddress

    ips: list[str] = []
    ports: set[int] = set()
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        host, port = item, "53"
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else "53"
        elif item.count(":") == 1:
            host, port = item.split(":")
        try:
            ips.append(str(ipaddress.ip_address(host)))
            number = int(port)
        except ValueError as exc:
            raise SettingsError(
                f"dns_nameservers: {item!r} is not an IP address with an optional port"
            ) from exc
        if not 0 < number < 65536:
            raise SettingsError(f"dns_nameservers: {item!r} has no valid port")
        ports.add(number)
    if len(ports) > 1:
        raise SettingsError("dns_nameservers: every resolver must use the same port")
    return ips, ports.pop() if ports else 53


def check_settings(settings: Settings) -> None:
    """Every setting, by area; SettingsError names the first bad one (``load_settings``)."""
    _check_core(settings)
    _check_relay(settings)
    _check_access(settings)
    _check_console(settings)
    _check_notify(settings)
    _check_witnesses(settings)
    _check_custody(settings)
    _check_report(settings)
    _check_platform(settings)
    _check_ops(settings)


def _check_core(settings: Settings) -> None:
    if settings.log_level.lower() not in _LOG_LEVELS:
        raise SettingsError(f"log_level must be one of {', '.join(_LOG_LEVELS)}")
    if settings.seller_contact_window_days < 0:
        raise SettingsError("seller_contact_window_days must be >= 0")
    if settings.sqlite_cache_mib < 1:
        raise SettingsError("sqlite_cache_mib must be >= 1")
    if settings.checkpoint_every_entries < 1:
        raise SettingsError("checkpoint_every_entries must be >= 1")
    if settings.api_db_pool_size < 1 or settings.api_db_max_overflow < 0:
        raise SettingsError("api_db_pool_size must be >= 1 and api_db_max_overflow >= 0")
    if settings.api_db_pool_timeout_seconds <= 0 or settings.api_db_busy_timeout_seconds <= 0:
        raise SettingsError(
            "api_db_pool_timeout_seconds and api_db_busy_timeout_seconds must be > 0"
        )
    if not 0 < settings.api_port < 65536:
        raise SettingsError("api_port must be a TCP port")
    if not 0 <= settings.api_nice <= 19:
        raise SettingsError("api_nice must be between 0 and 19")


def _check_relay(settings: Settings) -> None:
    from mailveil.relay.content_rules import MessagingPolicy  # the relay's own parser, one copy

    if "@" in settings.relay_domain or not settings.relay_domain:
        raise SettingsError("relay_domain must be a bare domain name")
    if settings.relay_malloc_arenas < 0:
        raise SettingsError("relay_malloc_arenas must be >= 0 (0: glibc's default)")
    # relay_reasons_by_status, the reason lists, relay_attachment_types, ...: parsed as the
    # relay will parse them when it starts.
    MessagingPolicy.from_settings(settings)
    for host in settings.trackers_extra_hosts.split(","):
        if any(c in host.strip() for c in "/@: \t"):
            raise SettingsError(f"trackers_extra_hosts: {host.strip()!r} is not a host name")
    if settings.relay_hard_bounce_limit < 1:
        raise SettingsError("relay_hard_bounce_limit must be >= 1")
    if settings.relay_stranger_action not in ("quarantine", "refuse", "banner"):
        raise SettingsError("relay_stranger_action must be quarantine, refuse or banner")
    if not settings.abuse_mailbox_local or any(c in settings.abuse_mailbox_local for c in "@ <>"):
        raise SettingsError("abuse_mailbox_local must be a bare local part")
    if settings.abuse_db_wait_seconds < 0 or settings.report_pending_hours <= 0:
        raise SettingsError("abuse_db_wait_seconds must be >= 0 and report_pending_hours > 0")
    if settings.dns_timeout_seconds <= 0:
        raise SettingsError("dns_timeout_seconds must be > 0")
    if settings.relay_reconcile_after_seconds < 0 or settings.relay_reconcile_interval_seconds <= 0:
        raise SettingsError(
            "relay_reconcile_after_seconds must be >= 0 and relay_reconcile_interval_seconds > 0"
        )
    if settings.relay_retry_window_seconds < 0:
        raise SettingsError("relay_retry_window_seconds must be >= 0")
    nameservers(settings.dns_nameservers)
    if not 0 <= settings.relay_port < 65536:  # 0: any free port (tests, benchmarks)
        raise SettingsError("relay_port must be a TCP port")
    if not 0 < settings.smarthost_port < 65536:
        raise SettingsError("smarthost_port must be a TCP port")
    if bool(settings.relay_tls_cert) != bool(settings.relay_tls_key):
        raise SettingsError("relay_tls_cert and relay_tls_key must be set together")
    if (
        min(settings.smarthost_pool_size, settings.relay_max_connections, settings.relay_workers)
        < 1
    ):
        raise SettingsError(
            "smarthost_pool_size, relay_max_connections and relay_workers must be >= 1"
        )


def _check_access(settings: Settings) -> None:
    for name in (
        "employee_rows_per_hour",
        "employee_rows_per_day",
        "employee_export_max_rows",
        "reveal_approvals_required",
        "reveal_views",
    ):
        if getattr(settings, name) < 1:
            raise SettingsError(f"{name} must be >= 1")
    if settings.canary_min_rows < 0 or settings.canaries_per_country < 0:
        raise SettingsError("canary_min_rows and canaries_per_country must be >= 0")
    if settings.reveal_grant_minutes <= 0 or settings.reveal_request_hours <= 0:
        raise SettingsError("reveal_grant_minutes and reveal_request_hours must be > 0")
    if "@" in settings.canary_domain or not settings.canary_domain:
        raise SettingsError("canary_domain must be a bare domain name")


def _check_console(settings: Settings) -> None:
    if settings.console_session_hours <= 0 or settings.console_idle_minutes <= 0:
        raise SettingsError("console_session_hours and console_idle_minutes must be > 0")
    if settings.console_embed_link_minutes <= 0:
        raise SettingsError("console_embed_link_minutes must be > 0")
    if settings.console_public_url and not settings.console_public_url.startswith(
        ("http://", "https://")
    ):
        raise SettingsError("console_public_url must be an http:// or https:// URL")
    if settings.console_oidc_issuer and not (
        settings.console_oidc_client_id and settings.console_oidc_client_secret
    ):
        raise SettingsError(
            "console_oidc_issuer needs console_oidc_client_id and console_oidc_client_secret"
        )
    for origin in settings.console_embed_origins.split():
        if not origin.startswith(("http://", "https://")) or any(c in origin for c in ";,'\""):
            raise SettingsError(f"console_embed_origins: {origin!r} is not an origin")


def _check_notify(settings: Settings) -> None:
    stages = settings.notify_stages.split(",")
    try:
        fractions = [float(x) for x in stages]
    except ValueError as exc:
        raise SettingsError("notify_stages must be comma-separated fractions") from exc
    if not fractions or fractions != sorted(fractions) or fractions[0] <= 0:
        raise SettingsError("notify_stages must be increasing fractions above 0")
    if fractions[-1] != 1:
        raise SettingsError("notify_stages must end with 1 (the whole audience)")
    for name in (
        "notify_max_ineligible_rate",
        "notify_max_bounce_rate",
        "notify_max_complaint_rate",
        "notify_max_unsubscribe_rate",
    ):
        if not 0 <= getattr(settings, name) <= 1:
            raise SettingsError(f"{name} must be between 0 and 1")
    if settings.notify_blast_factor <= 0 or settings.notify_blast_cap < 1:
        raise SettingsError("notify_blast_factor must be > 0 and notify_blast_cap >= 1")
    if min(settings.notify_min_stage_size, settings.notify_batch_size) < 1:
        raise SettingsError("notify_min_stage_size and notify_batch_size must be >= 1")
    if settings.notify_frequency_cap < 0 or settings.notify_soak_seconds < 0:
        raise SettingsError("notify_frequency_cap and notify_soak_seconds must be >= 0")
    if settings.notify_lease_seconds <= 0 or settings.worker_threads < 1:
        raise SettingsError("notify_lease_seconds must be > 0 and worker_threads >= 1")
    if not 1 <= settings.notify_relay_connections <= 16:
        raise SettingsError("notify_relay_connections must be between 1 and 16")
    if not settings.worker_queue.replace("_", "").replace("-", "").isalnum():
        raise SettingsError("worker_queue must be letters, digits, '_' or '-'")
    if not -1 <= settings.worker_anomaly_hour < 24:
        raise SettingsError("worker_anomaly_hour must be an hour 0..23 (-1: off)")
    if not 0 <= settings.notify_relay_port < 65536:
        raise SettingsError("notify_relay_port must be a TCP port (0: relay_port)")
    if settings.notify_broker_url and not settings.notify_broker_url.startswith(
        ("redis://", "rediss://", "amqp://", "amqps://")
    ):
        raise SettingsError("notify_broker_url must be a redis:// or amqp:// URL")


def _check_platform(settings: Settings) -> None:
    from mailveil.contacts.lifecycle import parse_windows

    parse_windows(settings.lifecycle_windows)
    if settings.lifecycle_reopen_days < 0 or settings.lifecycle_flood_limit < 0:
        raise SettingsError("lifecycle_reopen_days and lifecycle_flood_limit must be >= 0")
    for name in ("veto_url", "events_url"):
        url = getattr(settings, name)
        if url and not url.startswith(("http://", "https://")):
            raise SettingsError(f"{name} must be an http:// or https:// URL")
        if url and not settings.platform_webhook_secret:
            raise SettingsError(f"{name} needs platform_webhook_secret (requests are signed)")
    if (
        min(
            settings.veto_timeout_seconds,
            settings.events_timeout_seconds,
            settings.events_push_seconds,
        )
        <= 0
    ):
        raise SettingsError(
            "veto_timeout_seconds, events_timeout_seconds and events_push_seconds must be > 0"
        )
    if settings.events_batch_size < 1:
        raise SettingsError("events_batch_size must be >= 1")


def _check_ops(settings: Settings) -> None:
    if not 0 <= settings.metrics_port < 65536:
        raise SettingsError("metrics_port must be a TCP port (0: off)")
    if settings.alert_webhook_url:
        if not settings.alert_webhook_url.startswith(("http://", "https://")):
            raise SettingsError("alert_webhook_url must be an http:// or https:// URL")
        if len(settings.alert_webhook_secret) < 16:
            raise SettingsError(
                "alert_webhook_url needs alert_webhook_secret (at least 16 characters)"
            )
    if min(settings.alert_retry_seconds, settings.alert_timeout_seconds) <= 0:
        raise SettingsError("alert_retry_seconds and alert_timeout_seconds must be > 0")
    if settings.alert_poll_seconds <= 0 or settings.alert_max_attempts < 1:
        raise SettingsError("alert_poll_seconds must be > 0 and alert_max_attempts >= 1")


def _check_report(settings: Settings) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(settings.report_timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SettingsError(
            f"report_timezone {settings.report_timezone!r} is not an IANA time zone"
        ) from exc
    if settings.nis2_entity not in ("none", "important", "essential"):
        raise SettingsError("nis2_entity must be none, important or essential")


def _check_witnesses(settings: Settings) -> None:
    from mailveil.witness.policy import parse_witnesses  # cryptography only when needed

    try:
        witnesses = parse_witnesses(settings.witnesses)
    except ValueError as exc:
        raise SettingsError(f"witnesses: {exc}") from exc
    if settings.witness_quorum < 1:
        raise SettingsError("witness_quorum must be >= 1")
    if witnesses and settings.witness_quorum > len(witnesses):
        raise SettingsError(
            f"witness_quorum is {settings.witness_quorum} but only {len(witnesses)} "
            "witness(es) are configured"
        )
    if settings.witness_timeout_seconds <= 0:
        raise SettingsError("witness_timeout_seconds must be > 0")


def _check_custody(settings: Settings) -> None:
    if settings.key_refresh_seconds <= 0:
        raise SettingsError("key_refresh_seconds must be > 0")
    if settings.verp_grace_days < 0 or settings.dkim_overlap_hours < 0:
        raise SettingsError("verp_grace_days and dkim_overlap_hours must be >= 0")
    if settings.key_store not in ("files", "pkcs11"):
        raise SettingsError("key_store must be files or pkcs11")
    if settings.key_store == "pkcs11" and not (
        settings.pkcs11_module and settings.pkcs11_token_label
    ):
        raise SettingsError("key_store = pkcs11 needs pkcs11_module and pkcs11_token_label")


__all__ = ["check_settings", "nameservers"]
