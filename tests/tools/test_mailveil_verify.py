"""The stand-alone verifier (tools/mailveil_verify.py), as a third party runs it: in its own
Python process that can import one Ed25519 library (`cryptography`, or PyNaCl) and its
runtime dependencies, nothing of mailveil. It checks an evidence bundle the product exported
(`mailveil incidents export`, cosigned by a witness) with the ledger key in both published
forms and a witness quorum, and refuses tampered ones. `mailveil incidents verify` and
`ledger verify-checkpoint` are held to the same answers."""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packaging.requirements import Requirement
from sqlalchemy.orm import Session, sessionmaker

pytestmark = pytest.mark.slow  # the verifier in its own Python processes

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS / "cli"), str(TESTS / "witness")]
from cli_testkit import (  # noqa: E402
    Cli,
    add_order,
    add_seller,
    customer_id,
    disclose_to,
    forwarded_report,
    open_db,
    record_stranger,
)
from witness_testkit import witness_thread  # noqa: E402

from mailveil.detect.evidence import verify_bundle  # noqa: E402
from mailveil.witness.home import WitnessHome  # noqa: E402

VERIFIER = TESTS.parent / "tools" / "mailveil_verify.py"


def isolated_path(tmp: Path, distribution: str) -> Path:
    """A folder holding only ``distribution`` and what it needs at run time (links)."""
    folder = tmp / f"only-{distribution}"
    folder.mkdir()
    todo, done = [distribution], set()
    while todo:
        dist = importlib.metadata.distribution(todo.pop())
        if dist.metadata["Name"].lower() in done:
            continue
        done.add(dist.metadata["Name"].lower())
        for top in {Path(str(f)).parts[0] for f in dist.files or ()}:
            if top != ".." and not top.endswith((".dist-info", "__pycache__")):
                source = Path(str(dist.locate_file(top)))
                if source.exists() and not (folder / top).exists():
                    (folder / top).symlink_to(source)
        for text in dist.requires or ():
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return folder


