"""submit on the real MicroBooNE larcv1 file: ROOT image2d in, through a broker and a module worker,
larcv3 predictions out, equal to the module's own outputs at every pixel (issue 12)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_path

from tpcflow.errors import ConfigError, DataFormatError
from tpcflow.io import open_larcv3
from tpcflow.io.larcv_root import iterate_image2d
from tpcflow.io.larcv_root_reader import RootImageReader
from tpcflow.serve.mdp.inprocess import segment_via_broker

MODULE = '''
import numpy as np

def process_net(images):  # [B, P, H, W] -> logits [B, 3, P, H, W], a function of each pixel's charge
    x = np.asarray(images, dtype=np.float32)
    return np.stack([np.zeros_like(x), x - 20.0, 0.5 * x - 5.0], axis=1)
'''


def _expected(q: np.ndarray):
    logits = np.stack([np.zeros_like(q), q - 20.0, 0.5 * q - 5.0]).astype(np.float64)
    prob = np.exp(logits - logits.max(0))
    prob /= prob.sum(0)
    return prob.argmax(0), prob.max(0)


def test_larcv1_file_through_broker_and_module_worker(tmp_path):
    src = data_path("larcv1/out_larcv_test.root")
    module = tmp_path / "net.py"
    module.write_text(MODULE)
    out = tmp_path / "pred.h5"
    res = segment_via_broker(module=module, inputs=[src], output=out, producer="wire", out_producer="pred",
                             progress=False)
    assert (res.entries, res.sent) == (1, 1)
    (entry,) = list(iterate_image2d(src, "wire"))
    with open_larcv3(out) as r:
        assert r.event_ids.tolist() == [[6324, 94, 4707]]
        ev = r.read(0)
    labels, scores = ev.products["sparse2d/pred"], ev.products["sparse2d/pred_score"]
    assert len(labels) == 3
    for p, (image, lab, sc) in enumerate(zip(entry.images, labels, scores, strict=True)):
        nz = np.flatnonzero(image.reshape(-1))
        assert lab.meta.number_of_voxels == (1008, 3456) and lab.meta.projection_id == p
        np.testing.assert_array_equal(lab.index, nz)  # every non-zero pixel, in order
        want_label, want_score = _expected(image.reshape(-1)[nz])
        np.testing.assert_array_equal(lab.values, want_label)
        np.testing.assert_allclose(sc.values, want_score, rtol=1e-6)
        assert set(np.unique(lab.values)) == {0.0, 1.0, 2.0}  # all three branches are exercised


def test_root_reader_streams_entries_and_refuses_empty_planes(tmp_path):
    src = data_path("larcv2/example_larcv.root")
    reader = RootImageReader([src, src], "wire")
    assert len(reader) == 10 and reader.locate(7) == (src, 2)
    ids = [reader.read(e).event_id.as_tuple() for e in (0, 1, 2, 7, 8, 3)]  # forward, a jump, backward
    assert ids == [(1, 0, 1), (1, 0, 2), (1, 0, 3), (1, 0, 3), (1, 0, 4), (1, 0, 4)]
    planes = reader.read(0).products["image2d/wire"]
    (whole,) = list(iterate_image2d(src, "wire", entry_stop=1))
    np.testing.assert_array_equal(planes[1].to_dense(), whole.images[1])
    with pytest.raises(DataFormatError, match="out of range"):
        reader.locate(10)
    # an entry without images cannot be sent: a clear error naming the file and the entry
    empty = data_path("larcv1/out_larcv_test.root")
    module = tmp_path / "net.py"
    module.write_text(MODULE)
    with pytest.raises(DataFormatError, match=r"(?s)no projection.*out_larcv_test.root.*entry 0"):
        segment_via_broker(module=module, inputs=[empty], output=tmp_path / "x.h5", producer="ssnetshower",
                           progress=False)
    with pytest.raises(ConfigError, match="mix"):
        segment_via_broker(module=module, inputs=[empty, data_path("larcv3/cosmic_tagging_light.h5")],
                           output=tmp_path / "y.h5", producer="wire", progress=False)


def test_several_products_per_request_and_larcv3_image2d(tmp_path):
    """wire and infill of the MicroBooNE file in one request (6 planes); larcv3 image2d written by larcv 3.5.1."""
    module = tmp_path / "net.py"
    module.write_text(MODULE)
    src = data_path("larcv1/out_larcv_test.root")
    out = tmp_path / "two.h5"
    res = segment_via_broker(module=module, inputs=[src], output=out, producer="wire,infill", out_producer="pred",
                             progress=False)
    assert res.sent == 1
    (wire,) = list(iterate_image2d(src, "wire"))
    (infill,) = list(iterate_image2d(src, "infill"))
    with open_larcv3(out) as r:
        labels = r.read(0).products["sparse2d/pred"]
    assert len(labels) == 6
    for image, lab in zip(wire.images + infill.images, labels, strict=True):
        nz = np.flatnonzero(image.reshape(-1))
        np.testing.assert_array_equal(lab.index, nz)
        np.testing.assert_array_equal(lab.values, _expected(image.reshape(-1)[nz])[0])
    # larcv3 dense image2d (Tensor2D) input: its non-zero pixels are sent
    ref = data_path("larcv3/ref_tensor2d.h5")
    out3 = tmp_path / "t2d.h5"
    res = segment_via_broker(module=module, inputs=[ref], output=out3, producer="image2d/wire", out_producer="pred",
                             progress=False)
    with open_larcv3(ref) as src3, open_larcv3(out3) as r3:
        assert res.entries == len(src3) == len(r3) == 4
        np.testing.assert_array_equal(r3.event_ids, src3.event_ids)
        for entry in range(4):
            dense = src3.read(entry).products["image2d/wire"]
            got = r3.read(entry).products["sparse2d/pred"]
            for d, g in zip(dense, got, strict=True):
                flat = d.data.reshape(-1)
                nz = np.flatnonzero(flat)
                np.testing.assert_array_equal(g.index, nz)
                np.testing.assert_array_equal(g.values, _expected(flat[nz])[0])
    with pytest.raises(ConfigError, match="not sparse2d or image2d"):
        segment_via_broker(module=module, inputs=[ref], output=tmp_path / "z.h5", producer="cluster2d/x",
                           progress=False)


def test_a_resumed_submit_refuses_another_service(tmp_path):
    """Issue 16, item 3 (in part): the resume record names the service; another one is refused."""
    from tpcflow.errors import ServiceError
    from tpcflow.serve.mdp.sidecar import Sidecar

    module = tmp_path / "flaky.py"
    module.write_text("import numpy as np\nCALLS = [0]\n"
                      "def process_net(images):\n    CALLS[0] += 1\n"
                      "    if CALLS[0] > 2:\n        raise RuntimeError('GPU fell over')\n"
                      "    return (np.asarray(images) > 0).astype(np.int64)\n")
    src = data_path("larcv3/cosmic_tagging_light.h5")
    out = tmp_path / "o.h5"
    with pytest.raises(ServiceError, match="GPU fell over"):
        segment_via_broker(module=module, inputs=[src], output=out, service="tagger_a", max_batch=1,
                           progress=False)
    partial = out.with_name(out.name + ".partial")
    assert partial.is_dir()  # the finished entries are kept for a resume
    import json

    manifest = json.loads((partial / "manifest.json").read_text())
    assert manifest["service"] == "tagger_a"
    with pytest.raises(ConfigError, match=r"service differ: service='tagger_a' before"):
        Sidecar(out, dict(manifest, service="tagger_b"))


def test_a_resumed_submit_refuses_another_network_under_the_same_service(tmp_path):
    """Issue 16, item 3: the same service name served by another network after an interruption is refused,
    so that one output never mixes two networks' predictions; the same network resumes."""
    from tpcflow.errors import ProtocolError, ServiceError

    flaky, other, fail = tmp_path / "flaky.py", tmp_path / "other.py", tmp_path / "fail"
    body = "    return (np.asarray(images) > 0).astype(np.int64)\n"
    flaky.write_text(f"import os\nimport numpy as np\nCALLS = [0]\ndef process_net(images):\n    CALLS[0] += 1\n"
                     f"    if CALLS[0] > 2 and os.path.exists({str(fail)!r}):\n"
                     "        raise RuntimeError('GPU fell over')\n" + body)
    other.write_text("import numpy as np\ndef process_net(images):\n" + body.replace("> 0", ">= 0"))
    fail.touch()
    src = data_path("larcv3/cosmic_tagging_light.h5")
    out = tmp_path / "o.h5"
    with pytest.raises(ServiceError, match="GPU fell over"):
        segment_via_broker(module=flaky, inputs=[src], output=out, service="tagger", max_batch=1, progress=False)
    partial = out.with_name(out.name + ".partial")
    assert (partial / "model.txt").read_text().startswith("sha256:")
    with pytest.raises(ProtocolError, match=r"answered with model 'sha256:.*finished entries .* came from model"):
        segment_via_broker(module=other, inputs=[src], output=out, service="tagger", max_batch=1, progress=False)
    assert not out.exists()
    fail.unlink()  # the first network again, now healthy: it resumes
    res = segment_via_broker(module=flaky, inputs=[src], output=out, service="tagger", max_batch=1, progress=False)
    assert res.skipped >= 1 and out.exists()


