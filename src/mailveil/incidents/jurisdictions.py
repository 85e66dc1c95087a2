"""The breach-notification rules of the places affected people live in: a data table, each
row with the statute it comes from.

Compiled from the texts of the laws as amended up to October 2025. Laws change: the privacy
officer and counsel review this table before relying on it, and every report says so. A
place the table does not hold gets a row that says "rule unknown, check counsel", never a
guess. What the rows hold (see docs/regulator-report.md for the method):

- to whom the breach is reported (a supervisory authority, a US state's attorney general),
  from how many residents on, and within how long after the controller became aware;
- how fast the affected people are told (a fixed number of days, or "without undue delay");
- whether an e-mail address alone is data the law covers. Under GDPR any e-mail address is
  personal data. The US state laws below cover an e-mail address only together with a
  password or security answer that opens an account, so a leak of addresses alone usually
  does not trigger them: the report shows their deadlines as conditional.

Sources, by row group:
- EU/EEA: Regulation (EU) 2016/679 (GDPR) Art. 33 (authority, 72 hours, "unless the
  personal data breach is unlikely to result in a risk"), Art. 34 (individuals, "without
  undue delay" when "likely to result in a high risk"), Art. 56 (lead supervisory authority
  of the main establishment); EEA Joint Committee Decision No 154/2018 (GDPR in Iceland,
  Liechtenstein, Norway); EDPB Guidelines 9/2022 on personal data breach notification,
  version 2.0 (28 March 2023), §73: a controller without an establishment in the EEA
  notifies every supervisory authority of a member state where affected people live.
- United Kingdom: UK GDPR Art. 33 and 34 (Regulation (EU) 2016/679 as retained and amended
  by the Data Protection, Privacy and Electronic Communications (Amendments etc.) (EU Exit)
  Regulations 2019); the Information Commissioner's Office.
- Switzerland: Federal Act on Data Protection (FADP, in force 1 September 2023) Art. 24.
- Canada: PIPEDA s. 10.1 and the Breach of Security Safeguards Regulations (SOR/2018-64);
  provincial laws (Quebec's Law 25, Alberta's PIPA) differ.
- US states: the statute cited in each row.
"""

from __future__ import annotations

from dataclasses import dataclass

# Authority kinds: who receives the report.
AUTHORITY = "authority"  # a data protection supervisory authority
ATTORNEY_GENERAL = "attorney_general"  # a US state's attorney general (or its equivalent)
INDIVIDUALS = "individuals"


@dataclass(frozen=True)
class Rule:
    code: str  # ISO 3166 code of the place: "DE", "GB", "US-CA"; "US", "US-?" and "*" are defaults
    name: str
    regime: str  # the law, short
    authority: str  # who receives the report ("" when no one does)
    authority_kind: str  # AUTHORITY or ATTORNEY_GENERAL
    authority_hours: int | None  # fixed deadline after awareness, in hours
    authority_days: int | None  # ... or in days
    authority_when: str  # the rule in words, with its condition
    authority_threshold: int  # residents affected from which the report is due (1: any)
    individuals_days: int | None  # fixed deadline for telling the people, in days
    individuals_when: str
    email_alone_covered: bool  # an e-mail address alone is data the law covers
    covered: str  # what data the law covers, in words
    sources: tuple[str, ...]
    known: bool = True  # False: the table does not hold this place's rule


_GDPR_SOURCES = (
    "Regulation (EU) 2016/679 (GDPR) Art. 33(1), 34(1), 56(1)",
    "EDPB Guidelines 9/2022 on personal data breach notification, v2.0, §73",
)
_EEA_SOURCES = (*_GDPR_SOURCES, "EEA Joint Committee Decision No 154/2018")
_GDPR_AUTHORITY_WHEN = (
    "without undue delay and, where feasible, not later than 72 hours after becoming aware, "
    "unless the breach is unlikely to result in a risk to people's rights and freedoms"
)
_GDPR_INDIVIDUALS_WHEN = (
    "without undue delay, when the breach is likely to result in a high risk to their rights "
    "and freedoms (not needed in the cases of Art. 34(3))"
)

