"""tpcflow: particle-detector data from file to trained network to inference service.

Layers (imports point downward):

* ``tpcflow.io``: larcv3 HDF5, larcv2 ROOT and plain ROOT readers/writers (numpy, h5py, uproot).
* ``tpcflow.sim``: synthetic SBND-like events (numpy).
* ``tpcflow.loader``: ThreadProcessor batch loader and ROOT data generator.
* ``tpcflow.models``: UResNet networks (dense 2D, 3D, sparse), loss and metrics.
* ``tpcflow.train``: training, validation, inference, checkpoints.
* ``tpcflow.serve``: MDP/0.2 broker, workers, clients, tensor codec, HTTP model server.
* ``tpcflow.cli``: the ``tpcflow`` command.
"""

__version__ = "0.1.0"