def run_alone(library: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The verifier in a Python with no site-packages: only ``library`` on its path."""
    return subprocess.run(
        [sys.executable, "-S", str(VERIFIER), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PYTHONPATH": str(library), "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Cli, Path, dict[str, str]]]:
    """A product-exported evidence bundle of a real incident, cosigned by a witness."""
    tmp_path = tmp_path_factory.mktemp("exported")
    with witness_thread(tmp_path / "witness", "witness.test/court") as url:
        wkey = WitnessHome(tmp_path / "witness").load().vkey.vkey
        cli = Cli(tmp_path / "var", env={"MAILVEIL_WITNESSES": f"{wkey} {url}"})
        cli.ok("init")
        vkey = cli.ok("ledger", "key").stdout.strip()
        cli.ok("witness", "add-log", "--dir", str(tmp_path / "witness"), vkey)
        key_doc = json.loads(cli.ok("ledger", "key", "--json").stdout)
        csv = tmp_path / "c.csv"
        csv.write_text("external_id,email,country\nc-1,olga.buyer@example.com,DE\n")
        cli.ok("customers", "import", str(csv))
        settings = cli.settings().with_overrides(witnesses=f"{wkey} {url}")
        with open_db(settings) as db:
            _incident(db, settings, tmp_path, cli)
        bundle = tmp_path / "bundle.json"
        exported = cli.ok("incidents", "export", "1", "--out", str(bundle))
        assert "cosigned witness witness.test/court" in exported.stderr
        yield cli, bundle, {**key_doc, "witness": wkey}


def _incident(db: sessionmaker[Session], settings: Any, tmp_path: Path, cli: Cli) -> None:
    seller = add_seller(db, "s-1", "Acme Books")
    add_order(db, "o-1", "c-1", seller)
    alias = disclose_to(db, settings, "c-1", seller, "order").alias
    assert alias is not None
    # The relay's record of a stranger's mail to the alias, then the customer's report of it.
    record_stranger(db, settings, alias, customer_id(db, "c-1"), seller)
    cli.ok("detect", "run")
    (tmp_path / "r.eml").write_bytes(forwarded_report(alias))
    cli.ok("reports", "submit", str(tmp_path / "r.eml"), "--customer", "c-1")


def test_the_stand_alone_verifier_checks_an_exported_bundle_and_refuses_tampering(
    exported: tuple[Cli, Path, dict[str, str]], tmp_path: Path
) -> None:
    cli, bundle_path, keys = exported
    bundle = json.loads(bundle_path.read_text())
    assert "witness.test/court" in bundle["checkpoint"]["cosigned_note"]
    library = isolated_path(tmp_path, "cryptography")
    # Nothing of mailveil (nor its other dependencies) can be imported there.
    probe = subprocess.run(
        [sys.executable, "-S", "-c", "import mailveil"],
        env={"PYTHONPATH": str(library)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert "No module named 'mailveil'" in probe.stderr
    quorum = ["--witness", keys["witness"], "--quorum", "1"]
    for key in (keys["verifier_key"], keys["public_key"]):
        run = run_alone(library, "bundle", str(bundle_path), "--key", key, *quorum, cwd=tmp_path)
        assert run.returncode == 0 and run.stdout.rstrip().endswith("VERIFIED"), run.stdout
        assert "PASS  cosigned by witness witness.test/court" in run.stdout
        assert cli.ok("incidents", "verify", str(bundle_path), "--key", key, *quorum)
    nacl = isolated_path(tmp_path, "pynacl")
    run = run_alone(
        nacl, "bundle", str(bundle_path), "--key", keys["verifier_key"], *quorum, cwd=tmp_path
    )
    assert run.returncode == 0, run.stdout + run.stderr

    for name, tamper in TAMPERING.items():
        forged = copy.deepcopy(bundle)
        tamper(forged)
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(forged))
        alone = run_alone(
            library, "bundle", str(path), "--key", keys["public_key"], *quorum, cwd=tmp_path
        )
        assert alone.returncode == 1 and "DOES NOT VERIFY" in alone.stdout, (name, alone.stdout)
        ours = cli("incidents", "verify", str(path), "--key", keys["public_key"], *quorum)
        assert ours.code == 1 and "does not verify" in ours.stderr, (name, str(ours))
    other = "monkeys+db4d9f7e+AULaJMvTtDLHPUcUrjdDad9vDlh/PTfC2VV60JUtCfWT"
    wrong = run_alone(library, "bundle", str(bundle_path), "--key", other, cwd=tmp_path)
    assert wrong.returncode == 1
    assert (
        run_alone(
            library, "bundle", str(tmp_path / "none.json"), "--key", other, cwd=tmp_path
        ).returncode
        == 2
    )


def _cut_cosignature(b: dict[str, Any]) -> None:
    b["checkpoint"]["cosigned_note"] = b["checkpoint"]["note"]


def _edit_leaf(b: dict[str, Any]) -> None:
    b["entries"][0]["leaf"] = b["entries"][0]["leaf"].replace('"kind":"', '"kind":"x', 1)


def _other_source(b: dict[str, Any]) -> None:
    b["claims"][0]["source"] = "principal:999"


def _drop_entry(b: dict[str, Any]) -> None:
    b["entries"].pop(0)


def _move_root(b: dict[str, Any]) -> None:
    note = b["checkpoint"]["cosigned_note"]
    size = str(b["checkpoint"]["tree_size"])
    b["checkpoint"]["cosigned_note"] = note.replace(f"\n{size}\n", f"\n{int(size) + 1}\n", 1)


def _forge_cosignature(b: dict[str, Any]) -> None:
    note = b["checkpoint"]["cosigned_note"]
    head, line = note.rstrip("\n").rsplit("\n", 1)
    name, blob = line.rsplit(" ", 1)
    flipped = blob[:20] + ("A" if blob[20] != "A" else "B") + blob[21:]
    b["checkpoint"]["cosigned_note"] = f"{head}\n{name} {flipped}\n"


TAMPERING = {
    "no-cosignature": _cut_cosignature,
    "edited-entry": _edit_leaf,
    "other-source": _other_source,
    "missing-entry": _drop_entry,
    "other-size": _move_root,
    "forged-cosignature": _forge_cosignature,
}


def test_checkpoints_are_checked_alone_too(
    exported: tuple[Cli, Path, dict[str, str]], tmp_path: Path
) -> None:
    cli, bundle_path, keys = exported
    note = tmp_path / "checkpoint.txt"
    note.write_text(json.loads(bundle_path.read_text())["checkpoint"]["cosigned_note"])
    library = isolated_path(tmp_path, "cryptography")
    for key in (keys["verifier_key"], keys["public_key"]):
        args = ["--key", key, "--witness", keys["witness"]]
        assert run_alone(library, "checkpoint", str(note), *args, cwd=tmp_path).returncode == 0
        assert (
            "verifies; cosigned by witness.test/court"
            in cli.ok("ledger", "verify-checkpoint", str(note), *args).stdout
        )
    # A witness nobody named does not count towards a quorum of the named ones.
    stranger = WitnessHome(tmp_path / "stranger").init("witness.test/stranger").vkey.vkey
    args = ["--key", keys["verifier_key"], "--witness", keys["witness"], "--witness", stranger]
    alone = run_alone(library, "checkpoint", str(note), *args, cwd=tmp_path)
    assert alone.returncode == 1 and "1 of 2 required" in alone.stdout
    ours = cli("ledger", "verify-checkpoint", str(note), *args)
    assert ours.code == 1 and "1 required" not in ours.stderr and "2 required" in ours.stderr
    assert cli.ok("ledger", "verify-checkpoint", str(note), *args, "--quorum", "1")


def _tool() -> Any:
    spec = importlib.util.spec_from_file_location("mailveil_verify", VERIFIER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DIFFERENTIAL: dict[str, int] = {}


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_both_verifiers_agree_on_generated_tampering(
    exported: tuple[Cli, Path, dict[str, str]], data: st.DataObject
) -> None:
    """Differential: the stand-alone verifier (run in this process) and mailveil's own give
    the same verdict on generated single edits of a real bundle; an edit of anything that is
    hashed or signed (an entry, a proof, the checkpoint's text) fails both."""
    _cli, bundle_path, keys = exported
    bundle = json.loads(bundle_path.read_text())
    target = data.draw(st.sampled_from(["leaf", "proof", "text", "signature", "claim"]))
    entry = data.draw(st.integers(0, len(bundle["entries"]) - 1))
    must_fail = True
    if target == "leaf":
        leaf = bundle["entries"][entry]["leaf"]
        at = data.draw(st.integers(0, len(leaf) - 1))
        new = data.draw(st.characters(codec="ascii").filter(lambda c: c != leaf[at]))
        bundle["entries"][entry]["leaf"] = leaf[:at] + new + leaf[at + 1 :]
    elif target == "proof":
        proof = bundle["entries"][entry]["proof"]
        if not proof:
            proof.append("00" * 32)
        else:
            at = data.draw(st.integers(0, len(proof) - 1))
            proof[at] = data.draw(st.sampled_from(["00" * 32, proof[at][::-1], proof[at][:-2]]))
    elif target in ("text", "signature"):
        note = bundle["checkpoint"]["cosigned_note"]
        split = note.rfind("\n\n")
        lo, hi = (0, split) if target == "text" else (split + 2, len(note) - 1)
        at = data.draw(st.integers(lo, hi - 1))
        new = data.draw(st.sampled_from(list("0Az+/= \u2014")).filter(lambda c: c != note[at]))
        bundle["checkpoint"]["cosigned_note"] = note[:at] + new + note[at + 1 :]
        must_fail = target == "text"  # base64 padding bits may not change the signature
    else:
        claim = bundle["claims"][0]
        field = data.draw(st.sampled_from(["alias", "source", "evidence_entry"]))
        claim[field] = {"alias": "x@relay.example", "source": "principal:9", "evidence_entry": 99}[
            field
        ]
    ours = verify_bundle(bundle, verifier_key=keys["public_key"], witnesses=[keys["witness"]])
    report = TOOL.Report()
    try:
        TOOL.check_bundle(report, bundle, keys["verifier_key"], [keys["witness"]], None)
    except (KeyError, TypeError, AttributeError, ValueError):
        report.check(False, "structure")
    DIFFERENTIAL[f"{target}:{'ok' if ours.ok else 'refused'}"] = (
        DIFFERENTIAL.get(f"{target}:{'ok' if ours.ok else 'refused'}", 0) + 1
    )
    assert report.ok == ours.ok, (target, report.rows, ours.checks)
    if must_fail:
        assert not ours.ok


def test_zz_differential_counts() -> None:
    """The verdicts of the generated edits, by what was edited (printed with -s)."""
    print(f"generated bundle edits (target:verdict): {dict(sorted(DIFFERENTIAL.items()))}")


TOOL = _tool()
