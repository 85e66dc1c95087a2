"""Customers: creation, lookups, paging, updates, and the streaming bulk import."""

from __future__ import annotations

import io
import json

import pytest
from contacts_testkit import snapshot
from sqlalchemy.orm import Session

from mailveil.contacts.customers import (
    change_customer_address,
    create_customer,
    customer_address,
    customer_view,
    delete_customer,
    get_customer,
    get_customer_by_address,
    get_customer_by_external_id,
    import_customers,
    list_customers,
    update_customer,
)
from mailveil.contacts.importing import iter_records
from mailveil.errors import Conflict, Duplicate, InvalidAddress, InvalidInput, NotFound
from mailveil.vault import Vault
from world_kit import SECRET_DOMAIN, address, customer


def test_create_and_get(session: Session, vault: Vault) -> None:
    c = customer(
        session,
        vault,
        1,
        opt_outs=["marketing", "seller_unsolicited", "marketing"],
        sensitive_topics=["pregnancy"],
        is_canary=True,
    )
    assert c.opt_outs == ["marketing", "seller_unsolicited"]
    assert c.sensitive_topics == ["pregnancy"] and c.is_canary
    assert get_customer(session, c.id).external_id == "cust-1"
    assert get_customer_by_external_id(session, "cust-1").id == c.id
    assert get_customer_by_address(session, vault, address(1).upper()).id == c.id
    view = customer_view(c)
    assert SECRET_DOMAIN not in json.dumps(view)
    assert view["country"] == "FR" and view["is_canary"] is True


@pytest.mark.parametrize(
    ("fields", "error", "fragment"),
    [
        ({"country": "XX"}, InvalidInput, "country XX"),
        ({"country": "UK"}, InvalidInput, "ISO 3166-1"),
        ({"country": "France"}, InvalidInput, "ISO 3166-1"),
        ({"country": 33}, InvalidInput, "country"),
        ({"email": "not-an-address"}, InvalidAddress, "@-sign"),
        ({"email": "Secret.Person9@localhost"}, InvalidAddress, "period"),
        ({"external_id": ""}, InvalidInput, "external_id is missing"),
        ({"external_id": "x" * 300}, InvalidInput, "255"),
        ({"external_id": "who@where.example"}, InvalidInput, "'@'"),
        ({"opt_outs": ["Not A Slug"]}, InvalidInput, "opt_outs"),
        ({"opt_outs": "marketing"}, None, None),
        ({"sensitive_topics": 5}, InvalidInput, "sensitive_topics"),
        ({"is_canary": "maybe"}, InvalidInput, "is_canary"),
    ],
)
def test_bad_fields_are_specific_and_store_nothing(
    session: Session,
    vault: Vault,
    fields: dict[str, object],
    error: type[Exception] | None,
    fragment: str | None,
) -> None:
    customer(session, vault, 1)
    before = snapshot(session)
    args: dict[str, object] = {
        "external_id": "new-1",
        "email": address(2),
        "country": "DE",
        **fields,
    }
    if error is None:
        create_customer(session, vault, **args)  # type: ignore[arg-type]
        return
    with pytest.raises(error) as info:
        create_customer(session, vault, **args)  # type: ignore[arg-type]
    assert fragment is not None and fragment in str(info.value)
    assert SECRET_DOMAIN not in str(info.value) and "Secret.Person" not in str(info.value)
    assert snapshot(session) == before


def test_duplicates_are_specific_and_change_nothing(session: Session, vault: Vault) -> None:
    first = customer(session, vault, 1)
    before = snapshot(session)
    with pytest.raises(Duplicate, match="external id 'cust-1' already exists"):
        create_customer(session, vault, external_id="cust-1", email=address(2), country="DE")
    with pytest.raises(Duplicate, match=f"already registered \\(customer {first.id}\\)") as info:
        create_customer(session, vault, external_id="other", email=address(1).lower(), country="DE")
    assert "Secret" not in str(info.value)
    assert snapshot(session) == before
    assert customer_address(session, vault, first) == f"Secret.Person1@{SECRET_DOMAIN}"


