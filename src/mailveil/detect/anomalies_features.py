"""Per-employee, per-day access features and their robust baselines, computed in DuckDB.

Input tables (see ``anomalies_extract``): ``raw_events`` (the ledger's columns), ``employees``
(employee_id, team, role, region), ``customers`` (customer_id, country), ``cases``
(external_id, customer_id) and ``regions`` (country, region). Output: ``features``, one row
per employee and active day, with each scored feature's value, its own-history median and
MAD over the previous active days (weekends and leave are not "zero days") and
the same-day median and MAD of its peer group (team and role, else role in the region, else
role, else everyone), and both 90th percentiles: sporadic work (an analyst's weekly export)
has a median of zero, so "more than usual" is measured from the 90th percentile too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import duckdb

# Feature name -> kind of value ("count" or "share"); the scored ones, in report order.
DAILY_FEATURES: dict[str, str] = {
    "lookups": "count",
    "customers": "count",
    "no_case": "count",
    "case_mismatch": "count",
    "reveals": "count",
    "exports": "count",
    "export_rows": "count",
    "off_hours_share": "share",
    "out_region_share": "share",
    "refusals": "count",
}
# Trailing sums scored against peers only: a slow leak that no single day gives away.
# reveals_7d: a steady few reveals a day is ordinary on any one day, never over a week.
ROLLING_FEATURES: dict[str, str] = {
    "customers_7d": "customers",
    "no_case_7d": "no_case",
    "reveals_7d": "reveals",
}
# Drift over a longer window from the employee's own baseline: share of the customers looked
# up without their case (no case cited, or another customer's) over the last ``drift_days``
# against the same share over the ``drift_base_days`` before them and against the peers'.
# A slow leak adds a few uncited customers a day: never news on one day, clear over two weeks.
# Name -> (count column, of-column) summed over the window; scored in ``anomalies``.
DRIFT_FEATURES: dict[str, tuple[str, str]] = {
    "uncited_share_wd": ("uncited", "customers"),
}
# Not scored, shown in reasons and alerts.
CONTEXT_COLUMNS = (
    "uncited",
    "cases",
    "listed",
    "events",
    "off_hours_events",
    "region",
    "team",
    "role",
    "peer_group",
)

_REGION_COUNTRIES = {
    "EU": "AT BE BG CH CY CZ DE DK EE ES FI FR GB GR HR HU IE IS IT LI LT LU LV MT NL NO PL PT "
    "RO SE SI SK",
    "NA": "US CA",
    "LATAM": "MX BR AR CL CO PE UY EC BO PY VE CR PA GT DO",
    "APAC": "JP CN KR IN SG AU NZ HK TW TH MY ID PH VN",
}
DEFAULT_REGIONS: dict[str, str] = {
    country: region for region, names in _REGION_COUNTRIES.items() for country in names.split()
}


@dataclass(frozen=True)
class FeatureConfig:
    work_start_hour: int = 7  # UTC, inclusive
    work_end_hour: int = 20  # UTC, exclusive; outside [start, end) is off hours
    history_days: int = 20  # own baseline: the employee's previous 20 active days
    rolling_days: int = 7
    drift_days: int = 14  # the drift window (calendar days, today included)
    drift_base_days: int = 42  # the own baseline: calendar days just before the window
    list_gap_seconds: int = 60  # a list page's rows precede its summary by at most this
    min_peers: int = 10  # with >= 10, one member alone cannot set the 90th percentile
    regions: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_REGIONS))


def _regions_table(con: duckdb.DuckDBPyConnection, regions: Mapping[str, str]) -> None:
    con.execute("CREATE OR REPLACE TEMP TABLE regions (country VARCHAR, region VARCHAR)")
    if regions:
        con.executemany(
            "INSERT INTO regions VALUES (?, ?)", [[c.upper(), r] for c, r in regions.items()]
        )


ACCESS_SQL = """
CREATE OR REPLACE TEMP TABLE access AS
WITH ev AS (
    SELECT seq, time_us, kind, actor, subject, ref,
           -- one parse of the detail for all four fields
           json_extract_string(detail, ['$.principal', '$.canary', '$.export', '$.rows']) AS d
    FROM raw_events
    WHERE time_us >= $t0 AND time_us < $t1
),
w AS (
    SELECT *, CASE WHEN kind = 'disclosure' THEN d[1] ELSE actor END AS who FROM ev
    WHERE (CASE WHEN kind = 'disclosure' THEN d[1] ELSE actor END) LIKE 'principal:%'
),
listed AS (
    -- A list page discloses its rows (no case ref, canaries included) just before its
    -- employee_list summary: the last `rows` ref-less disclosures by the same principal
    -- before a non-export list, within a minute, are that page, not lookups (policy tied
    -- each to the employee's open case). Export rows stay lookups: exports are what leaks.
    SELECT seq FROM (
        SELECT x.seq, o.nrows,
               row_number() OVER (PARTITION BY o.seq ORDER BY x.seq DESC) AS back
        FROM (SELECT seq, who, time_us FROM w WHERE kind = 'disclosure' AND ref IS NULL) x
        ASOF JOIN (SELECT seq, who, time_us, kind, d[3] AS export,
                          coalesce(TRY_CAST(d[4] AS BIGINT), 0) AS nrows
                   FROM w WHERE kind <> 'disclosure') o
            ON x.who = o.who AND o.seq > x.seq
        WHERE o.kind = 'employee_list' AND coalesce(o.export, 'false') <> 'true'
          AND o.time_us - x.time_us <= $list_gap_us
    ) WHERE back <= nrows
)
SELECT
    TRY_CAST(substr(who, 11) AS INTEGER) AS employee_id,
    CAST(make_timestamp(time_us) AS DATE) AS day,
    CAST((time_us // 3600000000) % 24 AS INTEGER) AS hour,
    kind,
    CASE WHEN subject LIKE 'customer:%' THEN TRY_CAST(substr(subject, 10) AS BIGINT) END
        AS customer_id,
    ref,
    coalesce(d[2] = 'true', false) AS canary,
    coalesce(d[3] = 'true', false) AS export,
    coalesce(TRY_CAST(d[4] AS BIGINT), 0) AS nrows,
    (l.seq IS NOT NULL) AS listed
FROM w LEFT JOIN listed l USING (seq)
"""

DAILY_SQL = """
CREATE OR REPLACE TEMP TABLE daily AS
WITH a AS (
    SELECT a.employee_id, a.day, a.kind, a.customer_id, a.export, a.nrows, a.listed,
           (a.hour < $h0 OR a.hour >= $h1) AS off_hours,
           (k.customer_id IS NOT NULL) AS case_ok,
           (k.customer_id IS NULL AND km.external_id IS NOT NULL) AS case_other,
           CASE WHEN k.customer_id IS NOT NULL THEN a.ref END AS case_ref,
           r.region AS cust_region
    FROM access a
    LEFT JOIN customers c ON c.customer_id = a.customer_id
    LEFT JOIN regions r ON r.country = upper(c.country)
    LEFT JOIN cases k ON k.external_id = a.ref AND k.customer_id = a.customer_id
    LEFT JOIN (SELECT DISTINCT external_id FROM cases) km ON km.external_id = a.ref
    WHERE a.kind <> 'disclosure' OR NOT a.canary
),
per_customer AS (
    SELECT employee_id, day, customer_id, any_value(cust_region) AS cust_region,
           count(*) AS lookups,
           count(*) FILTER (WHERE NOT case_ok) AS no_case,
           count(*) FILTER (WHERE case_other) AS case_mismatch,
           count(*) FILTER (WHERE off_hours) AS off_hours_events,
           count(*) FILTER (WHERE case_ok) AS cited
    FROM a WHERE kind = 'disclosure' AND NOT listed
    GROUP BY employee_id, day, customer_id
),
lk AS (
    SELECT employee_id, day, e.region,
           sum(lookups) AS lookups, count(*) AS customers, sum(no_case) AS no_case,
           sum(case_mismatch) AS case_mismatch, sum(off_hours_events) AS off_hours_events,
           -- customers of the day none of whose lookups cited their own case
           count(*) FILTER (WHERE cited = 0) AS uncited,
           count(*) FILTER (WHERE cust_region IS NOT NULL AND e.region IS NOT NULL
                              AND cust_region <> e.region) AS out_region_customers,
           count(*) FILTER (WHERE cust_region IS NOT NULL) AS known_region_customers
    FROM per_customer JOIN employees e USING (employee_id)
    GROUP BY employee_id, day, e.region
),
cases_cited AS (
    SELECT employee_id, day, count(DISTINCT case_ref) AS cases
    FROM a WHERE kind = 'disclosure' AND case_ok AND NOT listed GROUP BY employee_id, day
),
listed_rows AS (
    SELECT employee_id, day, count(*) AS listed
    FROM a WHERE kind = 'disclosure' AND listed GROUP BY employee_id, day
),
other AS (
    SELECT employee_id, day,
           -- Requests: one per reveal (its view is the same reveal).
           count(*) FILTER (WHERE kind = 'reveal_requested') AS reveals,
           count(*) FILTER (WHERE kind = 'employee_list' AND export) AS exports,
           coalesce(sum(nrows) FILTER (WHERE kind = 'employee_list' AND export), 0)
               AS export_rows,
           count(*) FILTER (WHERE kind = 'access_refused') AS refusals,
           count(*) FILTER (WHERE kind NOT IN ('access_refused')) AS events,
           count(*) FILTER (WHERE kind NOT IN ('access_refused') AND off_hours)
               AS off_hours_other
    FROM a WHERE kind <> 'disclosure' GROUP BY employee_id, day
)
SELECT employee_id, day, e.team, e.role, e.region,
       coalesce(l.lookups, 0) AS lookups, coalesce(l.customers, 0) AS customers,
       coalesce(l.no_case, 0) AS no_case, coalesce(l.case_mismatch, 0) AS case_mismatch,
       coalesce(l.uncited, 0) AS uncited,
       coalesce(cc.cases, 0) AS cases,
       coalesce(o.reveals, 0) AS reveals, coalesce(o.exports, 0) AS exports,
       coalesce(o.export_rows, 0) AS export_rows, coalesce(o.refusals, 0) AS refusals,
       coalesce(l.lookups, 0) + coalesce(o.events, 0) AS events,
       coalesce(l.off_hours_events, 0) + coalesce(o.off_hours_other, 0) AS off_hours_events,
       coalesce(l.out_region_customers, 0) AS out_region_customers,
       coalesce(l.known_region_customers, 0) AS known_region_customers,
       coalesce(lr.listed, 0) AS listed
FROM lk l
FULL JOIN other o USING (employee_id, day)
LEFT JOIN cases_cited cc USING (employee_id, day)
LEFT JOIN listed_rows lr USING (employee_id, day)
JOIN employees e USING (employee_id)
"""

FEATURES_SQL = """
CREATE OR REPLACE TEMP TABLE features AS
WITH d AS (
    SELECT *,
        off_hours_events / greatest(events, 1) AS off_hours_share,
        CASE WHEN region IS NULL THEN 0
             ELSE out_region_customers / greatest(known_region_customers, 1) END
            AS out_region_share,
        sum(customers) OVER w7 AS customers_7d,
        sum(no_case) OVER w7 AS no_case_7d,
        sum(reveals) OVER w7 AS reveals_7d,
        {drift_sums}
    FROM daily
    WINDOW w7 AS (PARTITION BY employee_id ORDER BY day
                  RANGE BETWEEN INTERVAL {roll_back} DAYS PRECEDING AND CURRENT ROW),
           wd AS (PARTITION BY employee_id ORDER BY day
                  RANGE BETWEEN INTERVAL {drift_back} DAYS PRECEDING AND CURRENT ROW),
           wb AS (PARTITION BY employee_id ORDER BY day
                  RANGE BETWEEN INTERVAL {base_back} DAYS PRECEDING
                            AND INTERVAL {drift_days} DAYS PRECEDING)
),
g AS (
    SELECT *,
        count(*) OVER (PARTITION BY day, team, role) AS n_team_role,
        count(*) OVER (PARTITION BY day, role, region) AS n_role_region,
        count(*) OVER (PARTITION BY day, role) AS n_role,
        count(*) OVER (PARTITION BY day) AS n_day
    FROM d
),
p AS (
    -- The closest group with enough members active that day: same team and role, else
    -- same role in the region (shifts and customers are regional), else the role.
    SELECT *,
        CASE WHEN n_team_role >= {min_peers} THEN 'team ' || team || ' / ' || role
             WHEN n_role_region >= {min_peers} THEN 'role ' || role || ' / ' || region
             WHEN n_role >= {min_peers} THEN 'role ' || role
             ELSE 'everyone' END AS peer_group,
        -- Fewer than min_peers at work (a weekend): the day's own outlier sets the peers'
        -- 90th percentile, so the peer comparison says nothing.
        (n_role >= {min_peers} OR n_day >= {min_peers}) AS peers_ok
    FROM g
),
o AS (
    -- Framed holistic windows are the job's main cost: one list quantile per feature
    -- (quartiles and the 90th percentile in one pass; the MAD is taken as half the IQR).
    SELECT p.*, count(*) OVER h AS hist_days,
        {own_lists}
    FROM p
    -- The previous {hist} active days (a ROWS frame: three times faster than a RANGE one).
    WINDOW h AS (PARTITION BY employee_id ORDER BY day
                 ROWS BETWEEN {hist} PRECEDING AND 1 PRECEDING)
),
pg AS (
    SELECT day, peer_group,
        {peer},
        {peer_sums}
    FROM p GROUP BY day, peer_group
)
SELECT o.* EXCLUDE ({own_list_names}),
    {own}
    pg.* EXCLUDE (day, peer_group)
FROM o JOIN pg USING (day, peer_group)
"""


def _own_peer_columns() -> dict[str, str]:
    lists, names, own = [], [], []
    for f in DAILY_FEATURES:
        lists.append(f"quantile_disc({f}, [0.25, 0.5, 0.75, 0.9]) OVER h AS {f}__own_q")
        names.append(f"{f}__own_q")
        own.append(
            f"{f}__own_q[2] AS {f}__own_med, ({f}__own_q[3] - {f}__own_q[1]) / 2 AS "
            f"{f}__own_mad, {f}__own_q[4] AS {f}__own_q90,"
        )
    peer = []
    for f in [*DAILY_FEATURES, *ROLLING_FEATURES]:
        peer.append(
            f"median({f}) AS {f}__peer_med, mad({f}) AS {f}__peer_mad, "
            f"quantile_disc({f}, 0.9) AS {f}__peer_q90"
        )
    sums, peer_sums = [], []
    for f, (x, of) in DRIFT_FEATURES.items():
        # Window, baseline and the peer group's window totals (the job takes the employee's
        # own out of the peers' before comparing).
        sums.append(
            f"coalesce(sum({x}) OVER wd, 0) AS {f}__x, coalesce(sum({of}) OVER wd, 0) AS {f}__n, "
            f"coalesce(sum({x}) OVER wb, 0) AS {f}__base_x, "
            f"coalesce(sum({of}) OVER wb, 0) AS {f}__base_n"
        )
        peer_sums.append(f"sum({f}__x) AS {f}__peer_x, sum({f}__n) AS {f}__peer_n")
    return {
        "drift_sums": ",\n        ".join(sums),
        "peer_sums": ",\n        ".join(peer_sums),
        "own_lists": ",\n        ".join(lists),
        "own_list_names": ", ".join(names),
        "own": "\n    ".join(own),
        "peer": ",\n        ".join(peer),
    }


def build_features(
    con: duckdb.DuckDBPyConnection, config: FeatureConfig, *, t0_us: int, t1_us: int
) -> int:
    """Create ``access``, ``daily`` and ``features`` from ``raw_events`` in [t0, t1) and the
    side tables; return the number of employee-days."""
    _regions_table(con, config.regions)
    con.execute(
        ACCESS_SQL,
        {"t0": t0_us, "t1": t1_us, "list_gap_us": int(config.list_gap_seconds) * 1_000_000},
    )
    con.execute(DAILY_SQL, {"h0": config.work_start_hour, "h1": config.work_end_hour})
    # Frame bounds must be constants; these are ints from the config.
    sql = FEATURES_SQL.format(
        **_own_peer_columns(),
        roll_back=int(config.rolling_days) - 1,
        drift_back=int(config.drift_days) - 1,
        drift_days=int(config.drift_days),
        base_back=int(config.drift_days) + int(config.drift_base_days) - 1,
        hist=int(config.history_days),
        min_peers=int(config.min_peers),
    )
    con.execute(sql)
    row = con.execute("SELECT count(*) FROM features").fetchone()
    return int(row[0]) if row else 0


__all__ = [
    "CONTEXT_COLUMNS",
    "DAILY_FEATURES",
    "DEFAULT_REGIONS",
    "DRIFT_FEATURES",
    "ROLLING_FEATURES",
    "FeatureConfig",
    "build_features",
]