# The supervisory authority of each EU and EEA member state (GDPR Art. 51).
SUPERVISORY_AUTHORITIES: dict[str, tuple[str, str]] = {
    "AT": ("Austria", "Datenschutzbehörde (DSB)"),
    "BE": ("Belgium", "Autorité de protection des données / Gegevensbeschermingsautoriteit"),
    "BG": ("Bulgaria", "Commission for Personal Data Protection (CPDP)"),
    "CY": ("Cyprus", "Commissioner for Personal Data Protection"),
    "CZ": ("Czechia", "Úřad pro ochranu osobních údajů (ÚOOÚ)"),
    "DE": (
        "Germany",
        "the data protection authority of the Land of the establishment (the BfDI for "
        "telecommunications and postal services)",
    ),
    "DK": ("Denmark", "Datatilsynet"),
    "EE": ("Estonia", "Andmekaitse Inspektsioon (AKI)"),
    "ES": ("Spain", "Agencia Española de Protección de Datos (AEPD)"),
    "FI": ("Finland", "Office of the Data Protection Ombudsman (Tietosuojavaltuutettu)"),
    "FR": ("France", "Commission nationale de l'informatique et des libertés (CNIL)"),
    "GR": ("Greece", "Hellenic Data Protection Authority (HDPA)"),
    "HR": ("Croatia", "Agencija za zaštitu osobnih podataka (AZOP)"),
    "HU": ("Hungary", "Nemzeti Adatvédelmi és Információszabadság Hatóság (NAIH)"),
    "IE": ("Ireland", "Data Protection Commission (DPC)"),
    "IT": ("Italy", "Garante per la protezione dei dati personali"),
    "LT": ("Lithuania", "Valstybinė duomenų apsaugos inspekcija (VDAI)"),
    "LU": ("Luxembourg", "Commission nationale pour la protection des données (CNPD)"),
    "LV": ("Latvia", "Datu valsts inspekcija (DVI)"),
    "MT": ("Malta", "Information and Data Protection Commissioner (IDPC)"),
    "NL": ("Netherlands", "Autoriteit Persoonsgegevens (AP)"),
    "PL": ("Poland", "Urząd Ochrony Danych Osobowych (UODO)"),
    "PT": ("Portugal", "Comissão Nacional de Proteção de Dados (CNPD)"),
    "RO": ("Romania", "Autoritatea Națională de Supraveghere a Prelucrării Datelor (ANSPDCP)"),
    "SE": ("Sweden", "Integritetsskyddsmyndigheten (IMY)"),
    "SI": ("Slovenia", "Informacijski pooblaščenec (Information Commissioner)"),
    "SK": ("Slovakia", "Úrad na ochranu osobných údajov"),
    # EEA, not EU:
    "IS": ("Iceland", "Persónuvernd"),
    "LI": ("Liechtenstein", "Datenschutzstelle (DSS)"),
    "NO": ("Norway", "Datatilsynet"),
}
EEA = frozenset(SUPERVISORY_AUTHORITIES)
EU = EEA - {"IS", "LI", "NO"}


def _eea_rule(code: str) -> Rule:
    name, authority = SUPERVISORY_AUTHORITIES[code]
    return Rule(
        code=code,
        name=name,
        regime="GDPR" if code in EU else "GDPR (EEA Agreement)",
        authority=authority,
        authority_kind=AUTHORITY,
        authority_hours=72,
        authority_days=None,
        authority_when=_GDPR_AUTHORITY_WHEN,
        authority_threshold=1,
        individuals_days=None,
        individuals_when=_GDPR_INDIVIDUALS_WHEN,
        email_alone_covered=True,
        covered="any information relating to an identifiable person (Art. 4(1))",
        sources=_GDPR_SOURCES if code in EU else _EEA_SOURCES,
    )


# An e-mail address alone is not "personal information" under these states' laws; with a
# password or security answer that opens an account it is (where the row says so).
_ACCOUNT_CREDENTIALS = (
    "name with a Social Security, driver's licence or account number (and the like), or a "
    "user name or e-mail address together with a password or security answer that opens "
    "an online account"
)
_NAME_AND_NUMBER = (
    "name with a Social Security, driver's licence, state ID or financial account number "
    "(and the like); an e-mail address is not covered"
)

