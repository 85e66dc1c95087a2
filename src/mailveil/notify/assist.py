"""Helpers that join a stage under way: on several hosts, every free ``mailveil worker``
thread claims and delivers batches of the stage's recipients beside the send's coordinator
(``worker.step``), which alone decides soaks, gates and the next stage."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.auth.keys import Role, issue_key, revoke_key
from mailveil.contacts.models import Principal
from mailveil.logs import get_logger
from mailveil.notify.claims import claimable
from mailveil.notify.models import Send, Template
from mailveil.notify.worker import Stop, cutoff_of, deliver_batches
from mailveil.runtime import Runtime

_slog = get_logger("mailveil.notify")


def _still_on(s: Session, send_id: int, stage: int) -> None:
    """A helper's check before each batch: the send still running at the same stage."""
    row = s.execute(select(Send.status, Send.stage).where(Send.id == send_id)).first()
    s.rollback()
    if row is None or row[0] != "running" or row[1] != stage:
        raise Stop


def assist(
    runtime: Runtime, send_id: int, worker: str, more: Callable[[], None] | None = None
) -> bool:
    """Help deliver the stage under way: claim and deliver batches until none is left.
    ``more`` queues another helper; it is called once this one found work, so helpers spread
    over every free worker thread on every host while the stage lasts. Gates, soaks and the
    next stage stay the coordinator's (``step``). True when it found work."""
    with runtime.session_factory() as s:
        send = s.get(Send, send_id)
        if send is None or send.status != "running" or send.stage_done_at is not None:
            return False
        cutoff = cutoff_of(s, send)
        if cutoff is None or not claimable(s, send.id, cutoff):
            return False
        template = s.get(Template, send.template_id)
        owner = s.get(Principal, template.owner_id) if template is not None else None
        if template is None or owner is None:
            return False
        key = issue_key(s, Role.SERVICE, principal_id=owner.id, label=f"notify {worker}")
        s.commit()
        if more is not None:
            more()
        try:
            stage = send.stage
            deliver_batches(runtime, s, send, template, owner, worker, key.token, cutoff,
                            lambda: _still_on(s, send_id, stage))  # fmt: skip
        except Stop:
            pass
        finally:
            s.rollback()
            revoke_key(s, key.key.key_id)
            s.commit()
        _slog.info("send_assist", send=send_id, stage=send.stage)
        return True


__all__ = ["assist"]
