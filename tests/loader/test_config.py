"""Configuration: larcv PSet text, YAML, dicts; the seed's example; unknown keys."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from conftest import data_path
from loader_testdata import write_file

from tpcflow.errors import ConfigError, DataFormatError, ProductNotFoundError
from tpcflow.io import open_larcv3
from tpcflow.loader import ThreadProcessor, cosmic_tagger_config, load_processor_config, parse_pset

# The example of the ThreadProcessor wiki page (seed 004), verbatim.
SEED_PSET = """
ThreadProcessor: {
  Verbosity: 2
  EnableFilter: false
  RandomAccess: false
  InputFiles: ["copy00.root"]
  ProcessType: ["BatchFillerImage2D","BatchFillerImage2D"]
  ProcessName: ["test","label"]
  NumThreads: 6
  NumStorage: 6
  ProcessList: {
    test: {
      CaffeMode: false
      Verbosity: 2
      ImageProducer: "data"
      Channels: [0,1,2]
    }
    label: {
      CaffeMode: false
      Verbosity: 2
      ImageProducer: "segment"
      Channels: [0,1,2]
    }
  }
}
"""


def test_parse_pset_values_and_nesting():
    got = parse_pset('A: { b: 1  c: -2.5e1 d: [x, "y z", 3] e: { f: true } g: "false" } # comment\n')
    assert got == {"A": {"b": 1, "c": -25.0, "d": ["x", "y z", 3], "e": {"f": True}, "g": "false"}}


@pytest.mark.parametrize(
    "text, where",
    [("A: { b: 1", "missing '}'"), ("A: { b: 1 b: 2 }", "given twice"), ("A: { b: }", "line 1"), ("A: {\n b [", "line 2")],
)
def test_parse_pset_errors_say_where(text, where):
    with pytest.raises(ConfigError, match=where.replace("[", r"\[")):
        parse_pset(text)


def test_seed_pset_parses_as_given():
    cfg = load_processor_config(SEED_PSET)
    assert cfg.name == "ThreadProcessor"
    assert cfg.input_files == ("copy00.root",)
    assert (cfg.num_threads, cfg.num_storage, cfg.random_access, cfg.enable_filter) == (6, 6, 0, False)
    assert [(f.name, f.process_type) for f in cfg.fillers] == [("test", "BatchFillerImage2D"), ("label", "BatchFillerImage2D")]
    assert cfg.fillers[0].params == {"CaffeMode": False, "Verbosity": 2, "ImageProducer": "data", "Channels": [0, 1, 2]}


def test_seed_pset_runs_on_a_file_with_its_producers(tmp_path):
    path = write_file(tmp_path / "copy00.h5", 5, seed=3)
    cfg_file = tmp_path / "seed.cfg"
    cfg_file.write_text(SEED_PSET.replace("copy00.root", str(path)))
    reader = open_larcv3(path)
    # NumThreads 6 as given would oversubscribe the 2-core test machine; threads read the same data
    with ThreadProcessor(cfg_file, num_threads=2, worker_type="thread") as proc:
        proc.start_manager(2)
        for _ in range(3):
            sid = proc.next_filled(timeout=60)
            for b, e in enumerate(proc.entries(sid)):
                ev = reader.read(int(e))
                for name, key in (("test", "image2d/data"), ("label", "image2d/segment")):
                    want = np.stack([img.data for img in ev.products[key]])
                    np.testing.assert_array_equal(proc.batch_data(sid, name)[b], want)
            proc.release_data(sid)


def test_yaml_dict_and_pset_give_the_same_config(tmp_path):
    d = cosmic_tagger_config(["a.h5", "b.h5"], downsample=2, num_threads=1)
    from_dict = load_processor_config(d)
    y = tmp_path / "c.yaml"
    y.write_text(yaml.safe_dump(d))
    assert load_processor_config(y) == from_dict
    assert load_processor_config(yaml.safe_dump(d)) == from_dict
    assert load_processor_config(from_dict.to_dict()) == from_dict
    assert load_processor_config(d["ThreadProcessor"]) == from_dict


@pytest.mark.parametrize(
    "patch, match",
    [
        ({"NumThread": 2}, "NumThreads"),
        ({"RandomAccess": 3}, "RandomAccess"),
        ({"NumStorage": 0}, "NumStorage"),
        ({"ProcessName": ["image"]}, "ProcessName has 1"),
        ({"ProcessType": ["BatchFillerSparseToDense2D", "BatchFillerSparseToDens2D"]}, "BatchFillerSparseToDense2D"),
    ],
)
def test_bad_keys_raise_config_error(patch, match):
    d = cosmic_tagger_config(["a.h5"])
    d["ThreadProcessor"].update(patch)
    with pytest.raises(ConfigError, match=match):
        load_processor_config(d)


def test_unknown_filler_key_names_the_filler():
    d = cosmic_tagger_config(["a.h5"])
    d["ThreadProcessor"]["ProcessList"]["image"]["Downsampel"] = 1
    with pytest.raises(ConfigError, match=r"'Downsampel'.*'image'(.|\n)*Downsample"):
        load_processor_config(d)


def test_bad_dtype_rejected():
    d = cosmic_tagger_config(["a.h5"])
    d["ThreadProcessor"]["ProcessList"]["label"]["DataType"] = "int16"
    with pytest.raises(ConfigError, match="float32, float64, int32, int64, uint8"):
        load_processor_config(d)


def test_missing_producer_fails_at_configure_listing_products(tmp_path):
    path = write_file(tmp_path / "f.h5", 2, seed=1)
    d = cosmic_tagger_config([path], image_producer="sbndwir", num_threads=1)
    with pytest.raises(ProductNotFoundError) as info:
        ThreadProcessor(d)
    msg = str(info.value)
    assert "sparse2d/sbndwir" in msg and "'sparse2d/sbndwire'" in msg and str(path) in msg


def test_missing_config_file():
    with pytest.raises(ConfigError, match="not found"):
        load_processor_config("no/such/file.cfg")


def test_files_on_different_grids_are_refused_not_squeezed(tmp_path):
    """Issue 16, item 2: the real SBND file (2048x1280) beside synthetic events at downsample 3 (256x160)."""
    from tpcflow.sim.sbnd import generate_file

    real = data_path("larcv3/cosmic_tagging_light.h5")
    small = generate_file(tmp_path / "small.h5", 1, 0, downsample=3)
    with pytest.raises(DataFormatError, match=r"\(2048, 1280\).*small.h5 of \[\(256, 160\)") as info:
        ThreadProcessor(cosmic_tagger_config([real, small], num_threads=1))
    assert "one minibatch has one grid" in str(info.value)
