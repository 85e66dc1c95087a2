"""Abuse-report intake: forwards inline in the body, as the big webmail and desktop clients
print them, in several languages, in plain text and HTML, several levels deep."""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage

import pytest

from mailveil.detect.intake import parse_report
from mailveil.detect.intake_inline import lenient_date

ALIAS = "alias-7f3k@relay.example"
KING = "Catalogue King <king@spam.example>"


def wrap(plain: str | None = None, html: str | None = None, charset: str = "utf-8") -> bytes:
    message = EmailMessage()
    message["From"] = "Jo Customer <jo@home.example>"
    message["To"] = "report-abuse@relay.example"
    message["Subject"] = "Fwd: Cheap catalogues"
    if plain is not None:
        message.set_content(plain, charset=charset)
    if html is not None:
        if plain is None:
            message.set_content(html, subtype="html", charset=charset)
        else:
            message.add_alternative(html, subtype="html", charset=charset)
    return message.as_bytes()


# (id, client shape, body). Each forwards the same spam: from KING to ALIAS, "Cheap catalogues".
PLAIN_CASES: list[tuple[str, str, str]] = [
    (
        "gmail-en",
        "inline_gmail",
        "FYI spam\n\n---------- Forwarded message ---------\nFrom: {king}\n"
        "Date: Tue, Jan 7, 2025 at 10:15 AM\nSubject: Cheap catalogues\nTo: <{alias}>\n\n\nBuy!\n",
    ),
    (
        "gmail-de",
        "inline_gmail",
        "---------- Weitergeleitete Nachricht ---------\nVon: {king}\n"
        "Date: Di., 7. Jan. 2025 um 10:15 Uhr\nSubject: Cheap catalogues\nTo: <{alias}>\n\nKauf!\n",
    ),
    (
        "gmail-fr",
        "inline_gmail",
        "---------- Message transféré ---------\nDe : {king}\n"
        "Date : mar. 7 janv. 2025 à 10:15\nSubject: Cheap catalogues\nTo : <{alias}>\n\nAchetez\n",
    ),
    (
        "gmail-es",
        "inline_gmail",
        "---------- Mensaje reenviado ---------\nDe: {king}\n"
        "Date: mar, 7 ene 2025 a las 10:15\nSubject: Cheap catalogues\nTo: <{alias}>\n\nCompra\n",
    ),
    (
        "gmail-nl",
        "inline_gmail",
        "---------- Doorgestuurd bericht ---------\nVan: {king}\n"
        "Date: di 7 jan 2025 om 10:15\nSubject: Cheap catalogues\nTo: <{alias}>\n\nKoop\n",
    ),
    (
        "gmail-it",
        "inline_gmail",
        "---------- Messaggio inoltrato ---------\nDa: {king}\n"
        "Date: mar 7 gen 2025 alle ore 10:15\nSubject: Cheap catalogues\nTo: <{alias}>\n\nCompra\n",
    ),
    (
        "gmail-pt",
        "inline_gmail",
        "---------- Mensagem encaminhada ---------\nDe: {king}\n"
        "Date: ter., 7 de jan. de 2025 às 10:15\nSubject: Cheap catalogues\nTo: <{alias}>\n\nx\n",
    ),
    (
        "gmail-pl",
        "inline_gmail",
        "---------- Przekazana wiadomość ---------\nOd: {king}\n"
        "Date: wt., 7.01.2025 o 10:15\nSubject: Cheap catalogues\nTo: <{alias}>\n\nKup\n",
    ),
    (
        "outlook-en-original",
        "inline_outlook",
        "Spam again.\n\n-----Original Message-----\nFrom: {king} \n"
        "Sent: Tuesday, January 7, 2025 10:15 AM\nTo: {alias}\nSubject: Cheap catalogues\n\nBuy\n",
    ),
    (
        "outlook-com-rule",
        "inline_outlook",
        "Spam.\n\n________________________________\nFrom: {king}\n"
        "Sent: Tuesday, January 7, 2025 10:15\nTo: Me <{alias}>\n"
        "Subject: Cheap catalogues\n\nBuy\n",
    ),
    (
        "outlook-de",
        "inline_outlook",
        "Spam!\n\nVon: {king}\nGesendet: Dienstag, 7. Januar 2025 10:15\nAn: {alias}\n"
        "Betreff: Cheap catalogues\n\nKauf\n",
    ),
    (
        "outlook-fr",
        "inline_outlook",
        "Spam.\n\nDe\u00a0: {king}\nEnvoyé\u00a0: mardi 7 janvier 2025 10:15\nÀ\u00a0: {alias}\n"
        "Objet\u00a0: Cheap catalogues\n\nAchetez\n",
    ),
    (
        "outlook-es",
        "inline_outlook",
        "Spam.\n\nDe: {king}\nEnviado: martes, 7 de enero de 2025 10:15\nPara: {alias}\n"
        "Asunto: Cheap catalogues\n\nCompra\n",
    ),
    (
        "outlook-nl",
        "inline_outlook",
        "Spam.\n\nVan: {king}\nVerzonden: dinsdag 7 januari 2025 10:15\nAan: {alias}\n"
        "Onderwerp: Cheap catalogues\n\nKoop\n",
    ),
    (
        "outlook-it",
        "inline_outlook",
        "Spam.\n\nDa: {king}\nInviato: martedì 7 gennaio 2025 10:15\nA: {alias}\n"
        "Oggetto: Cheap catalogues\n\nCompra\n",
    ),
    (
        "outlook-pt",
        "inline_outlook",
        "Spam.\n\nDe: {king}\nEnviado: terça-feira, 7 de janeiro de 2025 10:15\nPara: {alias}\n"
        "Assunto: Cheap catalogues\n\nCompre\n",
    ),
    (
        "outlook-pl",
        "inline_outlook",
        "Spam.\n\nOd: {king}\nWysłano: wtorek, 7 stycznia 2025 10:15\nDo: {alias}\n"
        "Temat: Cheap catalogues\n\nKup\n",
    ),
    (
        "outlook-de-original",
        "inline_outlook",
        "-----Ursprüngliche Nachricht-----\nVon: {king}\nGesendet: Dienstag, 7. Januar 2025 10:15\n"
        "An: {alias}\nBetreff: Cheap catalogues\n\nKauf\n",
    ),
    (
        "apple-en",
        "inline_apple",
        "Sent from my iPhone\n\nBegin forwarded message:\n\nFrom: {king}\n"
        "Subject: Cheap catalogues\nDate: 7 January 2025 at 10:15:00 CET\nTo: {alias}\n\nBuy\n",
    ),
    (
        "apple-de",
        "inline_apple",
        "Anfang der weitergeleiteten Nachricht:\n\nVon: {king}\nBetreff: Cheap catalogues\n"
        "Datum: 7. Januar 2025 um 10:15:00 MEZ\nAn: {alias}\n\nKauf\n",
    ),
    (
        "apple-fr",
        "inline_apple",
        "Début du message réexpédié :\n\nDe: {king}\nObjet: Cheap catalogues\n"
        "Date: 7 janvier 2025 à 10:15:00 UTC+1\nÀ: {alias}\n\nAchetez\n",
    ),
    (
        "apple-es",
        "inline_apple",
        "Inicio del mensaje reenviado:\n\nDe: {king}\nAsunto: Cheap catalogues\n"
        "Fecha: 7 de enero de 2025, 10:15:00 CET\nPara: {alias}\n\nCompra\n",
    ),
    (
        "apple-nl",
        "inline_apple",
        "Begin doorgestuurd bericht:\n\nVan: {king}\nOnderwerp: Cheap catalogues\n"
        "Datum: 7 januari 2025 om 10:15:00 CET\nAan: {alias}\n\nKoop\n",
    ),
    (
        "apple-it",
        "inline_apple",
        "Inizio messaggio inoltrato:\n\nDa: {king}\nOggetto: Cheap catalogues\n"
        "Data: 7 gennaio 2025 10:15:00 CET\nA: {alias}\n\nCompra\n",
    ),
    (
        "thunderbird-en",
        "inline_thunderbird",
        "\n\n-------- Forwarded Message --------\nSubject: \tCheap catalogues\n"
        "Date: \tTue, 7 Jan 2025 10:15:00 +0000\nFrom: \t{king}\nTo: \t{alias}\n\n\n\nBuy\n",
    ),
    (
        "thunderbird-de",
        "inline_thunderbird",
        "-------- Weitergeleitete Nachricht --------\nBetreff: \tCheap catalogues\n"
        "Datum: \tTue, 7 Jan 2025 10:15:00 +0000\nVon: \t{king}\nAn: \t{alias}\n\nKauf\n",
    ),
    (
        "yahoo-en",
        "inline_yahoo",
        "\n\n----- Forwarded Message -----\nFrom: {king}\nTo: Me <{alias}>\n"
        "Sent: Tuesday, January 7, 2025 at 10:15:00 AM GMT+1\nSubject: Cheap catalogues\n\nBuy\n",
    ),
    (
        "quoted-generic",
        "inline_generic",
        "Look what I got:\n\n> From: {king}\n> Date: Tue, 7 Jan 2025 10:15:00 +0000\n"
        "> To: {alias}\n> Subject: Cheap catalogues\n>\n> Buy\n",
    ),
]


