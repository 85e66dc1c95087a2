"""The customer-facing words of the access-log page, in the languages a marketplace passes
(``lang``), with English as the fallback. Staff pages are in English."""

from __future__ import annotations

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "title": "Who has seen your contact details",
        "intro": (
            "Sellers and our staff never see your e-mail address: each gets an alias that "
            "forwards to you. This is every time someone was given one, or (rarely, with a "
            "second person's approval) saw your address itself."
        ),
        "when": "When",
        "who": "Who",
        "what": "What they got",
        "why": "Why",
        "alias": "an e-mail alias",
        "real_address": "your e-mail address",
        "seller": "seller",
        "employee": "team",
        "service": "notification service",
        "empty": "Nobody has been given your contact details yet.",
        "more": "Older entries",
        "order": "an order",
        "support": "a support case",
        "notification": "a notification",
        "reveal": "a support case (approved by a second person)",
    },
    "de": {
        "title": "Wer Ihre Kontaktdaten gesehen hat",
        "intro": (
            "Verkäufer und unsere Mitarbeitenden sehen Ihre E-Mail-Adresse nie: Jeder erhält "
            "einen Alias, der an Sie weiterleitet. Hier steht jedes Mal, dass jemand einen "
            "erhalten hat oder (selten, mit Freigabe einer zweiten Person) Ihre Adresse selbst "
            "gesehen hat."
        ),
        "when": "Wann",
        "who": "Wer",
        "what": "Was",
        "why": "Wofür",
        "alias": "ein E-Mail-Alias",
        "real_address": "Ihre E-Mail-Adresse",
        "seller": "Verkäufer",
        "employee": "Team",
        "service": "Benachrichtigungsdienst",
        "empty": "Bisher hat niemand Ihre Kontaktdaten erhalten.",
        "more": "Ältere Einträge",
        "order": "eine Bestellung",
        "support": "eine Support-Anfrage",
        "notification": "eine Benachrichtigung",
        "reveal": "eine Support-Anfrage (von einer zweiten Person freigegeben)",
    },
    "fr": {
        "title": "Qui a vu vos coordonnées",
        "intro": (
            "Les vendeurs et notre personnel ne voient jamais votre adresse e-mail : chacun "
            "reçoit un alias qui vous transfère les messages. Voici chaque fois que quelqu'un "
            "en a reçu un ou (rarement, avec l'accord d'une seconde personne) a vu votre "
            "adresse elle-même."
        ),
        "when": "Quand",
        "who": "Qui",
        "what": "Quoi",
        "why": "Pourquoi",
        "alias": "un alias e-mail",
        "real_address": "votre adresse e-mail",
        "seller": "vendeur",
        "employee": "équipe",
        "service": "service de notification",
        "empty": "Personne n'a encore reçu vos coordonnées.",
        "more": "Entrées plus anciennes",
        "order": "une commande",
        "support": "une demande d'assistance",
        "notification": "une notification",
        "reveal": "une demande d'assistance (approuvée par une seconde personne)",
    },
    "es": {
        "title": "Quién ha visto tus datos de contacto",
        "intro": (
            "Los vendedores y nuestro personal nunca ven tu dirección de correo: cada uno "
            "recibe un alias que te reenvía los mensajes. Aquí aparece cada vez que alguien "
            "recibió uno o (rara vez, con la aprobación de una segunda persona) vio tu "
            "dirección."
        ),
        "when": "Cuándo",
        "who": "Quién",
        "what": "Qué",
        "why": "Para qué",
        "alias": "un alias de correo",
        "real_address": "tu dirección de correo",
        "seller": "vendedor",
        "employee": "equipo",
        "service": "servicio de notificaciones",
        "empty": "Nadie ha recibido tus datos de contacto todavía.",
        "more": "Entradas anteriores",
        "order": "un pedido",
        "support": "una consulta de soporte",
        "notification": "una notificación",
        "reveal": "una consulta de soporte (aprobada por una segunda persona)",
    },
    "it": {
        "title": "Chi ha visto i tuoi dati di contatto",
        "intro": (
            "I venditori e il nostro personale non vedono mai il tuo indirizzo e-mail: "
            "ognuno riceve un alias che inoltra i messaggi a te. Qui trovi ogni volta che "
            "qualcuno ne ha ricevuto uno o (di rado, con l'approvazione di una seconda "
            "persona) ha visto il tuo indirizzo."
        ),
        "when": "Quando",
        "who": "Chi",
        "what": "Cosa",
        "why": "Perché",
        "alias": "un alias e-mail",
        "real_address": "il tuo indirizzo e-mail",
        "seller": "venditore",
        "employee": "team",
        "service": "servizio di notifiche",
        "empty": "Nessuno ha ancora ricevuto i tuoi dati di contatto.",
        "more": "Voci precedenti",
        "order": "un ordine",
        "support": "una richiesta di assistenza",
        "notification": "una notifica",
        "reveal": "una richiesta di assistenza (approvata da una seconda persona)",
    },
    "nl": {
        "title": "Wie uw contactgegevens heeft gezien",
        "intro": (
            "Verkopers en onze medewerkers zien uw e-mailadres nooit: iedereen krijgt een "
            "alias die naar u doorstuurt. Hier staat elke keer dat iemand er een kreeg of "
            "(zelden, met goedkeuring van een tweede persoon) uw adres zelf zag."
        ),
        "when": "Wanneer",
        "who": "Wie",
        "what": "Wat",
        "why": "Waarvoor",
        "alias": "een e-mailalias",
        "real_address": "uw e-mailadres",
        "seller": "verkoper",
        "employee": "team",
        "service": "meldingsdienst",
        "empty": "Nog niemand heeft uw contactgegevens gekregen.",
        "more": "Oudere vermeldingen",
        "order": "een bestelling",
        "support": "een supportvraag",
        "notification": "een melding",
        "reveal": "een supportvraag (goedgekeurd door een tweede persoon)",
    },
}
DEFAULT = "en"


def language(*wanted: str | None) -> str:
    """The first supported language among the wishes (``de``, ``de-AT``, an
    Accept-Language header), else English."""
    for wish in wanted:
        for part in (wish or "").split(","):
            code = part.split(";")[0].strip().lower().split("-")[0]
            if code in MESSAGES:
                return code
    return DEFAULT


def words(lang: str) -> dict[str, str]:
    return {**MESSAGES[DEFAULT], **MESSAGES.get(lang, {})}


__all__ = ["DEFAULT", "MESSAGES", "language", "words"]
