"""Everything the relay needs for the life of the process, built once at start."""

from __future__ import annotations

from dataclasses import dataclass

from mailveil.config import Settings
from mailveil.relay.content_rules import MessagingPolicy
from mailveil.relay.dkim import DkimSigner
from mailveil.relay.dkim_rollover import DkimKeyring
from mailveil.relay.messages import VerpKeys
from mailveil.relay.parse import Limits
from mailveil.relay.sender_auth import Resolver, resolver_for
from mailveil.runtime import Runtime


@dataclass(frozen=True)
class RelayContext:
    runtime: Runtime
    messaging: MessagingPolicy
    dkim_keys: DkimKeyring
    verp: VerpKeys
    resolver: Resolver
    limits: Limits

    @property
    def dkim(self) -> DkimSigner:
        """The signer for now (a selector rollover switches it without a restart)."""
        return self.dkim_keys.signer

    @property
    def verp_key(self) -> bytes:
        """The key new VERP addresses are signed with."""
        return self.verp.current

    @property
    def verp_keys(self) -> tuple[bytes, ...]:
        """Every key a bounce address may verify under (retired ones in their grace)."""
        return self.verp.accepted()

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @classmethod
    def load(cls, runtime: Runtime, *, resolver: Resolver | None = None) -> RelayContext:
        """Read keys and parse the policy settings (SettingsError / KeyFileError if bad)."""
        settings = runtime.settings
        return cls(
            runtime=runtime,
            messaging=MessagingPolicy.from_settings(settings),
            dkim_keys=DkimKeyring(settings),
            verp=VerpKeys.load(settings),
            resolver=resolver if resolver is not None else resolver_for(settings),
            limits=Limits(max_message_bytes=settings.relay_max_message_bytes),
        )


__all__ = ["RelayContext"]