OTHERS: tuple[Rule, ...] = (
    Rule(
        code="GB",
        name="United Kingdom",
        regime="UK GDPR",
        authority="Information Commissioner's Office (ICO)",
        authority_kind=AUTHORITY,
        authority_hours=72,
        authority_days=None,
        authority_when=_GDPR_AUTHORITY_WHEN,
        authority_threshold=1,
        individuals_days=None,
        individuals_when=_GDPR_INDIVIDUALS_WHEN,
        email_alone_covered=True,
        covered="any information relating to an identifiable person (UK GDPR Art. 4(1))",
        sources=("UK GDPR Art. 33(1), 34(1)", "Data Protection Act 2018"),
    ),
    Rule(
        code="CH",
        name="Switzerland",
        regime="FADP",
        authority="Federal Data Protection and Information Commissioner (FDPIC)",
        authority_kind=AUTHORITY,
        authority_hours=None,
        authority_days=None,
        authority_when=(
            "as soon as possible, when the breach is likely to result in a high risk to the "
            "person's personality or fundamental rights"
        ),
        authority_threshold=1,
        individuals_days=None,
        individuals_when="when necessary for their protection or when the FDPIC requests it",
        email_alone_covered=True,
        covered="any information relating to an identified or identifiable person (Art. 5)",
        sources=("Federal Act on Data Protection (FADP) Art. 24(1), (4)",),
    ),
    Rule(
        code="CA",
        name="Canada",
        regime="PIPEDA",
        authority="Office of the Privacy Commissioner of Canada (OPC)",
        authority_kind=AUTHORITY,
        authority_hours=None,
        authority_days=None,
        authority_when=(
            "as soon as feasible, when it is reasonable to believe the breach creates a real "
            "risk of significant harm (provincial laws, e.g. Quebec's, differ)"
        ),
        authority_threshold=1,
        individuals_days=None,
        individuals_when="as soon as feasible, under the same real-risk-of-significant-harm test",
        email_alone_covered=True,
        covered="information about an identifiable individual (s. 2(1))",
        sources=("PIPEDA s. 10.1(1)-(3), (6)", "Breach of Security Safeguards Regulations"),
    ),
    Rule(
        code="US-CA",
        name="California",
        regime="Cal. Civ. Code § 1798.82",
        authority="California Attorney General (sample notice)",
        authority_kind=ATTORNEY_GENERAL,
        authority_hours=None,
        authority_days=None,
        authority_when=(
            "a sample copy of the notice, electronically, within 15 days of notifying the "
            "residents, when more than 500 residents are notified"
        ),
        authority_threshold=501,
        individuals_days=30,
        individuals_when="within 30 calendar days of discovering the breach",
        email_alone_covered=False,
        covered=_ACCOUNT_CREDENTIALS,
        sources=("Cal. Civ. Code § 1798.82(a), (f), (h) as amended by SB 446 (2025)",),
    ),
    Rule(
        code="US-NY",
        name="New York",
        regime="N.Y. Gen. Bus. Law § 899-aa",
        authority="New York Attorney General, Department of State and Division of State Police",
        authority_kind=ATTORNEY_GENERAL,
        authority_hours=None,
        authority_days=30,
        authority_when=(
            "for any number of residents: the timing, content and distribution of the notices "
            "and the approximate number of people, when they are notified"
        ),
        authority_threshold=1,
        individuals_days=30,
        individuals_when="within 30 days after discovering the breach",
        email_alone_covered=False,
        covered=_ACCOUNT_CREDENTIALS,
        sources=("N.Y. Gen. Bus. Law § 899-aa(1), (2), (8) as amended by L. 2024, ch. 647",),
    ),
    Rule(
        code="US-TX",
        name="Texas",
        regime="Tex. Bus. & Com. Code § 521.053",
        authority="Texas Attorney General (electronic form)",
        authority_kind=ATTORNEY_GENERAL,
        authority_hours=None,
        authority_days=30,
        authority_when="within 30 days of determining the breach, when 250 or more residents",
        authority_threshold=250,
        individuals_days=60,
        individuals_when="within 60 days of determining the breach occurred",
        email_alone_covered=False,
        covered=_NAME_AND_NUMBER,
        sources=("Tex. Bus. & Com. Code § 521.002, § 521.053(b), (i) as amended by SB 768 (2023)",),
    ),
    Rule(
        code="US-FL",
        name="Florida",
        regime="Fla. Stat. § 501.171",
        authority="Florida Department of Legal Affairs",
        authority_kind=ATTORNEY_GENERAL,
        authority_hours=None,
        authority_days=30,
        authority_when="within 30 days of determining the breach, when 500 or more residents",
        authority_threshold=500,
        individuals_days=30,
        individuals_when=(
            "within 30 days of determining the breach (15 more days for good cause shown to "
            "the Department in writing)"
        ),
        email_alone_covered=False,
        covered=_ACCOUNT_CREDENTIALS,
        sources=("Fla. Stat. § 501.171(1)(g), (3), (4)",),
    ),
    Rule(
        code="US-WA",
        name="Washington",
        regime="RCW 19.255.010",
        authority="Washington Attorney General",
        authority_kind=ATTORNEY_GENERAL,
        authority_hours=None,
        authority_days=30,
        authority_when="within 30 days of discovering the breach, when more than 500 residents",
        authority_threshold=501,
        individuals_days=30,
        individuals_when="within 30 calendar days of discovering the breach",
        email_alone_covered=False,
        covered=_ACCOUNT_CREDENTIALS,
        sources=("RCW 19.255.005, 19.255.010(7), (8) as amended by HB 1071 (2019)",),
    ),
    Rule(
        code="US-CO",
        name="Colorado",
        regime="C.R.S. § 6-1-716",
        authority="Colorado Attorney General",
        authority_kind=ATTORNEY_GENERAL,
        authority_hours=None,
        authority_days=30,
        authority_when="within 30 days of determining the breach, when 500 or more residents",
        authority_threshold=500,
        individuals_days=30,
        individuals_when="within 30 days of determining the breach occurred",
        email_alone_covered=False,
        covered=_ACCOUNT_CREDENTIALS,
        sources=("C.R.S. § 6-1-716(1)(g), (2), (2)(f)",),
    ),
    Rule(
        code="US-AZ",
        name="Arizona",
        regime="A.R.S. § 18-552",
        authority="Arizona Attorney General and the three largest consumer reporting agencies",
        authority_kind=ATTORNEY_GENERAL,
        authority_hours=None,
        authority_days=45,
        authority_when="within 45 days of determining the breach, when more than 1,000 people",
        authority_threshold=1001,
        individuals_days=45,
        individuals_when="within 45 days of determining the breach",
        email_alone_covered=False,
        covered=_ACCOUNT_CREDENTIALS,
        sources=("A.R.S. § 18-551(11), § 18-552(B), (C)",),
    ),
    Rule(
        code="US-CT",
        name="Connecticut",
        regime="Conn. Gen. Stat. § 36a-701b",
        authority="Connecticut Attorney General",
        authority_kind=ATTORNEY_GENERAL,
        authority_hours=None,
        authority_days=60,
        authority_when="for any number of residents, no later than the residents are told",
        authority_threshold=1,
        individuals_days=60,
        individuals_when="within 60 days of discovering the breach",
        email_alone_covered=False,
        covered=_ACCOUNT_CREDENTIALS,
        sources=("Conn. Gen. Stat. § 36a-701b(a), (b) as amended by P.A. 21-59",),
    ),
    Rule(
        code="US-IL",
        name="Illinois",
        regime="815 ILCS 530",
        authority="Illinois Attorney General",
        authority_kind=ATTORNEY_GENERAL,
        authority_hours=None,
        authority_days=None,
        authority_when=(
            "when more than 500 residents: without unreasonable delay and no later than the "
            "residents are told"
        ),
        authority_threshold=501,
        individuals_days=None,
        individuals_when="in the most expedient time possible and without unreasonable delay",
        email_alone_covered=False,
        covered=_ACCOUNT_CREDENTIALS,
        sources=("815 ILCS 530/5, 530/10(a), (e)",),
    ),
    Rule(
        code="US-MA",
        name="Massachusetts",
        regime="M.G.L. c. 93H § 3",
        authority="Massachusetts Attorney General and the Office of Consumer Affairs (OCABR)",
        authority_kind=ATTORNEY_GENERAL,
        authority_hours=None,
        authority_days=None,
        authority_when="for any number of residents, as soon as practicable and without delay",
        authority_threshold=1,
        individuals_days=None,
        individuals_when="as soon as practicable and without unreasonable delay",
        email_alone_covered=False,
        covered=_NAME_AND_NUMBER,
        sources=("M.G.L. c. 93H § 1, § 3(b)",),
    ),
)


