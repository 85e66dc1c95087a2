"""The ledger: the current signed checkpoint with its witness cosignatures, and a proof
checker for any entry (its leaf hashed again, its inclusion proof walked to the signed
root, the signature checked), shown step by step."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from mailveil.console.sessions import Person
from mailveil.console.web import DbDep, Viewer, console_of, page
from mailveil.errors import MailveilError
from mailveil.ledger.entry_check import check_entry
from mailveil.witness.queries import checkpoint_view, witness_statuses, witnessed_checkpoint

router = APIRouter(prefix="/ledger")
SeeDep = Annotated[Person, Depends(Viewer())]


@router.get("", response_class=HTMLResponse)
def ledger(
    request: Request, session: DbDep, person: SeeDep, entry: int | None = None
) -> HTMLResponse:
    runtime = console_of(request).runtime
    checkpoint = runtime.ledger.checkpoint_now(session)
    session.commit()
    # Cosignatures are stored only once verified against the witness's configured key
    # (``witness.publish``); the newest checkpoint a quorum cosigned is shown beside the
    # current one, which witnesses may not have seen yet.
    settings = runtime.settings
    current = checkpoint_view(session, settings, checkpoint) if checkpoint else None
    witnessed = witnessed_checkpoint(session, settings)
    witnessed_view = checkpoint_view(session, settings, witnessed) if witnessed else None
    checked, problem = None, None
    if entry is not None:
        try:
            checked = check_entry(session, runtime.ledger, entry)
            session.commit()
        except MailveilError as exc:
            session.rollback()
            problem = exc.detail
    return page(
        request,
        session,
        person,
        "ledger.html",
        checkpoint=checkpoint,
        current=current,
        witnessed=witnessed_view,
        witnesses=witness_statuses(session, settings),
        verifier_key=runtime.ledger.signer.verifier_key,
        entry=entry,
        checked=checked,
        problem=problem,
    )


__all__ = ["router"]