def test_unknown_ids(session: Session, vault: Vault) -> None:
    with pytest.raises(NotFound, match="no customer 999"):
        get_customer(session, 999)
    with pytest.raises(NotFound, match="'nobody'"):
        get_customer_by_external_id(session, "nobody")
    with pytest.raises(NotFound) as info:
        get_customer_by_address(session, vault, "nobody@example.com")
    assert "nobody@" not in str(info.value)


def test_list_pages_by_id_cursor(session: Session, vault: Vault) -> None:
    made = [customer(session, vault, i) for i in range(7)]
    delete_customer(session, made[3].id)
    page1 = list_customers(session, limit=3)
    page2 = list_customers(session, after_id=page1[-1].id, limit=3)
    page3 = list_customers(session, after_id=page2[-1].id, limit=3)
    ids = [c.id for c in page1 + page2 + page3]
    assert ids == [c.id for c in made if c.id != made[3].id]
    assert len(list_customers(session, include_deleted=True, limit=100)) == 7
    with pytest.raises(InvalidInput):
        list_customers(session, limit=0)


def test_update_change_address_and_delete(session: Session, vault: Vault) -> None:
    c = customer(session, vault, 1)
    other = customer(session, vault, 2)
    update_customer(session, c.id, country="es", opt_outs=["marketing"], sensitive_topics=[])
    assert (c.country, c.opt_outs) == ("ES", ["marketing"])
    with pytest.raises(InvalidInput):
        update_customer(session, c.id, country="ZZ", opt_outs=["surveys"])
    assert c.opt_outs == ["marketing"]  # the bad call changed nothing
    # A well-formed subdivision of another country conflicts with the customer's own.
    with pytest.raises(Conflict):
        update_customer(session, c.id, subdivision="US-CA")
    update_customer(session, c.id, subdivision="ES-M")
    assert c.subdivision == "M"  # stored without its country prefix
    with pytest.raises(Duplicate):
        change_customer_address(session, vault, c.id, address(2))
    change_customer_address(session, vault, c.id, "New.Box@elsewhere.example")
    assert customer_address(session, vault, c) == "New.Box@elsewhere.example"
    assert get_customer_by_address(session, vault, "new.box@elsewhere.example").id == c.id
    assert customer_address(session, vault, other) == address(2).replace(
        SECRET_DOMAIN, SECRET_DOMAIN.lower()
    )
    delete_customer(session, c.id)
    assert c.deleted_at is not None


# -- bulk import ------------------------------------------------------------------------------


CSV_FILE = f"""external_id,email,country,opt_outs,is_canary
c-1,{address(1)},FR,marketing;seller_unsolicited,false
c-2,not-an-address,DE,,
c-3,{address(3)},XX,,
c-4,{address(4)},DE,,true
c-1,{address(5)},DE,,
c-6,{address(4).lower()},DE,,
c-7,{address(7)},DE
"c-8",{address(8)},"NL",,no
c-9,{address(9)},IT,,,extra
"""


