"""`mailveil api-keys create|list|revoke`."""

from __future__ import annotations

import pytest
from cli_testkit import TOKEN, Cli, add_employee, add_seller, table_rows, tokens
from sqlalchemy.orm import Session, sessionmaker

from mailveil.auth.keys import Role, Unauthenticated, authenticate


def created_token(cli: Cli, *args: str) -> str:
    run = cli.ok("api-keys", "create", *args)
    assert run.stdout.count("\n") == 1, str(run)
    (token,) = tokens(run.stdout)
    assert run.stdout == token + "\n"
    return token


@pytest.mark.parametrize("role", ["admin", "backend", "investigator"])
def test_operator_roles_need_no_principal(
    cli: Cli, db: sessionmaker[Session], admin_token: str, role: str
) -> None:
    token = created_token(cli, "--role", role, "--label", f"{role} key")
    assert token != admin_token
    with db() as session:
        caller = authenticate(session, token)
    assert caller.role is Role(role)
    assert caller.principal_id is None


@pytest.mark.parametrize(
    ("role", "kind"),
    [("seller", "a seller"), ("employee", "an employee"), ("approver", "an employee")],
)
def test_a_principal_role_without_a_principal_fails_clearly(
    cli: Cli, db: sessionmaker[Session], role: str, kind: str
) -> None:
    run = cli("api-keys", "create", "--role", role)
    assert run.code == 1, str(run)
    assert run.stderr.strip() == (
        f"error: {'an' if role[0] in 'aeiou' else 'a'} {role} key must be bound to {kind} "
        "principal (invalid-input)"
    )
    assert run.stdout == ""
    assert [r[1] for r in table_rows(cli.ok("api-keys", "list").stdout)] == ["admin"]


def test_a_seller_key_bound_to_its_seller_works(cli: Cli, db: sessionmaker[Session]) -> None:
    seller = add_seller(db, "s-1")
    token = created_token(cli, "--role", "seller", "--principal-id", str(seller))
    with db() as session:
        caller = authenticate(session, token)
    assert caller.role is Role.SELLER
    assert caller.principal_id == seller
    assert caller.actor == f"principal:{seller}"


def test_an_employee_key_bound_to_its_employee_works(cli: Cli, db: sessionmaker[Session]) -> None:
    employee = add_employee(db, "e-1")
    token = created_token(cli, "--role", "employee", "--principal-id", str(employee))
    with db() as session:
        caller = authenticate(session, token)
    assert (caller.role, caller.principal_id) == (Role.EMPLOYEE, employee)


@pytest.mark.parametrize(
    ("role", "principal", "message"),
    [
        ("seller", "employee", "error: a seller key must be bound to a seller, not an employee"),
        ("employee", "seller", "error: an employee key must be bound to an employee, not a seller"),
        ("seller", "missing", "error: no principal 999 (not-found)"),
    ],
)
def test_a_key_bound_to_the_wrong_principal_is_refused(
    cli: Cli, db: sessionmaker[Session], role: str, principal: str, message: str
) -> None:
    ids = {"seller": add_seller(db, "s-1"), "employee": add_employee(db, "e-1"), "missing": 999}
    run = cli("api-keys", "create", "--role", role, "--principal-id", str(ids[principal]))
    assert run.code == 1, str(run)
    assert run.stderr.strip().startswith(message)
    assert TOKEN.search(run.output) is None
    assert len(table_rows(cli.ok("api-keys", "list").stdout)) == 1


@pytest.mark.parametrize("args", [["--role", "root"], ["--role", "seller", "--principal-id", "x"]])
def test_malformed_options_are_usage_errors(
    cli: Cli, db: sessionmaker[Session], args: list[str]
) -> None:
    run = cli("api-keys", "create", *args)
    assert run.code == 2, str(run)
    assert "Invalid value" in run.flat
    assert len(table_rows(cli.ok("api-keys", "list").stdout)) == 1


def test_list_shows_every_key_but_no_secret(
    cli: Cli, db: sessionmaker[Session], admin_token: str
) -> None:
    seller = add_seller(db, "s-1")
    tokens = [
        admin_token,
        created_token(cli, "--role", "backend", "--label", "checkout service"),
        created_token(cli, "--role", "seller", "--principal-id", str(seller), "--label", "[/x]"),
    ]
    run = cli.ok("api-keys", "list")
    rows = table_rows(run.stdout)
    assert [(r[0], r[1], r[2], r[3], r[5]) for r in rows] == [
        (tokens[0].split("_")[1], "admin", "", "bootstrap admin", ""),
        (tokens[1].split("_")[1], "backend", "", "checkout service", ""),
        (tokens[2].split("_")[1], "seller", str(seller), "[/x]", ""),
    ]
    for token in tokens:
        assert token.split("_", 2)[2] not in run.output


def test_revoke_stops_the_key_and_only_that_key(
    cli: Cli, db: sessionmaker[Session], admin_token: str
) -> None:
    token = created_token(cli, "--role", "investigator")
    key_id = token.split("_")[1]
    run = cli.ok("api-keys", "revoke", key_id)
    assert run.stdout.strip() == f"✓ revoked {key_id}"
    with db() as session:
        with pytest.raises(Unauthenticated):
            authenticate(session, token)
        assert authenticate(session, admin_token).role is Role.ADMIN
    rows = {r[0]: r for r in table_rows(cli.ok("api-keys", "list").stdout)}
    assert rows[key_id][5] != ""  # revoked at
    assert rows[admin_token.split("_")[1]][5] == ""
    # Revoking again is harmless.
    cli.ok("api-keys", "revoke", key_id)


@pytest.mark.parametrize("key_id", ["nosuchkey123", "[/x]"])
def test_revoking_an_unknown_key_is_a_clear_error(
    cli: Cli, db: sessionmaker[Session], key_id: str
) -> None:
    run = cli("api-keys", "revoke", key_id)
    assert run.code == 1, str(run)
    assert run.stderr.strip() == f"error: no API key {key_id} (not-found)"


def test_ids_that_look_like_emoji_codes_are_echoed_exactly(
    cli: Cli, db: sessionmaker[Session]
) -> None:
    run = cli("api-keys", "revoke", "key:smile:1")
    assert run.code == 1, str(run)
    assert run.stderr == "error: no API key key:smile:1 (not-found)\n"
    created = cli.ok("api-keys", "create", "--role", "backend", "--label", ":warning: [b]x[/b]")
    (token,) = tokens(created.stdout)
    rows = table_rows(cli.ok("api-keys", "list").stdout)
    assert (rows[-1][0], rows[-1][3]) == (token.split("_")[1], ":warning: [b]x[/b]")