@pytest.mark.parametrize(
    ("shape", "body"), [c[1:] for c in PLAIN_CASES], ids=[c[0] for c in PLAIN_CASES]
)
def test_inline_forward_in_plain_text(shape: str, body: str) -> None:
    result = parse_report(wrap(body.format(king=KING, alias=ALIAS)))
    assert (result.outcome, result.shape, result.depth) == ("found", shape, 1), result.reason
    o = result.original
    assert o is not None and o.completeness == "visible"
    assert o.sender is not None
    assert (o.sender.address, o.sender.display_name) == ("king@spam.example", "Catalogue King")
    assert o.to == (ALIAS,)
    assert o.subject == "Cheap catalogues"
    assert o.received == ()  # an inline forward shows no Received chain
    assert o.date_text
    if "stycznia" not in o.date_text:  # Polish month names are not read; the text is kept
        assert o.date is not None
        assert (o.date.year, o.date.month, o.date.day, o.date.hour, o.date.minute) == (
            2025,
            1,
            7,
            10,
            15,
        )


GMAIL_HTML = (
    '<div dir="ltr">FYI<br><br><div class="gmail_quote"><div dir="ltr" class="gmail_attr">'
    '---------- Forwarded message ---------<br>From: <strong class="gmail_sendername" '
    'dir="auto">Catalogue King</strong> <span dir="auto">&lt;<a href="mailto:king@spam.example">'
    "king@spam.example</a>&gt;</span><br>Date: Tue, Jan 7, 2025 at 10:15\u202fAM<br>"
    'Subject: Cheap catalogues<br>To: &lt;<a href="mailto:{alias}">{alias}</a>&gt;<br></div>'
    "<br><br>Buy now</div></div>"
)
OUTLOOK_HTML = (
    "<html><head><style>p.MsoNormal {{margin:0}}</style></head><body><div class=WordSection1>"
    "<p class=MsoNormal>Spam again<o:p></o:p></p><p class=MsoNormal><o:p>&nbsp;</o:p></p>"
    '<div style="border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm">'
    "<p class=MsoNormal><b>From:</b> Catalogue King &lt;king@spam.example&gt; <br>"
    "<b>Sent:</b> Tuesday, January 7, 2025 10:15 AM<br><b>To:</b> {alias}<br>"
    "<b>Subject:</b> Cheap catalogues<o:p></o:p></p></div><p class=MsoNormal>Buy</p>"
    "</div></body></html>"
)
THUNDERBIRD_HTML = (
    '<html><body><p><br></p><div class="moz-forward-container"><br><br>'
    "-------- Forwarded Message --------\n"
    '<table class="moz-email-headers-table" border="0" cellpadding="0" cellspacing="0"><tbody>'
    '<tr><th valign="BASELINE" nowrap="nowrap" align="RIGHT">Subject: </th>'
    "<td>Cheap catalogues</td></tr>"
    '<tr><th valign="BASELINE" nowrap="nowrap" align="RIGHT">Date: </th>'
    "<td>Tue, 7 Jan 2025 10:15:00 +0000</td></tr>"
    '<tr><th valign="BASELINE" nowrap="nowrap" align="RIGHT">From: </th>'
    '<td>Catalogue King <a class="moz-txt-link-rfc2396E" href="mailto:king@spam.example">'
    "&lt;king@spam.example&gt;</a></td></tr>"
    '<tr><th valign="BASELINE" nowrap="nowrap" align="RIGHT">To: </th>'
    '<td><a class="moz-txt-link-abbreviated" href="mailto:{alias}">{alias}</a></td></tr>'
    "</tbody></table><br>Buy</div></body></html>"
)
YAHOO_HTML = (
    '<html><body><div class="ydp"><div><br></div><div id="yahoo_quoted_1">'
    "<div>----- Forwarded Message -----</div><div><b>From:</b> Catalogue King "
    "&lt;king@spam.example&gt;</div><div><b>To:</b> {alias}</div>"
    "<div><b>Sent:</b> Tuesday, January 7, 2025 at 10:15:00 AM GMT+1</div>"
    "<div><b>Subject:</b> Cheap catalogues</div><div><br></div><div>Buy</div></div></div>"
    "</body></html>"
)


