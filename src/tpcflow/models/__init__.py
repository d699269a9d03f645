"""UResNet networks (dense 2D, 3D, sparse), the segmentation loss and CosmicTagger's metrics.

* :mod:`tpcflow.models.registry`: ``NetworkConfig``, ``PRESETS``, ``build_network``,
  ``count_parameters``.
* :mod:`tpcflow.models.checkpoint`: the one checkpoint format: ``save_checkpoint``,
  ``read_checkpoint``, ``check_compatible``, ``restore_model``, ``load_model``.
* :mod:`tpcflow.models.uresnet`: the dense 2D UResNet (CosmicTagger master).
* :mod:`tpcflow.models.uresnet3d`: the 3D variant (``[1, k, k]`` kernels, planes on depth).
* :mod:`tpcflow.models.sparse`: pure-torch submanifold sparse convolutions and the sparse UResNet.
* :mod:`tpcflow.models.loss`: ``SegmentationLoss`` (none / light / even / focal).
* :mod:`tpcflow.models.metrics`: ``segmentation_metrics`` (CosmicTagger's metric definitions).

Submodules are imported on demand; this package itself imports nothing heavy.
"""
