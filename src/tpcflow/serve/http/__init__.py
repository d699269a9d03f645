"""HTTP model server: TFaaS-compatible routes and the KServe v2 protocol (FastAPI + uvicorn).

``create_app(settings)`` in :mod:`.app`; the Python client in :mod:`.client`.
Import submodules directly; this package imports nothing heavy.
"""
