"""Routers of the HTTP model server: one module per protocol."""
