"""tpcflow.sim: synthetic SBND-like events (numpy only).

* :mod:`tpcflow.sim.sbnd` -- ``generate_event``, ``generate_events``, ``generate_file``
* :mod:`tpcflow.sim.geometry` -- the two-TPC box and its three wire planes
* :mod:`tpcflow.sim.cosmics`, :mod:`tpcflow.sim.neutrino`, :mod:`tpcflow.sim.tracks` -- trajectories
* :mod:`tpcflow.sim.compare` -- statistics against a real file (``python -m tpcflow.sim.compare REAL.h5``)
"""

from tpcflow.sim.sbnd import generate_event, generate_events, generate_file

__all__ = ["generate_event", "generate_events", "generate_file"]
