"""The settings object: every setting, its type, default and documentation, grouped by area.

Loaded (and validated) by ``mailveil.config.loading``; checked by ``mailveil.config.checks``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ENV_PREFIX = "MAILVEIL_"
CONFIG_ENV = "MAILVEIL_CONFIG"
DEFAULT_CONFIG_FILE = "mailveil.toml"


class SettingsError(ValueError):
    """A setting is missing, malformed or contradictory."""


@dataclass(frozen=True)
class Settings:
    """Every setting, read once by ``load_settings``; flat (``settings.relay_port``) but
    grouped by area. Each ``# -- <area>`` heading starts a group, and the comment above a
    setting documents it: docs/settings.md is generated from them
    (``python -m mailveil.config.reference``), so write them for operators."""

    # -- storage -------------------------------------------------------------------------------
    # Where the SQLite database, key files and logs live. Git ignores ./var.
    data_dir: Path = Path("var")
    # Empty means the embedded SQLite file inside data_dir.
    database_url: str = ""
    # SQLite only: the page cache of each database connection, in MiB (SQLite's own default
    # is 2). A process holds several connections, so its memory can grow by this much times
    # their number as the database outgrows the cache; smaller saves memory and costs reads.
    sqlite_cache_mib: int = 64
    # -- logging -------------------------------------------------------------------------------
    # A logging level: "debug", "info", "warning", "error" or "critical"; one JSON object a
    # line (log_json) or plain text.
    log_level: str = "info"
    log_json: bool = True
    # -- the API (mailveil.api) ----------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = 8700
    # Largest request body the API accepts, in bytes (bulk endpoints included), and the
    # largest JSON body.
    max_body_bytes: int = 64 * 1024 * 1024
    max_json_body_bytes: int = 1024 * 1024
    # Rows a list returns when the request names no page size, and the most it may ask for.
    page_size_default: int = 100
    page_size_max: int = 1000
    # The API's own database pool (mailveil.api.database), apart from the relay's.
    # Connections the API holds at most (pool plus overflow). A request that cannot get one
    # within api_db_pool_timeout_seconds is answered 503 with Retry-After (never a stall).
    api_db_pool_size: int = 10
    api_db_max_overflow: int = 10
    api_db_pool_timeout_seconds: float = 2.0
    # How long an API request waits for SQLite's write lock before answering 503.
    api_db_busy_timeout_seconds: float = 5.0
    # Scheduling priority (nice, 0-19) the API's process gives up under `mailveil serve`, so
    # that the relay's processes, the latency-critical path, get the CPU first when both are
    # busy. Not applied with `--single-process` or `--no-relay` (one process).
    api_nice: int = 10
    # -- contact policy (mailveil.policy) ------------------------------------------------------
    # Cedar policy folder that overrides the shipped one; empty means shipped policies only.
    policy_dir: str = ""
    # A seller may reach a customer who ordered from it within this many days.
    seller_contact_window_days: int = 90
    # -- the ledger (mailveil.ledger) ----------------------------------------------------------
    # Ledger checkpoints: every N entries or every T seconds, whichever comes first.
    checkpoint_every_entries: int = 1024
    checkpoint_every_seconds: float = 60.0
    # The checkpoint origin line (C2SP tlog-checkpoint); defaults to the relay domain.
    ledger_origin: str = ""
    # -- relay (SMTP): see mailveil.relay.server -----------------------------------------------
    # Aliases and reverse aliases live on this domain.
    relay_domain: str = "relay.mailveil.localhost"
    relay_host: str = "127.0.0.1"
    relay_port: int = 2525
    # Name in the greeting and EHLO reply; empty means the relay domain.
    relay_hostname: str = ""
    # PEM files; both set enables STARTTLS (and with it SMTP AUTH).
    relay_tls_cert: str = ""
    relay_tls_key: str = ""
    # Allow AUTH without TLS when the client connects from a loopback address.
    relay_allow_plain_auth_on_loopback: bool = False
    # Advertised SIZE; larger messages are refused while being read (memory stays bounded).
    relay_max_message_bytes: int = 25 * 1024 * 1024
    # Idle time allowed per command, and for a whole DATA transfer, before the relay hangs up.
    relay_timeout_seconds: float = 120.0
    relay_max_connections: int = 512
    # glibc malloc arenas the relay's process may use (MALLOC_ARENA_MAX, set at its start);
    # 0 leaves glibc's default of eight per core, whose idle arenas keep the memory of the
    # largest messages their threads handled.
    relay_malloc_arenas: int = 2
    # Relay processes sharing the listening socket (`mailveil relay`); one core each. Each
    # takes new connections only while no other holds fewer.
    relay_workers: int = 1
    # -- relay delivery: the smarthost every accepted message is handed to ---------------------
    smarthost_host: str = "127.0.0.1"
    smarthost_port: int = 25
    smarthost_pool_size: int = 8
    smarthost_timeout: float = 30.0
    smarthost_starttls: bool = False
    smarthost_validate_certs: bool = True
    smarthost_username: str = ""
    smarthost_password: str = ""
    # -- relay records (issue 16): rows a stopped relay left "sending", and retries ------------
    # A row still "sending" after this long is from a relay that stopped before recording the
    # smarthost's answer (a live relay settles one within a few smarthost_timeout): it becomes
    # "unknown" with a message_unknown ledger entry (mailveil.relay.reconcile).
    relay_reconcile_after_seconds: float = 600.0
    # How often each relay looks for such rows (and always once when it starts).
    relay_reconcile_interval_seconds: float = 60.0
    # How long a sender may retry a deferred message and have it recognised as the same one.
    relay_retry_window_seconds: float = 5 * 24 * 3600.0
    # -- relay messaging policy (principal -> customer): see mailveil.relay.content_rules ------
    # "status=reason,reason; status=..." for the order statuses in contacts.models.
    relay_reasons_by_status: str = (
        "placed=order_question,shipping; paid=order_question,shipping; "
        "shipped=shipping,delivery,return,review_request; "
        "delivered=shipping,delivery,return,review_request; "
        "cancelled=refund,return; returned=refund,return"
    )
    # Allowed whatever the order's status (or without an order), and despite an opt-out.
    relay_critical_reasons: str = "safety_recall,legal,refund"
    # Reasons employees (support) may give; they have cases, not orders.
    relay_employee_reasons: str = "support,order_question,shipping,delivery,return,refund"
    # Reasons notification services (mailveil.notify) may give; their templates name one.
    relay_service_reasons: str = "notification,order_update,account,security_notice"
    relay_plain_text_only: bool = False
    relay_forbid_external_links: bool = False
    # Hosts (and their subdomains) links may point to when external links are forbidden.
    relay_link_allowlist: str = ""
    relay_attachment_types: str = "application/pdf,image/png,image/jpeg,image/gif,text/plain"
    relay_max_attachment_bytes: int = 10 * 1024 * 1024
    # -- the marketplace platform (issue 18; docs/platform.md) ---------------------------------
    # Conversation lifecycles (mailveil.contacts.lifecycle): a seller may write to a customer
    # for this many days after the order entered each status ("delivered": the return
    # window); then the relay answers 5.2.1 "this conversation has ended". A customer's message
    # to the seller reopens the conversation for lifecycle_reopen_days.
    lifecycle_enabled: bool = True
    lifecycle_windows: str = (
        "placed=60,paid=60,shipped=60,delivered=30,returned=30,cancelled=14,closed=0"
    )
    lifecycle_reopen_days: float = 14.0
    # At most this many messages from one seller to one customer per 24 hours (0: no cap).
    lifecycle_flood_limit: int = 0
    # The veto hook (mailveil.relay.veto): a URL that sees each seller message's metadata
    # (never an address) and answers allow, hold or refuse before the relay accepts it. No
    # valid answer within veto_timeout_seconds (hang, error, garbage, redirect) holds it.
    veto_url: str = ""
    veto_timeout_seconds: float = 0.5
    # HMAC-SHA256 key signing veto and events requests; needed when either URL is set.
    platform_webhook_secret: str = ""
    # The events webhook (mailveil.platform.events): relayed, refused, bounced, complained,
    # held; signed, delivered in batches from a cursor, retried with backoff.
    events_url: str = ""
    events_timeout_seconds: float = 5.0
    # How often `mailveil serve` pushes new events (`mailveil events push` does it by hand).
    events_push_seconds: float = 5.0
    events_batch_size: int = 100
    # Tracking pixels and click-tracking redirects in mail to customers are removed
    # (mailveil.relay.trackers); extra tracker hosts, comma-separated, beside the shipped list.
    trackers_strip: bool = True
    trackers_extra_hosts: str = ""
    # -- DKIM signing of outgoing mail (mailveil.relay.dkim); d= is the relay domain -----------
    dkim_selector_ed25519: str = "mv-ed"
    dkim_selector_rsa: str = "mv-rsa"
    # -- bounces (mailveil.relay.bounces) ------------------------------------------------------
    # After this many hard bounces (5.x.x reports) an address is marked as bouncing.
    relay_hard_bounce_limit: int = 3
    # -- detection at the relay (mailveil.relay.strangers) -------------------------------------
    # Mail to an alias from anyone but its principal: "quarantine" (accept, hold under
    # data_dir/quarantine), "refuse" (550), or "banner" (deliver with a warning banner).
    relay_stranger_action: str = "quarantine"
    # Local part of the abuse mailbox on the relay domain (reports go to detect.reports).
    abuse_mailbox_local: str = "report-abuse"
    # How long a report waits for a busy database before the relay queues it in its spool
    # (data_dir/report-spool) and answers the reporter anyway.
    abuse_db_wait_seconds: float = 60.0
    # A report whose sender DNS cannot check is kept pending and re-checked
    # (`mailveil reports recheck`) for this long before it is judged unverified.
    report_pending_hours: float = 72.0
    # -- DNS for sender checks (SPF, DKIM keys, DMARC; mailveil.relay.sender_auth) -------------
    # Resolvers to ask, "ip" or "ip:port" ("[v6]:port"), comma-separated; empty: the system's
    # (/etc/resolv.conf). How long one question may take.
    dns_nameservers: str = ""
    dns_timeout_seconds: float = 3.0
    # -- employee access (mailveil.access) -----------------------------------------------------
    # Customers one employee may receive per clock hour / per 24 hours through contact
    # lookups, lists and exports. They are the Cedar context of the `list` action, so a policy
    # can give a role other limits.
    employee_rows_per_hour: int = 500
    employee_rows_per_day: int = 2000
    # The largest export, in rows, whatever a policy allows.
    employee_export_max_rows: int = 50_000
    # A list or export with more rows than this gets the employee's canaries mixed in.
    canary_min_rows: int = 10
    # Canaries minted per (employee, country) the first time a list needs them.
    canaries_per_country: int = 2
    # Canaries' "real" addresses live on this domain; route it to mailveil (detection).
    canary_domain: str = "canary.mailveil.example"
    # Break-glass reveals: approvals needed (never the requester or their reporting line),
    # how long a grant lives, how many views it allows, how long a request waits.
    reveal_approvals_required: int = 1
    reveal_grant_minutes: float = 15.0
    reveal_views: int = 1
    reveal_request_hours: float = 24.0
    # The customer-visible access log names the team; set this to name the person as well.
    access_log_names_person: bool = False
    # -- incident response (mailveil.incidents) ------------------------------------------------
    # The controller the regulator report and breach notices name, until the privacy officer
    # edits them (`mailveil incidents report controller set`, stored and ledgered). Empty
    # means not given: the report shows it as missing and stays a draft, nothing is made up.
    controller_name: str = ""
    controller_address: str = ""
    # ISO country of the main establishment in the EEA (GDPR Art. 56: the lead authority).
    controller_establishment: str = ""
    dpo_name: str = ""
    breach_contact: str = ""  # the contact point's e-mail: the DPO's or the privacy team's
    dpo_phone: str = ""
    # The representative in the EEA of a controller established outside it (GDPR Art. 27).
    representative_name: str = ""
    representative_address: str = ""
    representative_email: str = ""
    # The time zone the regulator report is written in (an IANA name).
    report_timezone: str = "UTC"
    # NIS2 (Directive (EU) 2022/2555): "essential" or "important" when the marketplace is
    # such an entity (online marketplaces are in Annex II), "none" otherwise; the member state
    # whose CSIRT or competent authority it reports to, and that body's name.
    nis2_entity: str = "none"
    nis2_member_state: str = ""
    nis2_authority: str = ""
    # -- the console (mailveil.console): the investigators' browser UI at /console -------------
    # Its public base URL (https://... makes its cookies Secure); empty: the request's own.
    console_public_url: str = ""
    # A console session ends after this long, or after this long without a request.
    console_session_hours: float = 8.0
    console_idle_minutes: float = 60.0
    # An OIDC provider people sign in with (empty issuer: API keys only). Its redirect URI
    # is <console>/oidc/callback.
    console_oidc_issuer: str = ""
    console_oidc_client_id: str = ""
    console_oidc_client_secret: str = ""
    console_oidc_label: str = "single sign-on"
    console_oidc_scopes: str = "openid profile"
    # The claim listing a person's console roles (admin, investigator, approver, employee)
    # and the claim holding the external id of their employee principal.
    console_oidc_roles_claim: str = "mailveil_roles"
    console_oidc_principal_claim: str = "sub"
    # Origins allowed to frame the customers' access-log page (space-separated), and how
    # long a link the marketplace mints for one customer lasts.
    console_embed_origins: str = ""
    console_embed_link_minutes: float = 60.0
    # -- notifications (mailveil.notify) -------------------------------------------------------
    # A Dramatiq broker (redis://... or amqp://...) for send workers; empty: in-process.
    notify_broker_url: str = ""
    # The relay the send worker writes to (empty / 0: relay_host / relay_port), and whether
    # it must use STARTTLS (verified against notify_relay_cafile, or the system's CAs).
    notify_relay_host: str = ""
    notify_relay_port: int = 0
    notify_relay_starttls: bool = False
    notify_relay_cafile: str = ""
    # Stages as fractions of the audience, the wait after each one, the smallest stage.
    notify_stages: str = "0.001,0.01,0.1,1"
    notify_soak_seconds: float = 300.0
    notify_min_stage_size: int = 100
    # Gates: a stage whose rate is above its threshold halts the send.
    notify_max_ineligible_rate: float = 0.01
    notify_max_bounce_rate: float = 0.05
    notify_max_complaint_rate: float = 0.002
    notify_max_unsubscribe_rate: float = 0.01
    # Blast radius: a second person approves audiences above k x the expected volume or
    # above the absolute cap.
    notify_blast_factor: float = 3.0
    notify_blast_cap: int = 1_000_000
    # At most this many notifications per customer per window (security and legal exempt).
    notify_frequency_cap: int = 3
    notify_frequency_window_hours: float = 24.0
    # A recipient left "delivering" by a dead worker is reconciled with the relay's records
    # after this long (longer than the relay takes to record a message it accepted).
    notify_reconcile_after_seconds: float = 120.0
    # Recipients per batch (eligibility, disclosure, commits).
    notify_batch_size: int = 2000
    # An extra spelling word list (one word a line) beside the shipped one.
    notify_words_file: str = ""
    # -- workers (`mailveil worker`) and sends at scale ----------------------------------------
    # A send's lease: a worker that dies holds its send this long before another takes it.
    notify_lease_seconds: float = 60.0
    # SMTP connections to the relay per delivering worker thread: each group of recipients
    # is split between them and sent at once (the relay's group commit then shares its
    # transactions between them, up to 4 messages each).
    notify_relay_connections: int = 4
    # With a broker, every free `mailveil worker` thread (any host) joins a stage under way,
    # claiming batches of its recipients for a lease of notify_lease_seconds; off: one
    # worker delivers a send at a time.
    notify_split_stages: bool = True
    # Dramatiq threads per `mailveil worker` process, and the broker queue (installations
    # sharing one broker each use their own).
    worker_threads: int = 4
    worker_queue: str = "mailveil_notify"
    # The worker's scheduler (0 / -1: off): drive sends whose worker died, scan the ledger
    # for signals, store spooled and re-check pending abuse reports, delete expired
    # Idempotency-Key answers (checkpoints follow checkpoint_every_seconds), and the daily
    # access-anomaly job at this UTC hour.
    worker_resume_every_seconds: float = 15.0
    worker_detect_every_seconds: float = 300.0
    worker_reports_every_seconds: float = 600.0
    worker_sweep_every_seconds: float = 3600.0
    worker_anomaly_hour: int = 3
    # -- witnesses (mailveil.witness): C2SP tlog-witness servers that cosign checkpoints -------
    # One a line (or separated by ';'): "<cosignature/v1 verifier key> <URL prefix>", the URL
    # that `/add-checkpoint` is appended to. Empty: checkpoints are not published.
    witnesses: str = ""
    # Cosignatures by distinct configured witnesses a checkpoint needs to count as witnessed.
    witness_quorum: int = 1
    # How long one witness may take to answer one submission.
    witness_timeout_seconds: float = 10.0
    # -- key custody (mailveil.custody): where keys live, backups, rotations -------------------
    # The keys directory; empty means data_dir/keys. Keep it off the disk (and the backup)
    # that holds the database: whoever holds both holds every address.
    keys_path: str = ""
    # How often a running process re-reads the key set, so a rotation done by another
    # process (blind-index, VERP, DKIM) is picked up without a restart.
    key_refresh_seconds: float = 30.0
    # How long bounces to VERP addresses signed with a retired VERP key are still accepted.
    verp_grace_days: float = 14.0
    # How long a new DKIM selector is published before the relay signs with it, and how long
    # the old one stays published after (caches, messages in flight).
    dkim_overlap_hours: float = 48.0
    # Where the address key-encryption keys and the ledger signing key live: "files" (the
    # keys directory) or "pkcs11" (an HSM token through its PKCS#11 module, keys labelled
    # "<pkcs11_key_prefix>-kek-<id>" and "<pkcs11_key_prefix>-ledger").
    key_store: str = "files"
    pkcs11_module: str = ""
    pkcs11_token_label: str = ""
    pkcs11_pin: str = ""
    pkcs11_key_prefix: str = "mailveil"
    # -- operations (mailveil.ops): metrics, alert webhooks ------------------------------------
    # `mailveil relay` run alone serves Prometheus /metrics on this address (port 0: not at
    # all); `mailveil serve` has them on the API's /metrics.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    # Alerts (incident opened, send halted, canary hit, witness disagreement) are POSTed as
    # JSON to this URL, signed with HMAC-SHA256 under the secret (X-Mailveil-Signature).
    # Empty URL: no webhook (alerts stay in the ledger and the logs).
    alert_webhook_url: str = ""
    alert_webhook_secret: str = ""
    # First retry after this long, doubling up to an hour; given up after this many tries.
    alert_retry_seconds: float = 30.0
    alert_max_attempts: int = 20
    alert_timeout_seconds: float = 10.0
    # How often `serve` looks for new alerts and due retries.
    alert_poll_seconds: float = 15.0

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'mailveil.db').as_posix()}"

    @property
    def keys_dir(self) -> Path:
        return Path(self.keys_path) if self.keys_path else self.data_dir / "keys"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def origin(self) -> str:
        return self.ledger_origin or f"{self.relay_domain}/ledger"

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)
