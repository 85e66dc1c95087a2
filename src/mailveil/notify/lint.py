"""Lint, before anything is sent: what a notification must never go out with.

Errors block a template version from being sent; warnings need a named person's
acknowledgement. Each finding is ``{"level", "code", "message"}``; messages quote the
template's own words, never a customer's data (there is none at this point).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from mailveil.relay.content_rules import external_links

# Names a template may use: the recipient, the facts the rule binds, the send.
CONTEXT_NAMES = frozenset({"customer", "facts", "send", "unsubscribe_url"})
TEST_MARKERS = (
    "test email",
    "test e-mail",
    "test message",
    "lorem ipsum",
    "integration test",
    "dolor sit amet",
    "do not send",
    "placeholder",
    "todo",
    "fixme",
    "asdf",
)
# "TEST" alone in a subject: in capitals anywhere, bracketed, or the whole subject or its
# lead ("Test: ..."). A lower-case "test" in prose ("your test results") is a word.
_SUBJECT_TEST = re.compile(
    r"\bTEST(?:ING)?\b"
    r"|(?i:[\[(]\s*test(?:ing)?\s*[\])])"
    r"|(?i:^\s*test(?:ing)?\s*(?:[:\-\u2013|]|$))"
)
# Placeholder styles of other template languages that Jinja leaves as literal text.
_FOREIGN_PLACEHOLDERS = re.compile(
    r"(?<!\{)\{\s*[A-Za-z_][A-Za-z0-9_.]*\s*\}(?!\})"  # {name}
    r"|\[\[?\s*[A-Z_][A-Z0-9_]{2,}\s*\]\]?"  # [FIRST_NAME] [[NAME]]
    r"|%[A-Z_][A-Z0-9_]{2,}%"  # %NAME%
    r"|\$\{[^}]*\}"  # ${name}
    r"|<<\s*[A-Za-z_]+\s*>>"  # <<name>>
    r"|%\([a-z_]+\)s|(?<![%\w])%s\b"  # %(name)s, %s
)
# Letters of any script (German umlauts, French accents): a word is a run of them.
_WORD = re.compile(r"[^\W\d_](?:[^\W\d_]|')*[^\W\d_]|[^\W\d_]")
_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
_URLISH = re.compile(r"\S+://\S+|www\.\S+|\S+@\S+")
UNSUBSCRIBE = re.compile(r"unsubscribe", re.I)


@dataclass(frozen=True)
class Finding:
    level: str  # "error" | "warning"
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"level": self.level, "code": self.code, "message": self.message}


def environment() -> SandboxedEnvironment:
    return SandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
    )


@functools.cache
def _shipped_words() -> frozenset[str]:
    text = resources.files("mailveil.notify").joinpath("words.txt").read_text("utf-8")
    return _word_lines(text)


def _word_lines(text: str) -> frozenset[str]:
    return frozenset(
        w.strip().lower() for w in text.splitlines() if w.strip() and not w.startswith("#")
    )


@functools.cache
def _operator_words(path: str) -> frozenset[str]:
    return _word_lines(Path(path).read_text("utf-8")) if path else frozenset()


# The dictionaries pyspellchecker ships: a template is written (and linted) in one of them.
LANGUAGES = ("ar", "de", "en", "es", "eu", "fa", "fr", "it", "lv", "nl", "pt", "ru")


@functools.cache
def _checker(language: str = "en") -> Any:
    from spellchecker import SpellChecker

    return SpellChecker(language=language, distance=1)


def misspelled(
    text: str, extra: Iterable[str] = (), language: str = "en"
) -> list[tuple[str, str | None]]:
    """(word, suggestion) for each word the language's dictionary and the word lists do
    not know."""
    plain = _URLISH.sub(" ", _JINJA.sub(" ", text))
    known = _shipped_words() | {w.lower() for w in extra}
    words: dict[str, str] = {}
    for match in _WORD.finditer(plain):
        word = match.group(0)
        # Acronyms and brand-like mixed case (eBay, SKU) are names, not prose.
        if (word.isupper() and len(word) > 1) or any(c.isupper() for c in word[1:]):
            continue
        lower = word.lower().strip("'")
        if lower.endswith("'s"):
            lower = lower[:-2]
        if lower and lower not in known:
            words.setdefault(lower, word)
    checker = _checker(language)
    unknown = checker.unknown(list(words))
    return [(words[w], checker.correction(w)) for w in sorted(unknown)]


def _attribute_names(ast: nodes.Template) -> set[str]:
    return {n.attr for n in ast.find_all(nodes.Getattr)} | {
        str(n.arg.value) for n in ast.find_all(nodes.Getitem) if isinstance(n.arg, nodes.Const)
    }


def parse_errors(env: SandboxedEnvironment, name: str, source: str) -> list[Finding]:
    """Syntax errors, sandbox escapes and names outside the context."""
    try:
        ast = env.parse(source)
    except TemplateSyntaxError as exc:
        return [Finding("error", "template-syntax", f"{name}: line {exc.lineno}: {exc.message}")]
    out: list[Finding] = []
    unsafe = sorted(a for a in _attribute_names(ast) if a.startswith("_"))
    if unsafe:
        out.append(
            Finding(
                "error",
                "sandbox-escape",
                f"{name} reaches internal attributes ({', '.join(unsafe)}); the sandbox refuses",
            )
        )
    unknown = sorted(meta.find_undeclared_variables(ast) - CONTEXT_NAMES)
    if unknown:
        out.append(
            Finding(
                "error",
                "unresolved-placeholder",
                f"{name} uses {', '.join(unknown)}, which no recipient has "
                f"(available: {', '.join(sorted(CONTEXT_NAMES))})",
            )
        )
    return out


def _fact_refs(env: SandboxedEnvironment, source: str) -> set[str]:
    """The ``facts.<name>`` a template mentions."""
    try:
        ast = env.parse(source)
    except TemplateSyntaxError:
        return set()
    out = set()
    for node in ast.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name) and node.node.name == "facts":
            out.add(node.attr)
    return out


def test_in_subject(subject: str) -> bool:
    return bool(_SUBJECT_TEST.search(_JINJA.sub(" ", subject)))


def lint(
    *,
    subject: str,
    body: str,
    category: str,
    sensitivity: list[str],
    fact_names: Iterable[str],
    suppression_list: str | None,
    reviewer: str | None,
    words: Iterable[str] = (),
    words_file: str = "",
    needs_evidence: bool = True,
    language: str = "en",
) -> list[Finding]:
    env = environment()
    out: list[Finding] = []
    for name, source in (("subject", subject), ("body", body)):
        out.extend(parse_errors(env, name, source))
        for found in sorted({m.group(0) for m in _FOREIGN_PLACEHOLDERS.finditer(source)}):
            out.append(
                Finding(
                    "error",
                    "unresolved-placeholder",
                    f"{name} contains {found!r}, which is not a template variable "
                    "(write {{ ... }})",
                )
            )
    bound = set(fact_names)
    for ref in sorted((_fact_refs(env, subject) | _fact_refs(env, body)) - bound):
        out.append(
            Finding(
                "error",
                "unbound-fact",
                f"the template mentions facts.{ref}, which the eligibility rule does not "
                f"require (rule names: {', '.join(sorted(bound)) or 'none'})",
            )
        )
    text = f"{subject}\n{body}"
    lowered = _JINJA.sub(" ", text).lower()
    for marker in TEST_MARKERS:
        if re.search(rf"\b{re.escape(marker)}\b", lowered):
            out.append(Finding("error", "test-marker", f"the text contains {marker!r}"))
    if test_in_subject(subject):
        out.append(Finding("error", "test-marker", "the subject marks the mail as a test"))
    extra = set(words) | _operator_words(words_file)
    for word, suggestion in misspelled(text, extra, language):
        hint = f" (did you mean {suggestion!r}?)" if suggestion and suggestion != word else ""
        out.append(
            Finding(
                "error",
                "spelling",
                f"{word!r} is not a known word{hint}; fix it or add it to the template's words",
            )
        )
    if category in ("security", "legal"):
        hosts = external_links(_JINJA.sub(" ", text), frozenset())
        if hosts or "unsubscribe_url" in text:
            out.append(
                Finding(
                    "error",
                    "link-in-notice",
                    f"a {category} notice must not contain links ({len(hosts)} found): it "
                    "teaches customers to click links in mail that looks like phishing",
                )
            )
    if category == "marketing" and not UNSUBSCRIBE.search(body):
        out.append(
            Finding(
                "error",
                "missing-unsubscribe",
                "a marketing template must offer an unsubscribe ({{ unsubscribe_url }})",
            )
        )
    if sensitivity:
        if not suppression_list:
            out.append(
                Finding(
                    "error",
                    "sensitive-needs-suppression",
                    f"a template tagged {', '.join(sensitivity)} needs a suppression list",
                )
            )
        if not reviewer:
            out.append(
                Finding(
                    "error",
                    "sensitive-needs-reviewer",
                    f"a template tagged {', '.join(sensitivity)} needs a named reviewer",
                )
            )
    if not bound and needs_evidence:
        out.append(Finding("warning", "no-evidence", "the rule requires no facts"))
    if "!" * 2 in text or re.search(r"\b[A-Z]{6,}\b", _JINJA.sub(" ", text)):
        out.append(Finding("warning", "shouting", "repeated '!' or words in capitals"))
    if len(_JINJA.sub(" ", subject)) > 120:
        out.append(Finding("warning", "long-subject", "the subject is longer than 120 characters"))
    return out


def blocking(findings: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in findings if f.get("level") == "error"]


def warnings(findings: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in findings if f.get("level") == "warning"]


__all__ = [
    "CONTEXT_NAMES",
    "LANGUAGES",
    "TEST_MARKERS",
    "Finding",
    "blocking",
    "environment",
    "lint",
    "misspelled",
    "parse_errors",
    "test_in_subject",
    "warnings",
]
