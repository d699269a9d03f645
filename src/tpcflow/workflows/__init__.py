"""Applications that combine training and serving: the layer between :mod:`tpcflow.cli` and below.

* :mod:`tpcflow.workflows.demo`: the stages of ``tpcflow demo`` (generate, train, evaluate,
  inference, serve, report).
* :mod:`tpcflow.workflows.root_train`: ``tpcflow root-train`` (MLaaS4HEP: ROOT TTrees -> a
  user's network -> TorchScript, specs and serving params, optional upload).
* :mod:`tpcflow.workflows.image_classify`: image classification from ROOT files for the HTTP
  server's ``/image`` route.
* :mod:`tpcflow.workflows.export`: trained networks exported for serving (TorchScript, JSON).

Nothing below this layer imports it; submodules are imported on demand.
"""
