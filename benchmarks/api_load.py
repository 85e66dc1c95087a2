"""The API under concurrent clients, beside a bare FastAPI endpoint on the same machine.

Issue 12 §7: with ~28 of 32 clients active the API stalled 30 s on an exhausted pool and
answered 500s. Each level runs N keep-alive clients for a few seconds against the real API
(served by uvicorn in a process of its own, with its own pool: ``api_db_*`` settings) on a
mix like the issue's: half customer reads, a third single disclosures, the rest signed
checkpoints. Then the same clients against a bare FastAPI endpoint (one sync route returning
JSON, also in its own uvicorn process): the ceiling this machine gives any FastAPI app.

Printed per level: requests/s, p99 latency, and the count of 500s, 503s (shed, with
Retry-After) and failed connections. Exits 1 on any 500 or failed connection.

    .venv/bin/python benchmarks/api_load.py                  # 1..128 clients, SQLite and PostgreSQL
    .venv/bin/python benchmarks/api_load.py --quick          # the suite's run: short, SQLite
    .venv/bin/python benchmarks/api_load.py --backend postgres
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from mailveil.demo.harness import free_port as _free_port  # relay_mixed imports it from here

PG_URL = os.environ.get("MAILVEIL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CUSTOMERS = 50


def _serve_mailveil(data_dir: str, url: str, schema: str, port: int, token_file: str) -> None:
    import uvicorn

    from mailveil.api.app import create_app
    from mailveil.api.database import api_engine, api_runtime
    from mailveil.auth.keys import Role, issue_key
    from mailveil.config import load_settings
    from mailveil.db.migrate import upgrade
    from mailveil.db.session import session_scope
    from mailveil.ledger.signing import init_signing_key
    from mailveil.runtime import Runtime
    from mailveil.vault import init_keys

    settings = load_settings(env={}, data_dir=Path(data_dir))
    init_keys(settings)
    init_signing_key(settings)
    extra: dict[str, Any] = {}
    if schema:
        extra["connect_args"] = {"options": f"-csearch_path={schema}"}
    engine = api_engine(settings, url, **extra)
    upgrade(engine)
    runtime = api_runtime(Runtime.open(settings, engine=engine), engine)
    with session_scope(runtime.session_factory) as session:
        token = issue_key(session, Role.ADMIN, label="load").token
    Path(token_file).write_text(token)
    uvicorn.run(
        create_app(runtime),
        host="127.0.0.1",
        port=port,
        log_level="error",
        access_log=False,
        backlog=2048,
    )


def _serve_bare(port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/bare")
    def bare() -> dict[str, bool]:
        return {"ok": True}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False, backlog=2048)


@dataclass
class Level:
    clients: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    @property
    def p99_ms(self) -> float:
        if len(self.latencies) < 2:
            return (self.latencies or [0.0])[0] * 1000
        return statistics.quantiles(self.latencies, n=100)[98] * 1000


async def _run_level(
    base: str, token: str, clients: int, seconds: float, plan: list[tuple[str, str, Any]]
) -> Level:
    level = Level(clients, seconds)
    stop = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def client(n: int) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(
            base_url=base, headers=headers, timeout=120, limits=limits
        ) as http:
            i = n
            while time.monotonic() < stop:
                method, url, body = plan[i % len(plan)]
                i += 1
                started = time.monotonic()
                try:
                    answer = await http.request(method, url, json=body)
                    status = str(answer.status_code)
                except httpx.HTTPError:
                    status = "connection-failed"
                level.latencies.append(time.monotonic() - started)
                level.statuses[status] += 1

    started = time.monotonic()
    await asyncio.gather(*(client(n) for n in range(clients)))
    # Requests in flight at the stop still count, so the rate is over the real elapsed time.
    level.seconds = time.monotonic() - started
    return level


def _wait_up(base: str, path: str, deadline: float) -> None:
    while True:
        try:
            if httpx.get(base + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"server at {base} did not start")
        time.sleep(0.2)


def _world(base: str, token: str) -> list[tuple[str, str, Any]]:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
        seller = http.post("/v1/principals", json={"kind": "seller", "external_id": "s-1"}).json()
        ids = []
        for n in range(CUSTOMERS):
            cust = http.post(
                "/v1/customers",
                json={"external_id": f"c-{n}", "email": f"load{n}@example.com", "country": "DE"},
            ).json()
            http.post(
                "/v1/relationships",
                json={
                    "type": "order",
                    "external_id": f"o-{n}",
                    "customer_id": cust["id"],
                    "seller_id": seller["id"],
                },
            )
            ids.append(cust["id"])
        # The ledger needs an entry before a checkpoint can be signed.
        http.post(
            "/v1/disclosures",
            json={"customer_id": ids[0], "principal_id": seller["id"], "purpose": "order"},
        )
    plan: list[tuple[str, str, Any]] = []
    for n in range(6):  # 3 reads, 2 disclosures, 1 checkpoint per 6 requests
        plan.append(("GET", "/v1/customers?limit=20", None))
        if n % 3 == 0:
            plan.append(("GET", "/v1/ledger/checkpoint", None))
        elif n % 3 == 1:
            body = {"customer_id": ids[n], "principal_id": seller["id"], "purpose": "order"}
            plan.append(("POST", "/v1/disclosures", body))
    return plan


def _one_backend(backend: str, levels: list[int], seconds: float) -> bool:
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="mailveil-api-load-") as tmp:
        schema = ""
        admin = None
        if backend == "sqlite":
            url = f"sqlite:///{Path(tmp) / 'load.db'}"
        else:
            from sqlalchemy import text

            from mailveil.db.session import make_engine

            url = PG_URL
            schema = f"mv_bench_api_{uuid.uuid4().hex[:8]}"
            admin = make_engine(url=PG_URL)
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        port, bare_port = _free_port(), _free_port()
        token_file = str(Path(tmp) / "token")
        api = ctx.Process(
            target=_serve_mailveil, args=(str(Path(tmp) / "var"), url, schema, port, token_file)
        )
        bare = ctx.Process(target=_serve_bare, args=(bare_port,))
        api.start()
        bare.start()
        ok = True
        try:
            base, bare_base = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{bare_port}"
            deadline = time.monotonic() + 180
            _wait_up(base, "/healthz", deadline)
            _wait_up(bare_base, "/bare", deadline)
            token = Path(token_file).read_text()
            plan = _world(base, token)
            print(
                f"\n{backend}: {seconds:g} s per level; mix = reads 1/2, disclosures 1/3, "
                "checkpoints 1/6"
            )
            print(
                f"{'clients':>7} | {'mailveil req/s':>14} {'p99 ms':>8} {'500s':>5} {'503s':>5} "
                f"{'conn-fail':>9} | {'bare req/s':>10} {'p99 ms':>8}"
            )
            for clients in levels:
                mine = asyncio.run(_run_level(base, token, clients, seconds, plan))
                peer = asyncio.run(
                    _run_level(bare_base, "", clients, seconds, [("GET", "/bare", None)])
                )
                print(
                    f"{clients:>7} | {mine.rate:>14.1f} {mine.p99_ms:>8.1f} "
                    f"{mine.statuses['500']:>5} {mine.statuses['503']:>5} "
                    f"{mine.statuses['connection-failed']:>9} | {peer.rate:>10.1f} "
                    f"{peer.p99_ms:>8.1f}",
                    flush=True,
                )
                unexpected = {
                    s: c for s, c in mine.statuses.items() if s not in ("200", "201", "503")
                }
                if unexpected:
                    print(f"        unexpected answers: {unexpected}")
                    ok = False
        finally:
            for proc in (api, bare):
                proc.terminate()
                proc.join(timeout=30)
            if admin is not None:
                from sqlalchemy import text

                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short levels, SQLite only")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default=None)
    parser.add_argument("--seconds", type=float, default=None, help="per level")
    args, _unknown = parser.parse_known_args()  # run_all passes other benchmarks' flags
    backend = args.backend or ("sqlite" if args.quick else "both")
    levels = [1, 8, 32, 128] if args.quick else [1, 4, 16, 32, 64, 128]
    seconds = args.seconds or (1.5 if args.quick else 8.0)
    backends = ["sqlite", "postgres"] if backend == "both" else [backend]
    ok = all([_one_backend(b, levels, seconds) for b in backends])
    print("no 500s, no failed connections" if ok else "FAILED: see unexpected answers above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