def _unknown(code: str, name: str, why: str) -> Rule:
    """A place whose rule the table does not hold: said so, never guessed."""
    return Rule(
        code=code,
        name=name,
        regime="local breach-notification law",
        authority="",
        authority_kind=AUTHORITY,
        authority_hours=None,
        authority_days=None,
        authority_when=f"rule unknown, check counsel{why}",
        authority_threshold=1,
        individuals_days=None,
        individuals_when="rule unknown, check counsel",
        email_alone_covered=True,
        covered="rule unknown, check counsel",
        sources=(),
        known=False,
    )


US_OTHER = _unknown(
    "US", "United States, other states", ": every US state has a breach law, the table holds some"
)
US_UNRECORDED = _unknown(
    "US-?",
    "United States, state not recorded",
    ": the customer's state is not recorded (set customers' subdivision to apply it)",
)
ELSEWHERE = _unknown("*", "elsewhere", "")

RULES: dict[str, Rule] = {
    **{code: _eea_rule(code) for code in sorted(EEA)},
    **{r.code: r for r in OTHERS},
    **{r.code: r for r in (US_OTHER, US_UNRECORDED, ELSEWHERE)},
}


def place_of(country: str, subdivision: str | None) -> str:
    """The table's key for where a person lives."""
    country = country.upper()
    if country == "US":
        if not subdivision:
            return US_UNRECORDED.code
        code = f"US-{subdivision.upper()}"
        return code if code in RULES else US_OTHER.code
    return country if country in RULES else ELSEWHERE.code


def rule_for(country: str, subdivision: str | None = None) -> Rule:
    return RULES[place_of(country, subdivision)]


__all__ = [
    "ATTORNEY_GENERAL",
    "AUTHORITY",
    "EEA",
    "ELSEWHERE",
    "EU",
    "INDIVIDUALS",
    "RULES",
    "SUPERVISORY_AUTHORITIES",
    "US_OTHER",
    "US_UNRECORDED",
    "Rule",
    "place_of",
    "rule_for",
]