@pytest.mark.parametrize("batch_size", [100, 4])
def test_csv_import_keeps_good_rows_and_reports_bad_ones(
    session: Session, vault: Vault, batch_size: int
) -> None:
    stored = customer(session, vault, 8, country="NL")  # so line 9 is a duplicate address
    records = iter_records(io.StringIO(CSV_FILE), "csv")
    outcomes = list(import_customers(session, vault, records, batch_size=batch_size))
    by_line = {o.line: o for o in outcomes}
    assert [o.line for o in outcomes] == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert by_line[2].status == "created" and by_line[5].status == "created"
    assert by_line[3].status == "error" and by_line[3].code == "invalid-address"
    assert by_line[4].status == "error" and "country XX" in (by_line[4].reason or "")
    assert by_line[6].status == "duplicate" and by_line[7].status == "duplicate"
    if batch_size == 100:  # the same batch: named by line
        assert "external id repeats line 2" in (by_line[6].reason or "")
        assert "address repeats line 5" in (by_line[7].reason or "")
    else:  # an earlier, committed batch: named by customer id
        assert "external id already exists" in (by_line[6].reason or "")
        assert "address is already registered" in (by_line[7].reason or "")
    assert by_line[8].status == "error" and "expected 5 columns, got 3" in (by_line[8].reason or "")
    assert by_line[9].status == "duplicate"
    assert f"customer {stored.id}" in (by_line[9].reason or "")
    assert by_line[10].status == "error" and "got 6" in (by_line[10].reason or "")
    for o in outcomes:
        assert SECRET_DOMAIN not in json.dumps(o.to_dict())
        assert "Secret.Person" not in json.dumps(o.to_dict())
    c1 = get_customer_by_external_id(session, "c-1")
    assert c1.opt_outs == ["marketing", "seller_unsolicited"] and not c1.is_canary
    assert get_customer_by_external_id(session, "c-4").is_canary
    assert customer_address(session, vault, c1) == f"Secret.Person1@{SECRET_DOMAIN}"


def test_ndjson_import_and_reimport_changes_nothing(session: Session, vault: Vault) -> None:
    lines = [
        json.dumps({"external_id": "n-1", "email": address(1), "country": "SE"}),
        "",
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"external_id": "n-2", "email": address(2), "country": "SE", "colour": "red"}),
        json.dumps(
            {
                "external_id": "n-3",
                "email": address(3),
                "country": "se",
                "sensitive_topics": ["pregnancy"],
            }
        ),
    ]
    text = "\n".join(lines) + "\n"
    first = list(import_customers(session, vault, iter_records(io.StringIO(text), "ndjson")))
    assert [(o.line, o.status) for o in first] == [
        (1, "created"),
        (3, "error"),
        (4, "error"),
        (5, "error"),
        (6, "created"),
    ]
    assert "malformed JSON" in (first[1].reason or "")
    assert "JSON object" in (first[2].reason or "")
    assert "unknown field 'colour'" in (first[3].reason or "")
    before = snapshot(session)
    again = list(import_customers(session, vault, iter_records(io.StringIO(text), "ndjson")))
    assert [o.status for o in again] == ["duplicate", "error", "error", "error", "duplicate"]
    assert snapshot(session) == before


def test_import_from_bytes_with_a_bad_utf8_line(session: Session, vault: Vault) -> None:
    data = (
        b"external_id,email,country\n"
        + f"b-1,{address(1)},FR\n".encode()
        + b"b-2,\xff\xfe@example.com,FR\n"
        + f"b-3,{address(3)},FR\n".encode()
    )
    outcomes = list(import_customers(session, vault, iter_records(io.BytesIO(data), "csv")))
    assert [(o.line, o.status) for o in outcomes] == [(2, "created"), (3, "error"), (4, "created")]
    assert outcomes[1].reason == "the line is not valid UTF-8"


def test_swapped_columns_and_address_keys_are_never_echoed(session: Session, vault: Vault) -> None:
    text = (
        json.dumps({"external_id": address(1), "email": "c-1", "country": "DE"})
        + "\n"
        + json.dumps(
            {"external_id": "c-2", "email": address(2), "country": "DE", address(3): "secondary"}
        )
        + "\n"
    )
    outcomes = list(import_customers(session, vault, iter_records(io.StringIO(text), "ndjson")))
    assert [o.status for o in outcomes] == ["error", "error"]
    assert outcomes[0].external_id is None
    assert outcomes[1].external_id == "c-2"
    assert "unknown field (value not repeated)" in (outcomes[1].reason or "")
    dumped = json.dumps([o.to_dict() for o in outcomes]).lower()
    assert SECRET_DOMAIN not in dumped and "secret.person" not in dumped
