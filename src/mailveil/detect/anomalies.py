"""Access anomalies: employee-days that look unlike the employee's own history and unlike
their peers that day, each alert with its reasons in words.

The job reads the ledger (``anomalies_extract``), computes per-employee, per-day features in
DuckDB (``anomalies_features``) and scores every employee-day three ways:

* own history: robust z (median and MAD over the previous active days) per feature;
* peers: robust z against the same team (else role, else everyone) that day, also for
  trailing 7-day sums, which is where a slow leak shows;
* an IsolationForest over the feature vectors taken relative to the peer medians, for
  combinations no single feature gives away;
* drift over a longer window (``drift_days``): the share of customers looked up without
  their case, binomial z against the employee's own share in the ``drift_base_days`` before
  (shrunk towards the peers', none without ``drift_min_base_n`` customers there) and against
  the peers' share (the employee left out); the smaller counts. A slow leak of a few
  customers a day is in no day's counts but moves this share for weeks.

Only excess counts (more lookups, more exports ...). A feature's evidence is the smaller of
its own and peer z when the employee has enough history (unusual for them AND for their
team), else the peer z, discounted. The score is the root of the summed squared evidence
(plus the forest's, weighted); the threshold is taken from the score distribution so that
at most ``budget_per_1000`` alerts are raised per 1,000 employee-days, and never below
``min_score``. Nothing is written to the database: callers turn alerts into signals.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Engine

from mailveil.config import Settings
from mailveil.detect.anomalies_extract import ExtractStats, LoadMethod, load_from_database
from mailveil.detect.anomalies_features import (
    DAILY_FEATURES,
    DRIFT_FEATURES,
    ROLLING_FEATURES,
    FeatureConfig,
    build_features,
)

Array = NDArray[np.float64]

LABELS = {
    "lookups": "lookups",
    "customers": "distinct customers",
    "no_case": "lookups without a case",
    "case_mismatch": "lookups citing another customer's case",
    "reveals": "reveals",
    "exports": "exports",
    "export_rows": "rows exported",
    "refusals": "refused requests",
    "customers_7d": "customers looked up over 7 days",
    "no_case_7d": "lookups without a case over 7 days",
    "reveals_7d": "reveals over 7 days",
    "uncited_share_wd": "customers looked up without their case",
}


@dataclass(frozen=True)
class AnomalyConfig(FeatureConfig):
    min_history_days: int = 7  # own baseline needs this many active days in the window
    no_history_weight: float = 0.7  # peer-only evidence counts for less
    z_cap: float = 30.0
    share_floor: float = 0.05  # smallest scale for a share's robust z
    share_prior_n: float = 10.0  # shares over few items are shrunk: n / (n + prior)
    forest_weight: float = 0.5
    forest_trees: int = 100
    forest_fit_rows: int = 50_000
    min_score: float = 6.0
    cooldown_days: int = 7
    reason_z: float = 3.0
    # Drift shares: without this many customers in the own baseline there is no drift to
    # speak of (a new employee's habits are not a change); the baseline is shrunk towards
    # the peers' share as if it had drift_prior_n more customers; counts are binomial.
    drift_min_base_n: float = 40.0
    drift_prior_n: float = 10.0
    seed: int = 0


@dataclass(frozen=True)
class AnomalyAlert:
    employee_id: int
    day: date
    score: float
    reasons: list[str]
    features: dict[str, Any]


@dataclass
class AnomalyReport:
    alerts: list[AnomalyAlert]
    employee_days: int  # scored (active) employee-days in [since, until]
    budget_per_1000: float
    threshold: float  # the score an alert needed
    since: date | None
    until: date | None
    extract: ExtractStats | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def alerts_per_1000(self) -> float:
        return 1000.0 * len(self.alerts) / self.employee_days if self.employee_days else 0.0


def _us(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1_000_000


def _window(config: AnomalyConfig, since: date | None, until: date | None) -> tuple[int, int]:
    """What to read: the scored days plus enough before them for the baselines."""
    # history_days counts active days: read enough calendar days to cover them.
    back = max(
        2 * config.history_days + config.rolling_days,
        config.drift_days + config.drift_base_days,
    )
    t0 = 0 if since is None else _us(since - timedelta(days=back))
    t1 = 2**62 if until is None else _us(until + timedelta(days=1))
    return t0, t1


def _robust_z(x: Array, base: Array, scale: Array, cap: float) -> Array:
    z = (x - np.nan_to_num(base, nan=0.0)) / scale
    return np.clip(np.nan_to_num(z, nan=0.0), 0.0, cap)


def _scale(kind: str, med: Array, mad: Array, q90: Array, config: AnomalyConfig) -> Array:
    """A robust standard deviation: from the MAD, or from the median-to-90th-percentile
    spread when most days are zero (sporadic work), never below a floor (a share's fixed
    floor; for counts a Poisson-like root of the median)."""
    med, mad, q90 = (np.nan_to_num(a, nan=0.0) for a in (med, mad, q90))
    floor = np.full_like(med, config.share_floor) if kind == "share" else np.sqrt(med + 1.0)
    return np.maximum(np.maximum(1.4826 * mad, (q90 - med) / 1.2816), floor)


@dataclass
class _Scored:
    cols: dict[str, Any]
    evidence: dict[str, Array]
    z_own: dict[str, Array]
    z_peer: dict[str, Array]
    forest_z: Array
    score: Array


def _col(cols: dict[str, Any], name: str) -> Array:
    return np.asarray(cols[name], dtype=np.float64)


def _evidence(cols: dict[str, Any], config: AnomalyConfig) -> _Scored:
    n = len(cols["employee_id"])
    has_hist = _col(cols, "hist_days") >= config.min_history_days
    peers_ok = np.asarray(cols["peers_ok"], dtype=bool)
    evidence: dict[str, Array] = {}
    z_own: dict[str, Array] = {}
    z_peer: dict[str, Array] = {}
    shrink = {
        "off_hours_share": _col(cols, "events"),
        "out_region_share": _col(cols, "customers"),
    }
    for f, kind in DAILY_FEATURES.items():
        x = _col(cols, f)
        om, od, oq = (_col(cols, f"{f}__own_{s}") for s in ("med", "mad", "q90"))
        pm, pd, pq = (_col(cols, f"{f}__peer_{s}") for s in ("med", "mad", "q90"))
        o_scale, p_scale = _scale(kind, om, od, oq, config), _scale(kind, pm, pd, pq, config)
        zo = _robust_z(x, om, o_scale, np.inf)
        zp = _robust_z(x, pm, p_scale, np.inf)
        # Excess over the usual high (90th percentile): sporadic work is not news.
        no = _robust_z(x, oq, o_scale, np.inf)
        npeer = _robust_z(x, pq, p_scale, np.inf)
        own_e, peer_e = np.minimum(zo, no), np.minimum(zp, npeer)
        e = np.where(
            has_hist & peers_ok,
            np.minimum(own_e, peer_e),
            # One side only, discounted: peers when history is short, else own history.
            config.no_history_weight * np.where(has_hist, own_e, peer_e),
        ).clip(0.0, config.z_cap)
        if f in shrink:
            k = shrink[f]
            e = e * k / (k + config.share_prior_n)
        z_own[f], z_peer[f], evidence[f] = np.where(has_hist, zo, np.nan), zp, e
    for f, daily in ROLLING_FEATURES.items():
        x = _col(cols, f)
        pm, pd, pq = (_col(cols, f"{f}__peer_{s}") for s in ("med", "mad", "q90"))
        p_scale = _scale("count", pm, pd, pq, config)
        zp = _robust_z(x, pm, p_scale, np.inf)
        npeer = _robust_z(x, pq, p_scale, np.inf)
        # Counted only on days that add to it, so one big day is not re-alerted all week.
        adds = z_peer[daily] >= 1.0
        z_own[f], z_peer[f] = np.full(n, np.nan), zp
        evidence[f] = np.where(adds, np.minimum(zp, npeer), 0.0).clip(0.0, config.z_cap)
    for f, (x_col, _) in DRIFT_FEATURES.items():
        zo, zp = _drift_z(cols, f, config)
        # Counted on days that add to it, like the trailing sums.
        adds = _col(cols, x_col) >= 1
        z_own[f], z_peer[f] = zo, zp
        drift = np.minimum(np.nan_to_num(zo, nan=0.0), zp)
        evidence[f] = np.where(adds, drift, 0.0).clip(0.0, config.z_cap)
    forest_z = _forest(cols, config) if n else np.zeros(0)
    rules = np.sqrt(sum((e**2 for e in evidence.values()), np.zeros(n)))
    score = np.sqrt(rules**2 + (config.forest_weight * forest_z) ** 2)
    return _Scored(cols, evidence, z_own, z_peer, forest_z, score)


def _binomial_z(x: Array, n: Array, p: Array) -> Array:
    """How far x successes of n are above the share p (a continuity-free normal
    approximation, +1 in the variance so a handful of customers is never news)."""
    return np.clip((x - n * p) / np.sqrt(n * p * (1.0 - p) + 1.0), 0.0, np.inf)


def _drift_shares(cols: dict[str, Any], f: str, config: AnomalyConfig) -> tuple[Array, Array]:
    """(own baseline share, peers' share) for a drift feature: peers without the employee,
    the own baseline shrunk towards the peers' by ``drift_prior_n`` customers."""
    x, n = _col(cols, f"{f}__x"), _col(cols, f"{f}__n")
    bx, bn = _col(cols, f"{f}__base_x"), _col(cols, f"{f}__base_n")
    px = np.nan_to_num(_col(cols, f"{f}__peer_x")) - x
    pn = np.nan_to_num(_col(cols, f"{f}__peer_n")) - n
    # A share of 0 or 1 has no variance: keep both inside [1 %, 99 %].
    peer = np.clip((px + 1.0) / (pn + 10.0), 0.01, 0.99)
    prior = config.drift_prior_n
    own = np.clip((bx + prior * peer) / (bn + prior), 0.01, 0.99)
    return own, peer


def _drift_z(cols: dict[str, Any], f: str, config: AnomalyConfig) -> tuple[Array, Array]:
    """(own z, peer z); own z is NaN where the baseline is too small to tell drift."""
    x, n = _col(cols, f"{f}__x"), _col(cols, f"{f}__n")
    own, peer = _drift_shares(cols, f, config)
    known = _col(cols, f"{f}__base_n") >= config.drift_min_base_n
    return np.where(known, _binomial_z(x, n, own), np.nan), _binomial_z(x, n, peer)


def _forest(cols: dict[str, Any], config: AnomalyConfig) -> Array:
    """IsolationForest on features relative to the peer medians, as a robust z of its score."""
    from sklearn.ensemble import IsolationForest

    parts = []
    for f, kind in [*DAILY_FEATURES.items(), *((f, "count") for f in ROLLING_FEATURES)]:
        x = np.asarray(cols[f], dtype=np.float64)
        pm = np.nan_to_num(np.asarray(cols[f"{f}__peer_med"], dtype=np.float64), nan=0.0)
        parts.append(x - pm if kind == "share" else np.log1p(x) - np.log1p(pm))
    matrix = np.column_stack(parts)
    n = len(matrix)
    if n < 50:
        return np.zeros(n)
    rng = np.random.default_rng(config.seed)
    fit = matrix[rng.choice(n, min(n, config.forest_fit_rows), replace=False)]
    forest = IsolationForest(n_estimators=config.forest_trees, random_state=config.seed)
    forest.fit(fit)
    s = -forest.score_samples(matrix)
    med = float(np.median(s))
    mad = float(np.median(np.abs(s - med))) or 1e-9
    z: Array = np.clip((s - med) / (1.4826 * mad), 0.0, config.z_cap)
    return z


def _pct(v: float) -> str:
    return f"{100 * v:.0f}%"


def _num(v: float) -> str:
    return f"{v:.0f}" if abs(v - round(v)) < 1e-9 else f"{v:.1f}"


def _drift_reason(
    s: _Scored, i: int, f: str, zo: float, zp: float, group: str, config: AnomalyConfig
) -> str:
    own, peer = (float(a[i]) for a in _drift_shares(s.cols, f, config))
    k, n = float(s.cols[f"{f}__x"][i]), float(s.cols[f"{f}__n"][i])
    return (
        f"{LABELS[f]} over {config.drift_days} days: {_num(k)} of {_num(n)} "
        f"({_pct(k / max(n, 1.0))}) vs own baseline {_pct(own)} (z={zo:.1f}); "
        f"peers {_pct(peer)} (z={zp:.1f}, {group})"
    )


def _reason(s: _Scored, i: int, f: str, config: AnomalyConfig) -> str:
    c = s.cols
    zo, zp = float(s.z_own[f][i]), float(s.z_peer[f][i])
    group = str(c["peer_group"][i])
    if f in DRIFT_FEATURES:
        return _drift_reason(s, i, f, zo, zp, group, config)
    x = float(c[f][i])
    om = c.get(f"{f}__own_med")
    own = None if om is None or np.isnan(zo) else float(om[i])
    pm = float(c[f"{f}__peer_med"][i])
    if f == "out_region_share":
        head = f"{_pct(x)} of customers outside region {c['region'][i]}"
        own_t = f"own median {_pct(own)}, " if own is not None else ""
        return f"{head} vs {own_t}peers {_pct(pm)} (z={max(zp, 0):.1f}, {group})"
    if f == "off_hours_share":
        window = f"{config.work_start_hour:02d}:00-{config.work_end_hour:02d}:00 UTC"
        head = f"{_pct(x)} of activity outside {window}"
        own_t = f"own median {_pct(own)} (z={zo:.1f}), " if own is not None else ""
        return f"{head} vs {own_t}peers {_pct(pm)} (z={zp:.1f})"
    head = f"{LABELS[f]} {_num(x)}"
    if own is not None:
        return f"{head} vs own median {_num(own)} (z={zo:.1f}); peers {_num(pm)} (z={zp:.1f})"
    return f"{head} vs peers median {_num(pm)} (z={zp:.1f}, {group})"


def _features_of(s: _Scored, i: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in [*DAILY_FEATURES, *ROLLING_FEATURES, "cases", "listed", "events", "off_hours_events"]:
        v = s.cols[f][i]
        out[f] = round(float(v), 4) if "share" in f else int(v)
    for f in [*DRIFT_FEATURES, "uncited"]:
        if f in DRIFT_FEATURES:
            n = float(s.cols[f"{f}__n"][i])
            out[f] = round(float(s.cols[f"{f}__x"][i]) / n, 4) if n else 0.0
        else:
            out[f] = int(s.cols[f][i])
    for f in ("team", "role", "region", "peer_group"):
        v = s.cols[f][i]
        out[f] = None if v is None else str(v)
    out["forest_z"] = round(float(s.forest_z[i]), 2)
    return out


def _alerts(
    s: _Scored, budget_per_1000: float, config: AnomalyConfig
) -> tuple[list[AnomalyAlert], float]:
    n = len(s.score)
    k = int(np.floor(budget_per_1000 * n / 1000.0 + 1e-9))
    if k <= 0 or n == 0:
        return [], float("inf")
    order = np.argsort(-s.score, kind="stable")
    days = np.asarray(s.cols["day_n"], dtype=np.int64)
    # One alert covers an employee's following days (cooldown): the budget goes to
    # different people, not to the aftermath of one big day.
    picked: list[int] = []
    last: dict[int, list[int]] = {}
    for i in order:
        if len(picked) >= k or s.score[i] < config.min_score:
            break
        emp = int(s.cols["employee_id"][i])
        if any(abs(int(days[i]) - d) < config.cooldown_days for d in last.get(emp, [])):
            continue
        picked.append(int(i))
        last.setdefault(emp, []).append(int(days[i]))
    threshold = float(s.score[picked[-1]]) if picked else float("inf")
    alerts = []
    for i in picked:
        ranked = sorted(s.evidence, key=lambda f: -float(s.evidence[f][i]))
        reasons = [_reason(s, i, f, config) for f in ranked if s.evidence[f][i] >= config.reason_z]
        if s.forest_z[i] >= config.reason_z:
            reasons.append(
                f"unusual combination of activity for the peer group (isolation z="
                f"{float(s.forest_z[i]):.1f})"
            )
        day = s.cols["day"][i]
        alerts.append(
            AnomalyAlert(
                employee_id=int(s.cols["employee_id"][i]),
                day=day if isinstance(day, date) else date.fromisoformat(str(day)[:10]),
                score=round(float(s.score[i]), 2),
                reasons=reasons,
                features=_features_of(s, i),
            )
        )
    return alerts, threshold


def features_frame(
    con: duckdb.DuckDBPyConnection,
    config: AnomalyConfig | None = None,
    *,
    since: date | None = None,
    until: date | None = None,
) -> dict[str, Any]:
    """Build the features from ``raw_events`` and the side tables in ``con``; return the
    scored days' rows as NumPy columns (baselines included, ``day`` as datetime64)."""
    config = config or AnomalyConfig()
    t0, t1 = _window(config, since, until)
    build_features(con, config, t0_us=t0, t1_us=t1)
    where, params = ["TRUE"], []
    if since is not None:
        where.append("day >= ?")
        params.append(since)
    if until is not None:
        where.append("day <= ?")
        params.append(until)
    sql = f"SELECT * FROM features WHERE {' AND '.join(where)} ORDER BY employee_id, day"  # noqa: S608  (fixed clauses)
    out: dict[str, Any] = con.execute(sql, params).fetchnumpy()
    out["day_n"] = out["day"].astype("datetime64[D]").astype(np.int64)
    out["day"] = [d.astype("datetime64[D]").item() for d in out["day"]]
    return out


def run_duckdb_phase(
    con: duckdb.DuckDBPyConnection,
    config: AnomalyConfig | None = None,
    *,
    since: date | None = None,
    until: date | None = None,
    budget_per_1000: float = 1.0,
) -> AnomalyReport:
    """Everything after extraction: features, scores, alerts (``raw_events`` and the side
    tables must be in ``con``)."""
    config = config or AnomalyConfig()
    timings: dict[str, float] = {}
    t = time.perf_counter()
    cols = features_frame(con, config, since=since, until=until)
    timings["features_s"] = time.perf_counter() - t
    t = time.perf_counter()
    scored = _evidence(cols, config)
    alerts, threshold = _alerts(scored, budget_per_1000, config)
    timings["scoring_s"] = time.perf_counter() - t
    return AnomalyReport(
        alerts=alerts,
        employee_days=len(scored.score),
        budget_per_1000=budget_per_1000,
        threshold=threshold,
        since=since,
        until=until,
        timings=timings,
    )


def run_anomaly_job(
    engine: Engine,
    settings: Settings,
    *,
    since: date | None = None,
    until: date | None = None,
    budget_per_1000: float = 1.0,
    config: AnomalyConfig | None = None,
    cache: Path | None = None,
    method: LoadMethod = "numpy",
) -> AnomalyReport:
    """Score employee-days in [since, until] (inclusive; None = all there is).

    ``cache`` names a DuckDB file kept between runs: the ledger is then read incrementally
    by seq. ``settings`` is the running configuration (the job itself needs none of it yet
    beyond what ``config`` holds).
    """
    del settings  # part of the job signature all detect jobs share
    config = config or AnomalyConfig()
    if budget_per_1000 < 0:
        raise ValueError("budget_per_1000 must be >= 0")
    t = time.perf_counter()
    con = duckdb.connect(str(cache) if cache is not None else ":memory:")
    try:
        # A cache keeps everything: its watermark moves past whatever is read.
        t0, t1 = (0, 2**62) if cache is not None else _window(config, since, until)
        stats = load_from_database(engine, con, t0_us=t0, t1_us=t1, method=method)
        extract_s = time.perf_counter() - t
        report = run_duckdb_phase(
            con, config, since=since, until=until, budget_per_1000=budget_per_1000
        )
    finally:
        con.close()
    report.extract = stats
    report.timings = {"extract_s": extract_s, **report.timings}
    return report


__all__ = [
    "AnomalyAlert",
    "AnomalyConfig",
    "AnomalyReport",
    "features_frame",
    "run_anomaly_job",
    "run_duckdb_phase",
]
