"""The witness settings: each witness a verifier key and a URL, a quorum that exists."""

from __future__ import annotations

import pytest

from mailveil.config import SettingsError, load_settings
from mailveil.witness.policy import parse_witnesses

W1 = "witness.test/w1+24b37851+BNYV1Ztajd9BvyjP2HgpwrqYL6TjOwIjGMOq8Bu42xbN"
LOG = "monkeys+db4d9f7e+AULaJMvTtDLHPUcUrjdDad9vDlh/PTfC2VV60JUtCfWT"


def test_witnesses_parse_from_lines_or_semicolons() -> None:
    w1 = "witness+24b37851+BNYV1Ztajd9BvyjP2HgpwrqYL6TjOwIjGMOq8Bu42xbN"
    settings = load_settings(env={"MAILVEIL_WITNESSES": f" {w1} https://w.example/prefix/ ;"})
    [witness] = parse_witnesses(settings.witnesses)
    assert (witness.name, witness.url) == ("witness", "https://w.example/prefix")
    toml_style = f"\n{w1} http://127.0.0.1:8780\n\n"
    assert len(parse_witnesses(toml_style)) == 1


@pytest.mark.parametrize(
    ("witnesses", "quorum", "why"),
    [
        ("nonsense", 1, "write '<verifier key> <URL>'"),
        (f"{LOG} http://w.example", 1, "expected cosignature/v1"),  # a log key, not a witness's
        ("witness+24b37851+BNYV1Ztajd9BvyjP2HgpwrqYL6TjOwIjGMOq8Bu42xbN ftp://x", 1, "http"),
        (W1 + " http://w.example", 1, "key ID does not match"),  # renamed key
        (
            "witness+24b37851+BNYV1Ztajd9BvyjP2HgpwrqYL6TjOwIjGMOq8Bu42xbN http://a;"
            "witness+24b37851+BNYV1Ztajd9BvyjP2HgpwrqYL6TjOwIjGMOq8Bu42xbN http://b",
            1,
            "same name",
        ),
        ("witness+24b37851+BNYV1Ztajd9BvyjP2HgpwrqYL6TjOwIjGMOq8Bu42xbN http://a", 2, "only 1"),
        ("", 0, "witness_quorum must be >= 1"),
    ],
)
def test_bad_witness_settings_are_refused(witnesses: str, quorum: int, why: str) -> None:
    with pytest.raises(SettingsError, match=why.replace("(", r"\(").replace(")", r"\)")):
        load_settings(env={}, witnesses=witnesses, witness_quorum=quorum)
