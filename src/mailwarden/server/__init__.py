"""The HTTP side: one ASGI application serving every autoconfiguration endpoint."""
