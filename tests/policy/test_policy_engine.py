"""Loading, overriding and validating Cedar policies; reasons; memoisation; explain."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from mailveil.config import Settings
from mailveil.policy import PolicyEngine, PolicyError, PolicyInput
from mailveil.policy.engine import policy_sources, shipped_schema
from mailveil.policy.facts import context_attrs, customer_attrs, principal_attrs

SHIPPED_IDS = {
    "principal-suspended",
    "customer-deleted",
    "seller-recent-order",
    "seller-purpose",
    "employee-assigned-case",
    "employee-purpose",
    "service-owned-template",
    "service-purpose",
    "employee-list-within-limits",
    "employee-reveal-own-open-case",
    "message-reason-allowed",
    "message-critical-reason",
    "message-reply-in-thread",
    "message-reason-missing",
    "message-reason-unknown",
    "message-customer-opted-out",
}


def seller_input(
    age: int | None = 5,
    status: str = "active",
    purpose: str = "order",
    window: int = 90,
    country: str = "FR",
    topics: tuple[str, ...] = (),
) -> PolicyInput:
    return PolicyInput(
        "Seller",
        principal_attrs("seller", status, {}),
        customer_attrs(country, (), topics, False),
        context_attrs("seller", purpose, "o-1", window, order_age=age),
    )


def service_input(template: str | None, owned: list[str]) -> PolicyInput:
    return PolicyInput(
        "Service",
        principal_attrs("service", "active", {"templates": owned}),
        customer_attrs("DE", (), ("pregnancy",), False),
        context_attrs("service", "notification", template, 90),
    )


def test_shipped_policies_load_with_ids_and_reasons(settings: Settings) -> None:
    engine = PolicyEngine.load(settings)
    assert set(engine.policies) == SHIPPED_IDS
    assert all(p.reason for p in engine.policies.values())
    assert {s.name for s in engine.sources} == {
        "employees.cedar",
        "guards.cedar",
        "messages.cedar",
        "sellers.cedar",
        "services.cedar",
    }
    assert "namespace Mailveil" in shipped_schema()


def test_decisions_and_reasons(settings: Settings) -> None:
    engine = PolicyEngine.load(settings)
    ok = engine.decide(seller_input())
    assert ok.allowed and ok.policy_ids == ("seller-recent-order",)
    assert ok.reason == "the customer ordered from this seller within the contact window"
    old = engine.decide(seller_input(age=91))
    assert (old.allowed, old.policy_ids) == (False, ())
    assert old.reason == "no order with this seller in the last 90 days"
    assert engine.decide(seller_input(age=None)).reason == old.reason
    assert engine.decide(seller_input(status="suspended")).policy_ids == ("principal-suspended",)
    denied = engine.decide(service_input("gift-registry", ["order-shipped"]))
    assert denied.reason == "template gift-registry is not owned by this service"


def test_operator_files_replace_and_add(settings: Settings, policy_dir: Path) -> None:
    (policy_dir / "sellers.cedar").write_text(
        '@id("seller-30-days")\n'
        '@reason("the customer ordered from this seller in the last 30 days")\n'
        '@deny_reason("no order with this seller in the last 30 days ({kind}, {purpose})")\n'
        "permit (principal is Mailveil::Seller, action, resource)\n"
        "when { context has order_age_days && context.order_age_days <= 30 };\n"
    )
    (policy_dir / "sensitive.cedar").write_text(
        '@id("no-pregnancy-notifications")\n'
        '@reason("customers with a sensitive pregnancy topic get no notification aliases")\n'
        "forbid (principal is Mailveil::Service, action, resource)\n"
        'when { resource.sensitive_topics.contains("pregnancy") };\n'
    )
    (policy_dir / "README.txt").write_text("not a policy")
    engine = PolicyEngine.load(settings.with_overrides(policy_dir=str(policy_dir)))
    assert "seller-recent-order" not in engine.policies and "seller-purpose" not in engine.policies
    assert engine.policies["seller-30-days"].file == "sellers.cedar"
    assert engine.decide(seller_input(age=20)).allowed
    late = engine.decide(seller_input(age=45))
    assert late.reason == "no order with this seller in the last 30 days (seller, order)"
    forbidden = engine.decide(service_input("order-shipped", ["order-shipped"]))
    assert forbidden.policy_ids == ("no-pregnancy-notifications",)
    labels = {
        s.name: s.label for s in policy_sources(settings.with_overrides(policy_dir=str(policy_dir)))
    }
    assert labels["sellers.cedar"] == str(policy_dir / "sellers.cedar")
    assert labels["guards.cedar"].startswith("shipped")


def test_an_empty_file_switches_a_shipped_one_off(settings: Settings, policy_dir: Path) -> None:
    (policy_dir / "employees.cedar").write_text("// no employee access in this deployment\n")
    engine = PolicyEngine.load(settings.with_overrides(policy_dir=str(policy_dir)))
    inp = PolicyInput(
        "Employee",
        principal_attrs("employee", "active", {"team": "t", "role": "r", "region": "eu"}),
        customer_attrs("FR", (), (), False),
        context_attrs("employee", "support", None, 90, open_case=True),
    )
    decision = engine.decide(inp)
    assert not decision.allowed
    assert decision.reason == "no policy permits this employee to reach this customer for 'support'"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("permit (principal, action, resource) when { nonsense };", "Cedar cannot parse it"),
        ("permit (principal, action, resource", "Cedar cannot parse it"),
        (
            '@id("x") @reason("y")\npermit (principal is Mailveil::Seller, action, resource)\n'
            "when { context.order_agedays < 3 };",
            "does not match the mailveil schema: x:",
        ),
        (
            '@id("x") @reason("y")\npermit (principal is Mailveil::Robot, action, resource);',
            "does not match the mailveil schema",
        ),
        ("permit (principal, action, resource);", 'has no @id("...")'),
        ('@id("x")\npermit (principal, action, resource);', "'x' has no @reason"),
        (
            '@id("principal-suspended") @reason("dup")\nforbid (principal, action, resource);',
            "already used in guards.cedar",
        ),
        ('@id("t") @reason("r")\npermit (principal == ?principal, action, resource);', "templates"),
    ],
)
def test_broken_operator_files_name_the_file(
    settings: Settings, policy_dir: Path, text: str, fragment: str
) -> None:
    (policy_dir / "zz-operator.cedar").write_text(text)
    with pytest.raises(PolicyError) as info:
        PolicyEngine.load(settings.with_overrides(policy_dir=str(policy_dir)))
    message = str(info.value)
    assert str(policy_dir / "zz-operator.cedar") in message, message
    assert fragment in message, message


def test_policy_dir_must_exist(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="is not a folder"):
        PolicyEngine.load(settings.with_overrides(policy_dir=str(tmp_path / "missing")))


def test_memo_returns_exactly_what_cedar_returns(settings: Settings) -> None:
    engine = PolicyEngine.load(settings, memo_size=50)
    rng = random.Random(3)
    inputs = [
        seller_input(
            age=rng.choice([None, 0, 30, 90, 91]),
            status=rng.choice(["active", "suspended"]),
            purpose=rng.choice(["order", "support"]),
            window=rng.choice([30, 90]),
            country=rng.choice(["FR", "DE"]),
        )
        for _ in range(400)
    ]
    decided = engine.decide_many(inputs)
    assert engine.misses < 100 and engine.hits + engine.misses == 400
    for inp, decision in zip(inputs, decided, strict=True):
        assert engine.explain(inp).decision == decision  # explain never uses the memo
    assert len(engine._memo) <= 50  # bounded


def test_explain_lists_every_matching_policy(settings: Settings) -> None:
    engine = PolicyEngine.load(settings)
    report = engine.explain(seller_input(status="suspended")).to_dict()
    assert report["allowed"] is False and report["decided_by"] == ["principal-suspended"]
    assert [p["id"] for p in report["permitting"]] == ["seller-recent-order"]
    assert [p["id"] for p in report["forbidding"]] == ["principal-suspended"]
    assert report["request"]["request"]["context"]["order_age_days"] == 5
    quiet = engine.explain(seller_input(age=None, purpose="support")).to_dict()
    assert quiet["permitting"] == [] and [p["id"] for p in quiet["forbidding"]] == [
        "seller-purpose"
    ]
