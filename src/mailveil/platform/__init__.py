"""The relay as the marketplace's messaging platform (issue 18): contact reasons by order
state, message events (export and signed webhook), sellers' response times."""
