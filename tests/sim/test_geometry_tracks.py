"""Detector geometry and trajectory building blocks of the synthetic generator."""

from __future__ import annotations

import numpy as np

from tpcflow.sim import geometry as geo
from tpcflow.sim.tracks import Segments, polylines, sample_points


def test_clip_to_box_entry_and_exit():
    start = np.array([[0.0, 300.0, 250.0], [0.0, 300.0, 250.0], [500.0, 300.0, 0.0]])
    d = np.array([[0.0, -1.0, 0.0], [1.0, -1.0, 0.0], [0.0, -1.0, 0.0]])
    s_in, s_out = geo.clip_to_box(start, d)
    np.testing.assert_allclose([s_in[0], s_out[0]], [100.0, 500.0])
    np.testing.assert_allclose([s_in[1], s_out[1]], [100.0, 200.0])  # leaves through x = +200
    assert s_out[2] <= s_in[2]  # misses the box


def test_projection_drift_and_wires():
    pts = np.array([[-200.0, 0.0, 0.0], [-1e-9, 0.0, 3.0], [1e-9, 0.0, 3.0], [199.9, 0.0, 499.0]])
    wire, tick = geo.project(pts, np.zeros(4))
    np.testing.assert_allclose(tick[:3], [0.0, 640.0, 640.0], atol=1e-5)  # anode at 0, cathode at 640
    assert 1279 < tick[3] <= 1280  # west anode at 1280
    np.testing.assert_allclose(wire[2], 191 + pts[:, 2] / 0.3)  # Y wires are vertical
    # an out-of-time particle shifted beyond its half of the readout is dropped
    _, late = geo.project(pts[:1], np.array([250.0]))
    assert np.isnan(late[0])
    # U and V swap between the mirrored TPCs
    w_e, _ = geo.project(np.array([[-10.0, 50.0, 100.0]]), np.zeros(1))
    w_w, _ = geo.project(np.array([[10.0, 50.0, 100.0]]), np.zeros(1))
    np.testing.assert_allclose(w_e[0] - geo.ACTIVE_WIRES[0][0], w_w[1] - geo.ACTIVE_WIRES[1][0])


def test_polylines_keep_length_and_start():
    rng = np.random.default_rng(0)
    start = np.array([[0.0, 0.0, 0.0], [10.0, 10.0, 10.0]])
    d = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    s0, s1, trk, res = polylines(rng, start, d, np.array([25.0, 7.0]), piece=2.0, sigma=0.05)
    seglen = np.linalg.norm(s1 - s0, axis=1)
    np.testing.assert_allclose(np.bincount(trk, seglen), [25.0, 7.0])
    np.testing.assert_allclose(s0[trk == 0][0], start[0])
    np.testing.assert_allclose(s0[trk == 1][0], start[1])
    np.testing.assert_allclose(s1[:-1][np.diff(trk) == 0], s0[1:][np.diff(trk) == 0])  # connected
    assert res[trk == 0][-1] == 0.0 and res[trk == 1][-1] == 0.0


def test_sample_points_charge_and_bragg_rise():
    rng = np.random.default_rng(1)
    mip = Segments.make([[0, 0, 0]], [[0, 0, 100.0]], dqdx=1.0)
    pts, q, lab, _ = sample_points(rng, mip, landau=0.0)
    assert pts.shape[0] == int(np.ceil(100 / 0.15))
    np.testing.assert_allclose(q.sum(), 100.0, rtol=1e-9)  # 1 MIP-cm per cm without fluctuations
    assert set(lab.tolist()) == {1}
    proton = Segments.make([[0, 0, 0]], [[0, 0, 10.0]], residual_end=0.0, bragg_a=17.0)
    _, qp, _, _ = sample_points(rng, proton, landau=0.0)
    assert np.all(np.diff(qp) > 0) and qp[-1] > 3 * qp[0]  # rises towards the stopping point
