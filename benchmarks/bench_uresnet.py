"""Benchmark the UResNet networks: dense baseline vs fast settings, sparse vs dense at full resolution.

Run: ``python benchmarks/bench_uresnet.py`` (about 10 minutes on 2 CPU cores) or ``--quick``.

Figures (batch 1, img/s of train steps = forward + focal loss + backward + Adam step, and of
inference = eval-mode forward without gradients; peak memory per image):

1. Dense UResNet (default preset, 18.4 M parameters) at 640x1024 (CosmicTagger's downsample=1):
   baseline = the reference's way (float32, NCHW, eager, planes one after the other);
   fast = planes stacked in the batch, channels_last, bfloat16 autocast (+ ``torch.compile`` with
   ``--compile``; off by default: on this CPU inductor took 245 s to compile the training step at
   320x512 and the compiled step was slower, 5.1 s against 1.9 s eager).
2. Full resolution 1280x2048 on a synthetic SBND event (``tpcflow.sim.sbnd.generate_event``,
   about 0.5-0.7% occupied; random 0.7% occupancy if the generator is missing): the sparse
   network vs the dense network of the same configuration.  The ``a21`` preset is used for
   this pair because the dense default preset does not fit in memory at full resolution here
   (about 40 GB of activations; the reference quotes > 10 GB even at half resolution).
3. The sparse default preset at full resolution, against the dense default at 640x1024.
4. End to end (issue 14; ``--e2e`` runs these alone, about 10 minutes): the training steps of
   ``tpcflow train`` (``tpcflow.train.loop.train``) of the sparse ``a21`` and default networks at
   full resolution, from synthetic events (``data.synthetic=true data.downsample=0``) and from a
   larcv3 file through the loader (``data.file``), float32, batch 1; each step: the loader's voxel
   minibatch, forward, loss, metrics, backward, Adam, logging; against the network-only step
   (``forward_sparse``, focal loss, backward, Adam) on the same minibatches in the same process;
   the first step of each is warm-up.  Synthetic events differ in occupancy, so only the same
   events make a fair ratio.
5. End to end: ``tpcflow inference`` (``tpcflow.train.inference.infer``) of a sparse a21 checkpoint over
   synthetic full-resolution events, the whole command (reading, the network on its voxels, writing
   the predictions), against the network-only ``forward_sparse`` on the same events; steady state
   from the first event written to the last (the loader's start, about 2 s, is reported apart).
6. End to end: ``tpcflow submit`` of the same kind of events through ``tpcflow worker --bind`` (a hosted
   broker; the sparse checkpoint served on its voxels, one event per batch), after one warm-up
   event, against the worker's own network call (``PooledPredictor.predict_voxels``) on the same
   events in this process.

7. The outside anchor (``--cosmictagger DIR``, a CosmicTagger checkout): its own dense A21 train
   step at 640x1024 (:func:`run_cosmictagger_case`, run from a scratch copy), against ``tpcflow
   train`` of the sparse a21 network at full resolution (case 4).

Each case runs in its own process, so that its peak RSS (``ru_maxrss``; on GPU
``torch.cuda.max_memory_allocated``) is its own; the memory figure is the peak minus the RSS
before the network was built.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

FULL = (1280, 2048)
HALF = (640, 1024)


def _event(shape, seed=0):
    """(image [1,3,H,W] float32, labels [1,3,H,W] int64) in CosmicTagger layout, from the generator."""
    import numpy as np
    import torch

    downsample = {FULL: 0, HALF: 1}[shape]
    try:
        from tpcflow.sim.sbnd import generate_event
    except ImportError:  # pragma: no cover - generator not available
        generate_event = None
    h, w = shape
    if generate_event is None:
        g = torch.Generator().manual_seed(seed)
        image = torch.rand(1, 3, h, w, generator=g) * (torch.rand(1, 3, h, w, generator=g) < 0.007)
        labels = torch.randint(1, 3, (1, 3, h, w), generator=g) * (image > 0)
        return image, labels.long(), "random 0.7% occupancy"
    ev = generate_event(np.random.default_rng(seed), downsample=downsample)
    image = np.zeros((1, 3, h, w), np.float32)
    labels = np.zeros((1, 3, h, w), np.int64)
    for p, (q, lab) in enumerate(zip(ev.products["sparse2d/sbndwire"], ev.products["sparse2d/sbnd_cosmicseg"])):
        wi, hi = np.unravel_index(q.index.astype(np.int64), q.meta.number_of_voxels)  # dense[w, h]
        image[0, p, hi, wi] = q.values
        labels[0, p, hi, wi] = lab.values.astype(np.int64)
    return torch.from_numpy(image), torch.from_numpy(labels), "tpcflow.sim.sbnd.generate_event"


def _peak_bytes(device) -> int:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_case(name: str, iters: int, warmup: int, compile_: bool) -> dict:
    """Run one case in this process and return its figures."""
    import torch

    from tpcflow.models.loss import SegmentationLoss
    from tpcflow.models.registry import PRESETS, build_network, count_parameters

    kind, res, preset, mode = name.split("-")  # e.g. dense-half-uresnet-basetrain
    shape = FULL if res == "full" else HALF
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    image, labels, source = _event(shape)
    occupancy = float((image != 0).float().mean())
    fast = mode.startswith("fast")
    train = mode.endswith("train")
    cfg = PRESETS[preset].replace(conv_mode="sparse" if kind == "sparse" else "2D", stack_planes=fast)
    before = _peak_bytes(device) if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    torch.manual_seed(0)
    net = build_network(cfg).to(device)
    image, labels = image.to(device), labels.to(device)
    if fast:
        net = net.to(memory_format=torch.channels_last)
        image = image.contiguous(memory_format=torch.channels_last)
    model = torch.compile(net) if (compile_ and fast) else net
    loss_fn = SegmentationLoss("focal")
    opt = torch.optim.Adam(net.parameters(), lr=3e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast)

    if kind == "sparse":
        planes, voxel_labels = [], []
        for p in range(3):
            c = image[0, p].nonzero()
            coords = torch.cat([torch.zeros_like(c[:, :1]), c], dim=1)
            planes.append((coords, image[0, p][c[:, 0], c[:, 1]][:, None]))
            voxel_labels.append(labels[0, p][c[:, 0], c[:, 1]])

        def forward():
            return net.forward_sparse(planes, 1, shape)

        target = voxel_labels
    else:
        def forward():
            return model(image)

        target = labels

    def step():
        if train:
            opt.zero_grad(set_to_none=True)
            with autocast:
                out = forward()
            loss = loss_fn(out, target)
            loss.backward()
            opt.step()
        else:
            with torch.no_grad(), autocast:
                forward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    net.train(train)
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    warm_s = time.perf_counter() - t0
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    peak = _peak_bytes(device) - before
    best = min(times)
    mean = sum(times) / len(times)
    return {
        "case": name, "img_s": 1.0 / mean, "best_img_s": 1.0 / best, "step_s": times, "warmup_s": warm_s,
        "peak_gb": peak / 1e9, "params": count_parameters(net), "occupancy": occupancy, "source": source,
        "device": str(device), "threads": torch.get_num_threads(), "compiled": bool(compile_ and fast),
    }


def run_train_case(name: str, iters: int) -> dict:
    """``tpcflow train`` of a sparse network at full resolution (``train-full-<preset>-sparse-<source>``:
    preset a21 or uresnet, source ``synthetic`` = ``data.synthetic=true``, ``file`` = a larcv3 file of
    synthetic events given as ``data.file``), in this process, against the network-only step
    (forward_sparse + focal loss + backward + Adam) on the same voxel minibatches."""
    import tempfile
    from pathlib import Path

    import torch

    import tpcflow.train.loop as loop
    from tpcflow.config import DataConfig, load_config
    from tpcflow.models.loss import SegmentationLoss
    from tpcflow.sim.sbnd import generate_file
    from tpcflow.train.data import FileSource

    _, _, preset, _, source_kind = name.split("-")
    step_times = []
    timed = loop._step

    def step(run):
        t = time.perf_counter()
        out = timed(run)
        step_times.append(time.perf_counter() - t)
        return out

    loop._step = step
    with tempfile.TemporaryDirectory() as out:
        if source_kind == "file":
            data = [f"data.file={generate_file(Path(out) / 'events.h5', iters + 1, 11, downsample=0)}",
                    "data.synthetic=false"]
        else:
            data = ["data.synthetic=true", f"data.synthetic_events={iters + 1}"]
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        cfg = load_config([
            f"network={preset}", "network.conv_mode=sparse", *data, "data.downsample=0",
            "data.shuffle=false", "run.minibatch_size=1", f"run.iterations={iters + 1}",
            "run.aux_iterations=0", f"mode.checkpoint_iteration={iters + 1}", "run.progress=false",
            f"run.output_dir={out}", "run.id=bench"])
        result = loop.train(cfg, echo=lambda *_a, **_k: None)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
        # the network alone on the same voxel minibatches, in the same order (no shuffling in either run)
        files = ([Path(cfg.data.file)] if source_kind == "file"
                 else sorted((result.run_dir / "synthetic").glob("*.h5")))
        source = FileSource(files, DataConfig(file=str(files[0]), downsample=0, num_threads=1), 1, cycle=True,
                            shuffle=False, sparse=True)
        batches = [next(source)["voxels"] for _ in range(iters + 1)]
        source.close()
    net = result.model
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=3e-4)
    loss_fn = SegmentationLoss("focal")
    net_times = []
    for batch in batches:
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net.forward_sparse(batch.planes(), batch.batch_size, batch.shape), batch.labels)
        loss.backward()
        opt.step()
        net_times.append(time.perf_counter() - t)
    e2e, alone = sum(step_times[1:]), sum(net_times[1:])  # the first step of each warms up
    return {"case": name, "img_s": len(step_times[1:]) / e2e, "best_img_s": 1 / min(step_times[1:]),
            "step_s": step_times[1:], "warmup_s": step_times[0], "peak_gb": peak / 1e9, "params": result.n_parameters,
            "occupancy": float(sum(bt.voxels for bt in batches) / (len(batches) * 3 * 1280 * 2048)),
            "source": f"tpcflow train, {source_kind}", "device": "cpu", "threads": torch.get_num_threads(),
            "compiled": False, "network_only_img_s": len(net_times[1:]) / alone, "network_only_step_s": net_times[1:]}


def run_cosmictagger_case(repo: str, iters: int) -> dict:
    """CosmicTagger's own dense A21 network and loss (``src/networks/torch/uresnet2D.py``,
    ``LossCalculator.py``), copied from a checkout ``repo`` into a scratch folder, one train step
    (forward, its focal loss, backward, Adam) per synthetic 640x1024 event, float32, batch 1.

    Only hydra's ``ConfigStore`` (registration of the config dataclasses, not installed here) is
    replaced by a stand-in; the network, its config dataclass and the loss run as they are.
    """
    import shutil
    import tempfile
    import types

    import torch

    with tempfile.TemporaryDirectory() as scratch:
        shutil.copytree(os.path.join(repo, "src"), os.path.join(scratch, "src"))
        hydra = types.ModuleType("hydra")
        core = types.ModuleType("hydra.core")
        store = types.ModuleType("hydra.core.config_store")

        class ConfigStore:  # hydra's registry of config nodes: nothing to register for a benchmark
            @classmethod
            def instance(cls):
                return cls()

            def store(self, *_a, **_k):
                pass

        store.ConfigStore = ConfigStore
        sys.modules.update({"hydra": hydra, "hydra.core": core, "hydra.core.config_store": store})
        sys.path.insert(0, scratch)
        from src.config import LossBalanceScheme
        from src.config.network import A21
        from src.networks.torch.LossCalculator import LossCalculator
        from src.networks.torch.uresnet2D import UResNet

        params = A21()
        torch.manual_seed(0)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        net = UResNet(params)
        net.train()
        opt = torch.optim.Adam(net.parameters(), lr=3e-4)
        loss_fn = LossCalculator(LossBalanceScheme.focal)
        events = [_event(HALF, seed) for seed in range(iters + 1)]
        times = []
        for image, labels, _src in events:
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            logits = net(image)
            loss = loss_fn(labels=[labels[:, p] for p in range(3)], logits=logits)  # its trainer's per-plane split
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
        n_params = sum(p.numel() for p in net.parameters())
    return {"case": "cosmictagger-half-a21-train", "img_s": len(times[1:]) / sum(times[1:]),
            "best_img_s": 1 / min(times[1:]), "step_s": times[1:], "warmup_s": times[0], "peak_gb": peak / 1e9,
            "params": n_params, "occupancy": float(sum(float((e[0] != 0).float().mean()) for e in events) / len(events)),
            "source": f"CosmicTagger {repo}", "device": "cpu", "threads": torch.get_num_threads(), "compiled": False}


def _sparse_a21_setup(tmp, n: int):
    """A sparse a21 checkpoint (untrained, seed 0, trained resolution the full grid) and a larcv3 file of ``n``
    synthetic full-resolution events in ``tmp``; returns ``(network config, checkpoint, events file)``."""
    import torch

    from tpcflow.models.checkpoint import data_section, save_checkpoint
    from tpcflow.models.registry import PRESETS, build_network
    from tpcflow.sim.sbnd import generate_file

    cfg_net = PRESETS["a21"].replace(conv_mode="sparse")
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp / "a21.ckpt", build_network(cfg_net).eval(), cfg_net,
                           extra={"data": data_section(0, FULL)})
    return cfg_net, ckpt, generate_file(tmp / "events.h5", n, 7, downsample=0)


def run_infer_case(iters: int) -> dict:
    """``tpcflow inference`` of a sparse a21 checkpoint over synthetic full-resolution events (events/s, whole
    command: reading, the network, writing predictions), against the network-only forward on the same events."""
    import tempfile
    from pathlib import Path

    import numpy as np
    import torch

    from tpcflow.config import DataConfig, load_config
    from tpcflow.models.registry import build_network
    from tpcflow.models.runtime import TorchRunner
    from tpcflow.train.data import FileSource
    from tpcflow.train.inference import infer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg_net, ckpt, events = _sparse_a21_setup(tmp, iters + 1)
        cfg = load_config([f"data.file={events}", "data.synthetic=false", "data.downsample=0",
                           f"mode.weights_location={ckpt}", "run.minibatch_size=1", "mode.event_displays=0",
                           "run.progress=false", f"run.output_dir={tmp}", "run.id=infer", "network=a21",
                           "network.conv_mode=sparse"], mode="inference")
        import tpcflow.io as tio

        written = []
        write = tio.Larcv3Writer.write

        def timed_write(self, event):  # the steady state: from the first event written to the last
            write(self, event)
            written.append(time.perf_counter())

        tio.Larcv3Writer.write = timed_write
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        t0 = time.perf_counter()
        result = infer(cfg, echo=lambda *_a, **_k: None)
        wall = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
        tio.Larcv3Writer.write = write
        steady = (len(written) - 1) / (written[-1] - written[0])
        source = FileSource([events], DataConfig(file=str(events), downsample=0, num_threads=1), 1, cycle=False,
                            shuffle=False, labels=False, sparse=True)
        batches = [b["voxels"] for b in source]
        source.close()
    runner = TorchRunner(build_network(cfg_net), device="cpu")
    times = []
    for batch in batches:
        t = time.perf_counter()
        runner.forward_sparse(batch.planes(), batch.batch_size, batch.shape)
        times.append(time.perf_counter() - t)
    alone = len(times[1:]) / sum(times[1:])
    return {"case": "infer-full-a21-sparse", "img_s": steady, "best_img_s": steady,
            "step_s": list(np.diff(written)), "warmup_s": written[0] - t0, "peak_gb": peak / 1e9,
            "command_img_s": result.images_per_second,
            "params": 0, "occupancy": float(sum(b.voxels for b in batches) / (len(batches) * 3 * FULL[0] * FULL[1])),
            "source": "tpcflow inference, synthetic", "device": "cpu", "threads": torch.get_num_threads(),
            "compiled": False, "network_only_img_s": alone, "network_only_step_s": times[1:], "wall_s": wall}


def run_submit_case(iters: int) -> dict:
    """``tpcflow submit`` of synthetic full-resolution events through ``tpcflow worker --bind`` (a hosted broker)
    serving a sparse a21 checkpoint, events/s, against the network-only forward on the same events."""
    import socket
    import tempfile
    from pathlib import Path

    import torch

    from tpcflow.io import open_larcv3
    from tpcflow.models.checkpoint import data_section
    from tpcflow.models.registry import build_network
    from tpcflow.models.runtime import TorchRunner
    from tpcflow.serve.mdp.cosmic import decode_request, encode_request
    from tpcflow.serve.mdp.service import PooledPredictor
    from tpcflow.serve.mdp.submit import submit_files
    from tpcflow.sim.sbnd import generate_file

    n = iters + 1
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg_net, ckpt, events = _sparse_a21_setup(tmp, n)
        warm = generate_file(tmp / "warm.h5", 1, 8, downsample=0)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        endpoint = f"tcp://127.0.0.1:{port}"
        worker = subprocess.Popen([sys.executable, "-m", "tpcflow.cli.main", "worker", "--bind", endpoint, "--model",
                                   str(ckpt), "--max-batch", "1", "--device", "cpu"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())})
        try:
            submit_files(endpoint, "cosmic_tagger", [warm], tmp / "warm_out.h5", progress=False)  # loads the network
            t0 = time.perf_counter()
            result = submit_files(endpoint, "cosmic_tagger", [events], tmp / "out.h5", progress=False)
            wall = time.perf_counter() - t0
        finally:
            worker.terminate()
            worker.wait(timeout=30)
        worker_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # the largest child: the worker
        with open_larcv3(events) as reader:
            planes = [reader.read(e).products["sparse2d/sbndwire"] for e in range(n)]
    runner = TorchRunner(build_network(cfg_net), device="cpu")
    predictor = PooledPredictor(runner, data_section(0, FULL))
    times = []
    for ev in planes:
        _, decoded = decode_request([bytes(f) for f in encode_request(None, ev)])
        t = time.perf_counter()
        predictor.predict_voxels([decoded], decoded[0].shape)
        times.append(time.perf_counter() - t)
    alone = len(times[1:]) / sum(times[1:])
    sent = result.sent
    return {"case": "submit-full-a21-sparse", "img_s": sent / wall, "best_img_s": sent / wall, "step_s": [wall / sent],
            "warmup_s": times[0], "peak_gb": worker_peak / 1e9, "params": 0, "occupancy": float("nan"),
            "source": "tpcflow submit through a hosted worker, synthetic", "device": "cpu",
            "threads": torch.get_num_threads(), "compiled": False, "network_only_img_s": alone,
            "network_only_step_s": times[1:], "wall_s": wall}


def _event_arrays(ev):
    import numpy as np

    (h, w) = ev.products["sparse2d/sbndwire"][0].meta.number_of_voxels[::-1]
    image = np.zeros((3, h, w), np.float32)
    labels = np.zeros((3, h, w), np.int64)
    for p, (q, lab) in enumerate(zip(ev.products["sparse2d/sbndwire"], ev.products["sparse2d/sbnd_cosmicseg"])):
        wi, hi = np.unravel_index(q.index.astype(np.int64), q.meta.number_of_voxels)
        image[p, hi, wi] = q.values
        labels[p, hi, wi] = lab.values.astype(np.int64)
    return image, labels


def demo_task(steps: int, downsample: int = 3) -> dict:
    """Train the same small network dense and sparse on synthetic events; metrics on held-out events."""
    import torch

    from tpcflow.models.loss import SegmentationLoss
    from tpcflow.models.metrics import segmentation_metrics
    from tpcflow.models.registry import NetworkConfig, build_network
    from tpcflow.sim.sbnd import generate_events

    train = [_event_arrays(ev) for ev in generate_events(16, seed=1, downsample=downsample)]
    test = [_event_arrays(ev) for ev in generate_events(8, seed=2, downsample=downsample)]
    cfg = NetworkConfig(name="demo", n_initial_filters=8, network_depth=5, blocks_per_layer=1,
                        blocks_deepest_layer=2, blocks_final=1, bottleneck_deepest=32, residual=True,
                        connections="sum")
    results = {}
    for mode in ("2D", "sparse"):
        torch.manual_seed(0)
        net = build_network(cfg.replace(conv_mode=mode, stack_planes=True))
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        loss_fn = SegmentationLoss("focal")
        t0 = time.perf_counter()
        for i in range(steps):
            image, labels = train[i % len(train)]
            x = torch.from_numpy(image)[None] / 50.0
            y = torch.from_numpy(labels)[None]
            opt.zero_grad(set_to_none=True)
            if mode == "sparse":  # per-voxel loss (the fast path)
                planes, voxel_labels = [], []
                for p in range(3):
                    c = x[0, p].nonzero()
                    planes.append((torch.cat([torch.zeros_like(c[:, :1]), c], 1), x[0, p][c[:, 0], c[:, 1]][:, None]))
                    voxel_labels.append(y[0, p][c[:, 0], c[:, 1]])
                loss = loss_fn(net.forward_sparse(planes, 1, tuple(x.shape[2:])), voxel_labels)
            else:
                loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
        train_s = time.perf_counter() - t0
        net.eval()
        sums: dict[str, float] = {}
        with torch.no_grad():
            for image, labels in test:
                m = segmentation_metrics(net(torch.from_numpy(image)[None] / 50.0), torch.from_numpy(labels)[None])
                for k, v in m.items():
                    sums[k] = sums.get(k, 0.0) + v / len(test)
        results[mode] = {"train_s": train_s, "metrics": sums}
        keys = ("Average/Total_Accuracy", "Average/Non_Bkg_Accuracy", "Average/Cosmic_IoU", "Average/Neutrino_IoU",
                "Average/mIoU")
        print(f"# demo task {mode}: {steps} steps in {train_s:.1f} s; "
              + ", ".join(f"{k.split('/')[1]} {sums[k]:.3f}" for k in keys), flush=True)
    return results


def _launch(name, iters, warmup, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--case", name, "--iters", str(iters), "--warmup", str(warmup)]
    if args.cosmictagger:
        cmd += ["--cosmictagger", os.path.abspath(args.cosmictagger)]
    if args.compile:
        cmd.append("--compile")
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr, file=sys.stderr)
        raise SystemExit(f"case {name} failed (exit {proc.returncode})")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    steps = ", ".join(f"{s:.2f}" for s in result["step_s"])
    print(f"# {name}: {result['img_s']:.3f} img/s (steps {steps} s; warm-up {result['warmup_s']:.1f} s), "
          f"peak {result['peak_gb']:.2f} GB, {result['params']:,} params, occupancy {result['occupancy']:.4f}, "
          f"{result['device']} x{result['threads']} threads, wall {time.perf_counter() - t:.0f} s", flush=True)
    return result


def _bench(name, value, unit, baseline):
    ratio = value / baseline if baseline else float("nan")
    print(f"BENCH {name} {value:.4g} {unit} baseline={baseline:.4g} ratio={ratio:.2f}", flush=True)


def _end_to_end(args, iters: int) -> int:
    """Issue 14's cases: each tpcflow command against the network-only step in the same process, with the
    peak memory per image (batch 1) of each path; CosmicTagger's own A21 step as the outside anchor."""
    r = {}
    for preset in ("a21", "uresnet"):
        for source in ("synthetic", "file"):
            if preset == "uresnet" and args.quick:
                continue
            key = f"train-full-{preset}-sparse-{source}"
            r[key] = _launch(key, iters, 1, args)
            _bench(f"tpcflow_train_sparse_{preset}_1280x2048_{source}_vs_network_step", r[key]["img_s"], "img/s",
                   r[key]["network_only_img_s"])
    for kind, unit in (("infer", "events/s"), ("submit", "events/s")):
        key = f"{kind}-full-a21-sparse"
        r[key] = _launch(key, iters, 1, args)
        what = {"infer": "inference", "submit": "submit"}[kind]
        _bench(f"tpcflow_{what}_sparse_a21_1280x2048_vs_network_forward", r[key]["img_s"], unit,
               r[key]["network_only_img_s"])
    print("# peak memory per image (batch 1; RSS growth of the case's process, submit: the worker's peak RSS): "
          + ", ".join(f"{k} {v['peak_gb']:.2f} GB" for k, v in r.items()), flush=True)
    if args.cosmictagger:
        anchor = _launch("cosmictagger-half-a21-train", max(2, iters // 2), 1, args)
        ours = r["train-full-a21-sparse-synthetic"]
        _bench("tpcflow_train_sparse_a21_1280x2048_vs_cosmictagger_a21_640x1024_train", ours["img_s"], "img/s",
               anchor["img_s"])
        _bench("cosmictagger_a21_640x1024_train_peak_memory_per_image", anchor["peak_gb"], "GB", ours["peak_gb"])
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer iterations, skip the default-preset sparse run")
    parser.add_argument("--compile", action="store_true", help="add torch.compile to the fast dense settings")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    parser.add_argument("--demo-task", type=int, default=0, metavar="STEPS",
                        help="also train the same small network dense and sparse for STEPS steps on synthetic "
                             "160x256 events (downsample 3) and compare held-out metrics (0 = skip)")
    parser.add_argument("--e2e", action="store_true",
                        help="only the end-to-end cases of issue 14 (train, inference, submit) and the anchor")
    parser.add_argument("--cosmictagger", metavar="DIR",
                        help="a CosmicTagger checkout (git clone https://github.com/coreyjadams/CosmicTagger): adds "
                             "its own A21 train step at 640x1024 as the outside anchor (copied to a scratch folder)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--iters", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        if args.case.startswith("train-"):
            print(json.dumps(run_train_case(args.case, args.iters)))
        elif args.case.startswith("cosmictagger-"):
            print(json.dumps(run_cosmictagger_case(args.cosmictagger, args.iters)))
        elif args.case.startswith("infer-"):
            print(json.dumps(run_infer_case(args.iters)))
        elif args.case.startswith("submit-"):
            print(json.dumps(run_submit_case(args.iters)))
        else:
            print(json.dumps(run_case(args.case, args.iters, args.warmup, args.compile)))
        return 0

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.demo_task:
        d = demo_task(args.demo_task)
        _bench("demo_task_sparse_vs_dense_mIoU", d["sparse"]["metrics"]["Average/mIoU"], "mIoU",
               d["2D"]["metrics"]["Average/mIoU"])
        _bench("demo_task_sparse_vs_dense_train_time", d["sparse"]["train_s"], "s", d["2D"]["train_s"])
    q = args.quick
    it_dense, warm_dense, it_sparse = (1, 0, 3) if q else (2, 1, 5)
    if args.e2e:
        return _end_to_end(args, it_sparse)
    if args.compile:
        warm_dense = max(warm_dense, 1)  # compilation happens in the first step
    r = {}
    r["base_train"] = _launch("dense-half-uresnet-basetrain", it_dense, warm_dense, args)
    r["fast_train"] = _launch("dense-half-uresnet-fasttrain", it_dense, warm_dense, args)
    r["base_infer"] = _launch("dense-half-uresnet-baseinfer", it_dense, 1, args)
    r["fast_infer"] = _launch("dense-half-uresnet-fastinfer", it_dense, 1, args)
    # dense full resolution: one step (each step allocates ~10 GB afresh, so the first is typical)
    r["dfull_train"] = _launch("dense-full-a21-basetrain", 1, 0, args)
    r["dfull_infer"] = _launch("dense-full-a21-baseinfer", 1, 0 if q else 1, args)
    r["sfull_train"] = _launch("sparse-full-a21-basetrain", it_sparse, 1, args)
    r["sfull_infer"] = _launch("sparse-full-a21-baseinfer", it_sparse, 1, args)
    if not q:
        r["sfull_u_train"] = _launch("sparse-full-uresnet-basetrain", it_sparse, 1, args)
        r["sfull_u_infer"] = _launch("sparse-full-uresnet-baseinfer", it_sparse, 1, args)

    _bench("dense_uresnet_640x1024_train", r["fast_train"]["img_s"], "img/s", r["base_train"]["img_s"])
    _bench("dense_uresnet_640x1024_inference", r["fast_infer"]["img_s"], "img/s", r["base_infer"]["img_s"])
    _bench("dense_uresnet_640x1024_train_peak_memory_per_image", r["fast_train"]["peak_gb"], "GB",
           r["base_train"]["peak_gb"])
    _bench("sparse_vs_dense_a21_1280x2048_train", r["sfull_train"]["img_s"], "img/s", r["dfull_train"]["img_s"])
    _bench("sparse_vs_dense_a21_1280x2048_inference", r["sfull_infer"]["img_s"], "img/s", r["dfull_infer"]["img_s"])
    _bench("sparse_vs_dense_a21_1280x2048_train_peak_memory_per_image", r["sfull_train"]["peak_gb"], "GB",
           r["dfull_train"]["peak_gb"])
    _end_to_end(args, it_sparse)
    if not q:
        _bench("sparse_uresnet_1280x2048_vs_dense_uresnet_640x1024_train", r["sfull_u_train"]["img_s"], "img/s",
               r["base_train"]["img_s"])
        _bench("sparse_uresnet_1280x2048_vs_dense_uresnet_640x1024_inference", r["sfull_u_infer"]["img_s"],
               "img/s", r["base_infer"]["img_s"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
