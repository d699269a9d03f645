"""The service contract (issue 12): declared outputs, unchanged values, labels never wrapped,
--device/--precision through setup(), and a ROOT friend tree; on the real MicroBooNE file."""

from __future__ import annotations

import numpy as np
import pytest
import uproot
from conftest import data_path

from tpcflow.errors import ConfigError, ServiceError
from tpcflow.io import open_larcv3
from tpcflow.io.larcv_root import iterate_image2d
from tpcflow.serve.mdp.contract import COSMIC_TAGGER, Output, ServiceSpec, decode_outputs, encode_outputs, label_dtype
from tpcflow.serve.mdp.inprocess import segment_via_broker
from tpcflow.serve.mdp.service import load_service

SSNET = '''
import numpy as np
SERVICE = {"outputs": [{"name": "shower", "kind": "probabilities"}, {"name": "track", "kind": "probabilities"},
                       {"name": "cluster", "kind": "label", "classes": 400}]}
SEEN = {}

def setup(device, precision):
    SEEN.update(device=device, precision=precision)

def process_net(images):  # [B, P, H, W]
    x = np.asarray(images, np.float32)
    shower = 1.0 / (1.0 + np.exp(-(x - 30.0) / 10.0))
    return {"shower": shower, "track": 1.0 - shower, "cluster": np.minimum(x, 399).astype(np.int64)}
'''


def test_two_probability_outputs_and_a_wide_label_come_back_unchanged(tmp_path):
    src = data_path("larcv1/out_larcv_test.root")
    module = tmp_path / "ssnet.py"
    module.write_text(SSNET)
    out, friend = tmp_path / "pred.h5", tmp_path / "friend.root"
    segment_via_broker(module=module, inputs=[src], output=out, producer="wire", out_producer="ssnet",
                       progress=False, root_out=friend, device="cpu", precision="bf16")
    (entry,) = list(iterate_image2d(src, "wire"))
    with open_larcv3(out) as r:
        ev = r.read(0)
    with uproot.open(friend) as f:
        tree = f["predictions"]
        cols = tree.arrays(library="np")
    assert cols["run"].tolist() == [6324] and cols["event"].tolist() == [4707]
    for p, image in enumerate(entry.images):
        q = image.reshape(-1)
        nz = np.flatnonzero(q)
        shower = (1.0 / (1.0 + np.exp(-(q[nz] - 30.0) / 10.0))).astype(np.float32)
        for name, want in (("ssnet_shower", shower), ("ssnet_track", (1.0 - shower).astype(np.float32)),
                           ("ssnet_cluster", np.minimum(q[nz], 399).astype(np.int64).astype(np.float32))):
            got = ev.products[f"sparse2d/{name}"][p]
            np.testing.assert_array_equal(got.index, nz)
            np.testing.assert_allclose(got.values, want, rtol=1e-6)  # probabilities sent as they are: no softmax
            np.testing.assert_allclose(cols[f"{name}_p{p}"][0], want, rtol=1e-6)  # the friend tree agrees
        np.testing.assert_array_equal(cols[f"p{p}_index"][0], nz)
        assert ev.products["sparse2d/ssnet_cluster"][p].values.max() > 255  # 300-ish labels do not wrap


def test_labels_out_of_range_and_nan_are_errors_not_wraps():
    spec = ServiceSpec((Output("label", "label", classes=256),))
    assert label_dtype(256) == np.uint8 and label_dtype(300) == np.uint16 and label_dtype(70000) == np.int32
    with pytest.raises(ValueError, match=r"1 labels outside \[0, 256\)"):
        encode_outputs((1, 2, 3), {"label": [np.array([1, 300])]}, spec)
    with pytest.raises(ValueError, match="are not integers"):
        encode_outputs((1, 2, 3), {"label": [np.array([1.5])]}, spec)
    with pytest.raises(ValueError, match="2 of 3 values are NaN or inf"):
        encode_outputs(None, {"label": [np.array([0])], "score": [np.array([np.nan, 0.5, np.inf])]}, COSMIC_TAGGER)
    wide = ServiceSpec((Output("label", "label", classes=400), Output("score", "probabilities")))
    eid, outs = decode_outputs(encode_outputs((1, 2, 3), {"label": [np.array([300, 2])], "score": [np.array([0.7, 0.2])]}, wide))
    assert eid == (1, 2, 3) and outs["label"][0].tolist() == [300, 2] and outs["label"][0].dtype == np.uint16
    assert outs["score"][0].tolist() == pytest.approx([0.7, 0.2])  # not softmaxed again