@pytest.mark.parametrize(
    ("shape", "html"),
    [
        ("inline_gmail", GMAIL_HTML),
        ("inline_outlook", OUTLOOK_HTML),
        ("inline_thunderbird", THUNDERBIRD_HTML),
        ("inline_yahoo", YAHOO_HTML),
    ],
    ids=["gmail", "outlook", "thunderbird", "yahoo"],
)
def test_inline_forward_in_html_only(shape: str, html: str) -> None:
    result = parse_report(wrap(html=html.format(alias=ALIAS)))
    assert (result.outcome, result.shape) == ("found", shape)
    o = result.original
    assert o is not None and o.sender is not None
    assert (o.sender.address, o.sender.display_name) == ("king@spam.example", "Catalogue King")
    assert o.to == (ALIAS,) and o.subject == "Cheap catalogues"
    assert o.date is not None and (o.date.day, o.date.hour) == (7, 10)


def test_html_is_read_when_the_plain_part_has_no_forward() -> None:
    result = parse_report(wrap(plain="see below\n", html=OUTLOOK_HTML.format(alias=ALIAS)))
    assert result.shape == "inline_outlook"


def test_nested_inline_forwards_unwrap_to_the_innermost() -> None:
    body = (
        "Have a look.\n\n---------- Forwarded message ---------\n"
        "From: Partner <partner@home.example>\nDate: Wed, Jan 8, 2025 at 9:00 AM\n"
        "Subject: Fwd: Cheap catalogues\nTo: Jo <jo@home.example>\n\n"
        "got this on our shared alias\n\nBegin forwarded message:\n\n"
        "From: Partner2 <p2@home.example>\nSubject: Fw: Cheap catalogues\n"
        "Date: 7 January 2025 at 12:00:00 CET\nTo: partner@home.example\n\n"
        f"-----Original Message-----\nFrom: {KING}\nSent: Tuesday, January 7, 2025 10:15 AM\n"
        f"To: {ALIAS}\nCc: a@b.example; c@d.example\nSubject: Cheap catalogues\n\nBuy\n"
    )
    result = parse_report(wrap(body))
    assert result.path == ("inline_gmail", "inline_apple", "inline_outlook")
    assert result.depth == 3 and result.shape == "inline_outlook"
    o = result.original
    assert o is not None and o.sender is not None and o.sender.address == "king@spam.example"
    assert o.to == (ALIAS,) and o.cc == ("a@b.example", "c@d.example")


