"""`mailveil witness init|key|add-log|remove-log|logs|refusals|serve`: a C2SP tlog-witness for
a mailveil ledger, with its own key and state in its own directory, meant to run on another
host, under someone other than the ledger's operator. It needs no mailveil settings."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mailveil.cli.common import cell, console, emit, fail, say
from mailveil.keyfiles import KeyFileError
from mailveil.ledger.notes import NoteError, log_key
from mailveil.witness.home import WitnessHome, WitnessSetupError
from mailveil.witness.state import origin_hash

app = typer.Typer(
    help="A witness that cosigns a ledger's checkpoints only while it grows append-only.",
    no_args_is_help=True,
)

DirOption = Annotated[
    Path,
    typer.Option(
        "--dir",
        envvar="MAILVEIL_WITNESS_DIR",
        help="the witness's own data directory (never the ledger's)",
    ),
]


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except (WitnessSetupError, KeyFileError, NoteError, OSError) as exc:
        fail(str(exc))


@app.command()
def init(
    dir: DirOption,
    name: Annotated[str, typer.Option(help="the witness's key name, e.g. witness.example.org/w1")],
) -> None:
    """Create the witness's key and state (idempotent); print its verifier key."""
    with _errors():
        identity = WitnessHome(dir).init(name)
    say(f"[green]✓[/] witness {escape(identity.name)} in {escape(str(dir))}", err=True)
    say("its verifier key (give it to the ledger's operator and to verifiers):", err=True)
    emit(identity.vkey.vkey)


@app.command()
def key(dir: DirOption) -> None:
    """Print the witness's cosignature/v1 verifier key."""
    with _errors():
        emit(WitnessHome(dir).load().vkey.vkey)


@app.command("add-log")
def add_log(
    dir: DirOption,
    vkey: Annotated[
        str,
        typer.Argument(help="the ledger's verifier key (`mailveil ledger key`), or its base64 key"),
    ],
    origin: Annotated[
        str | None, typer.Option(help="the ledger's origin (default: the key's name)")
    ] = None,
) -> None:
    """Follow a ledger: cosign its checkpoints signed by this key. Add a ledger's new key
    the same way when it rotates; checkpoints signed by either then count."""
    with _errors():
        home = WitnessHome(dir)
        home.load()
        key = log_key(vkey, origin)
        added = home.state().add_log(origin or key.name, key.vkey)
    where = escape(origin or key.name)
    say(f"[green]✓[/] following {where}" if added else f"already following {where} with it")


@app.command("remove-log")
def remove_log(
    dir: DirOption,
    vkey: Annotated[str, typer.Argument(help="the key to stop trusting")],
    origin: Annotated[str | None, typer.Option(help="the ledger's origin")] = None,
) -> None:
    """Stop trusting one key of a ledger (its cosigned state is kept)."""
    with _errors():
        key = log_key(vkey, origin)
        removed = WitnessHome(dir).state().remove_log_key(origin or key.name, key.vkey)
    if not removed:
        fail("that key is not trusted for that origin")
    say(f"[green]✓[/] no longer trusting that key for {escape(origin or key.name)}")


@app.command()
def logs(dir: DirOption) -> None:
    """The ledgers this witness follows and the latest size it cosigned for each."""
    with _errors():
        followed = WitnessHome(dir).state().logs()
    table = Table("origin", "cosigned size", "updated", "trusted keys", "monitoring path")
    for item in followed:
        latest = item.latest
        table.add_row(
            cell(item.origin),
            cell(latest.size if latest else "-"),
            cell(latest.updated_at[:19] if latest else "-"),
            cell("\n".join(item.vkeys)),
            cell(f"/{origin_hash(item.origin)}/checkpoint"),
        )
    console.print(table)


@app.command()
def refusals(
    dir: DirOption,
    origin: Annotated[str | None, typer.Option(help="only this ledger")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    notes: Annotated[bool, typer.Option("--notes", help="print each refused checkpoint")] = False,
) -> None:
    """Validly signed checkpoints this witness refused: proof that a ledger forked."""
    with _errors():
        rows = WitnessHome(dir).state().refusals(origin, limit)
    if notes:
        for r in rows:
            emit(f"# refused {r.received_at}: {r.reason}\n{r.note}")
        return
    table = Table("received", "origin", "size", "witnessed size", "why")
    for r in rows:
        table.add_row(
            cell(r.received_at[:19]),
            cell(r.origin),
            cell(r.size),
            cell(r.witnessed_size),
            cell(r.reason),
        )
    console.print(table)


@app.command()
def serve(
    dir: DirOption,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0: any free one)", min=0, max=65535)] = 8780,
) -> None:
    """Serve add-checkpoint (C2SP tlog-witness) and the monitoring routes over HTTP. Put TLS
    in front (a reverse proxy) when it faces the internet."""
    import uvicorn

    from mailveil.witness.server import create_witness_app
    from mailveil.witness.service import Witness

    with _errors():
        home = WitnessHome(dir)
        witness = Witness(home.load(), home.state())
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
        sock.listen(128)
    bound = sock.getsockname()[1]
    say(
        f"mailveil witness {witness.identity.name} on http://{host}:{bound} (POST /add-checkpoint)",
        markup=False,
    )
    config = uvicorn.Config(create_witness_app(witness), log_level="info", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def standalone() -> None:
    """`mailveil witness ...` on its own (the fast path of ``mailveil.cli.main``)."""
    typer.main.get_command(app)(args=sys.argv[2:], prog_name="mailveil witness")
