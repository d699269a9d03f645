"""Inference services: the MDP/0.2 broker, workers and clients, the tensor codec, the HTTP server.

* :mod:`tpcflow.serve.codec`: tensors as a small header frame plus raw buffers (dense, sparse COO,
  optionally lz4/zstd compressed).
* :mod:`tpcflow.serve.mdp`: ZeroMQ Majordomo (RFC 18, MDP/0.2) broker, worker, client, CurveZMQ
  security, dynamic batching and the cosmic-tagger payload convention.
* :mod:`tpcflow.serve.http`: the HTTP model server (TFaaS routes and KServe v2).

``serve`` never imports ``tpcflow.train``; torch is imported only where a model runs.
"""