def test_inline_forward_with_only_a_display_name_and_wrapped_recipients() -> None:
    body = (
        "-----Original Message-----\nFrom: Catalogue King\nSent: Tuesday, January 7, 2025 10:15\n"
        f"To: First <first@x.example>; Second <second@x.example>;\n  {ALIAS}\n"
        "Subject: Cheap catalogues\n\nBuy\n"
    )
    result = parse_report(wrap(body))
    o = result.original
    assert o is not None and o.sender is not None
    assert (o.sender.address, o.sender.display_name) == ("", "Catalogue King")
    assert o.to == ("first@x.example", "second@x.example", ALIAS)


def test_outlook_mailto_brackets_and_latin1_body() -> None:
    body = (
        "-----Original Message-----\nFrom: Catalogue König [mailto:king@spam.example]\n"
        f"Sent: Tuesday, January 7, 2025 10:15 AM\nTo: {ALIAS}\nSubject: Günstig\n\nx\n"
    )
    result = parse_report(wrap(body, charset="iso-8859-1"))
    o = result.original
    assert o is not None and o.sender is not None
    assert (o.sender.address, o.sender.display_name) == ("king@spam.example", "Catalogue König")
    assert o.subject == "Günstig"


def test_prose_that_mentions_from_and_to_is_not_a_forward() -> None:
    body = "From: what I can tell you sold my address.\nTo: whom it may concern, stop it.\n"
    result = parse_report(wrap(body))
    assert result.outcome == "no_original"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Tue, Jan 7, 2025 at 10:15 PM", datetime(2025, 1, 7, 22, 15)),
        ("Tuesday, January 7, 2025 12:05 AM", datetime(2025, 1, 7, 0, 5)),
        ("Di., 7. Jan. 2025 um 10:15 Uhr", datetime(2025, 1, 7, 10, 15)),
        ("sam. 4 mars 2025 à 08:01", datetime(2025, 3, 4, 8, 1)),
        ("martes, 7 de diciembre de 2025 10:15", datetime(2025, 12, 7, 10, 15)),
        ("07.01.2025 10:15", datetime(2025, 1, 7, 10, 15)),
        ("2025-01-07 10:15:30", datetime(2025, 1, 7, 10, 15, 30)),
        ("31 February 2025", None),
        ("someday", None),
    ],
)
def test_lenient_dates(text: str, expected: datetime | None) -> None:
    assert lenient_date(text) == expected
