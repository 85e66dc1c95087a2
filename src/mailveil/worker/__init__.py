"""``mailveil worker``: Dramatiq consumers of ``notify_broker_url`` and the periodic jobs."""