def test_friend_tree_agrees_with_the_larcv3_output_over_chunks(tmp_path, monkeypatch):
    """The two outputs of one submit, the larcv3 file and the ROOT friend tree, agree entry by entry,
    also when the tree is written in several chunks."""
    import uproot

    from tpcflow.serve.mdp import submit as submit_module

    module = tmp_path / "net.py"
    module.write_text(MODULE)
    src = data_path("larcv3/cosmic_tagging_light.h5")
    out, friend = tmp_path / "o.h5", tmp_path / "f.root"
    real = submit_module._friend_tree
    monkeypatch.setattr(submit_module, "_friend_tree", lambda path, producer: real(path, producer, chunk=2))  # 3 chunks
    segment_via_broker(module=module, inputs=[src], output=out, out_producer="pred", progress=False, root_out=friend)
    with open_larcv3(out) as r, uproot.open(friend) as f:
        cols = f["predictions"].arrays(library="np")
        assert len(cols["run"]) == len(r) == 5
        np.testing.assert_array_equal(np.stack([cols["run"], cols["subrun"], cols["event"]], 1), r.event_ids)
        for e in range(len(r)):
            ev = r.read(e)
            for p, (lab, sc) in enumerate(zip(ev.products["sparse2d/pred"], ev.products["sparse2d/pred_score"],
                                              strict=True)):
                np.testing.assert_array_equal(cols[f"p{p}_index"][e], lab.index)
                np.testing.assert_array_equal(cols[f"pred_p{p}"][e], lab.values)
                np.testing.assert_array_equal(cols[f"pred_score_p{p}"][e], sc.values)