def test_a_reply_breaking_the_contract_is_a_clear_service_error(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text("import numpy as np\nSERVICE = {'outputs': [{'name': 'label', 'kind': 'label', 'classes': 3}]}\n"
                      "def process_net(images):\n    return np.full(np.shape(images), 300)\n")
    src = data_path("larcv3/cosmic_tagging_light.h5")
    with pytest.raises(ServiceError, match=r"labels outside \[0, 3\)"):
        segment_via_broker(module=module, inputs=[src], output=tmp_path / "o.h5", progress=False)
    assert not (tmp_path / "o.h5").exists()


def test_setup_receives_device_and_precision_and_declarations_are_checked(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(SSNET)
    predict, spec = load_service(module_path=module, device="cpu", precision="bf16")
    import sys

    seen = sys.modules["tpcflow_user_m"].SEEN
    assert seen == {"device": "cpu", "precision": "bfloat16"}
    assert [o.name for o in spec.outputs] == ["shower", "track", "cluster"]
    plain = tmp_path / "plain.py"
    plain.write_text("def process_net(images):\n    return images\n")
    with pytest.warns(UserWarning, match="defines no setup"):
        load_service(module_path=plain, device="cuda:0")
    for bad, msg in (({"outputs": []}, "one or more"), ({"outputs": [{"name": "a1", "kind": "label"}]}, "name"),
                     ({"outputs": [{"name": "a", "kind": "labels"}]}, "kind"),
                     ({"outputs": [{"name": "a", "kind": "label"}]}, "classes"), ([1], "SERVICE must be")):
        with pytest.raises(ConfigError, match=msg):
            ServiceSpec.from_declaration(bad)


SPARSE = '''
import numpy as np
SERVICE = {"inputs": {"products": ["wire"], "planes": 3, "form": "sparse"},
           "outputs": [{"name": "double", "kind": "regression"}, {"name": "row", "kind": "label", "classes": 4000}]}

def process_net(events):  # per event, per plane (coords [N, 2] = (h, w), values [N])
    return {"double": [[2.0 * v for _, v in ev] for ev in events],
            "row": [[c[:, 0] for c, _ in ev] for ev in events]}
'''


def test_sparse_form_and_declared_planes(tmp_path):
    """form: sparse hands process_net the voxels themselves; a request with other planes is refused."""
    from tpcflow.io.products import image_coordinates

    module = tmp_path / "sparse.py"
    module.write_text(SPARSE)
    src = data_path("larcv1/out_larcv_test.root")
    out = tmp_path / "s.h5"
    segment_via_broker(module=module, inputs=[src], output=out, producer="wire", out_producer="s", progress=False)
    (entry,) = list(iterate_image2d(src, "wire"))
    with open_larcv3(out) as r:
        ev = r.read(0)
    for p, image in enumerate(entry.images):
        q = image.reshape(-1)
        nz = np.flatnonzero(q)
        np.testing.assert_array_equal(ev.products["sparse2d/s_double"][p].values, 2.0 * q[nz])
        h, _w = image_coordinates(nz, image.shape)  # the CosmicTagger layout of a (rows, cols) plane
        np.testing.assert_array_equal(ev.products["sparse2d/s_row"][p].values, h.astype(np.float32))
    with pytest.raises(ServiceError, match="request has 6 planes; this service takes 3"):
        segment_via_broker(module=module, inputs=[src], output=tmp_path / "t.h5", producer="wire,infill",
                           progress=False)
    with pytest.raises(ConfigError, match="form 'csr'"):
        ServiceSpec.from_declaration({"inputs": {"form": "csr"}, "outputs": [{"name": "a", "kind": "logits"}]})


def test_a_dict_without_service_declaration_is_a_clear_error(tmp_path):
    module = tmp_path / "undeclared.py"
    module.write_text("def process_net(images):\n    return {'shower': images}\n")
    with pytest.raises(ServiceError, match="declare its outputs in SERVICE"):
        segment_via_broker(module=module, inputs=[data_path("larcv3/cosmic_tagging_light.h5")],
                           output=tmp_path / "o.h5", progress=False)
