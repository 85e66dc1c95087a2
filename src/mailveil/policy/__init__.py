"""Cedar policies deciding disclosures, and the DB facts they are evaluated on.

See ``mailveil.policy.engine`` for where policy files come from, how operators override
them, and why decisions can be memoised; ``mailveil.policy.facts`` builds the inputs.
"""

from mailveil.policy.engine import (
    Decision,
    Explanation,
    PolicyEngine,
    PolicyError,
    PolicyInput,
)

__all__ = ["Decision", "Explanation", "PolicyEngine", "PolicyError", "PolicyInput"]
