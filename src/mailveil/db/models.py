"""Imports every area's models so Base.metadata is complete (Alembic, create_all)."""

from mailveil.access import models as _access_models  # noqa: F401
from mailveil.api import models as _api_models  # noqa: F401
from mailveil.auth import models as _auth_models  # noqa: F401
from mailveil.console import models as _console_models  # noqa: F401
from mailveil.contacts import models as _contacts_models  # noqa: F401
from mailveil.custody import models as _custody_models  # noqa: F401
from mailveil.db.base import Base
from mailveil.detect import models as _detect_models  # noqa: F401
from mailveil.incidents import models as _incident_models  # noqa: F401
from mailveil.ledger import models as _ledger_models  # noqa: F401
from mailveil.notify import models as _notify_models  # noqa: F401
from mailveil.ops import models as _ops_models  # noqa: F401
from mailveil.platform import models as _platform_models  # noqa: F401
from mailveil.relay import models as _relay_models  # noqa: F401
from mailveil.witness import models as _witness_models  # noqa: F401
from mailveil.worker import models as _worker_models  # noqa: F401

__all__ = ["Base"]
