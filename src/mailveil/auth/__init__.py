"""API keys and roles: who is calling, and what their role lets them reach."""
