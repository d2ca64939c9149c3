"""Benchmark: the training data pipeline (read + crop + augment), images per second.

Data: real faces, the 300-W training crops in ``../shared/data/300w_train_crops`` (JPEG + iBUG
``.pts``, about 300-450 px) when present, else the bundled HELEN sample written to a temporary
folder as JPEG + ``.pts`` (128 px), so the decode cost is always part of the measurement.

Pipelines, each a full pass over the same ``n`` faces through ``torch.utils.data.DataLoader``
(batch 16, as ``flmcore.train`` loads them), run in one process, alternating, median of the
repeats; ``w`` = DataLoader worker processes (0 = in the main process; worker start-up is
included, as in a training epoch):

* ``flmcore``      — ``flmcore.train._run._CropSet``: ``load_image`` + ``augmented_crop`` with
  the ``"flmcore"`` preset (flip, rotation, shift, scale, colour, blur, occlusion, grayscale) at
  256 x 256 px, w = 0, 1, 2;
* ``flmcore_none`` — the same with augmentation ``"none"`` (read + anti-aliased crop only), w = 0;
* ``pil_loop``     — the anchor: a plain PIL/NumPy loop (``Image.open``, ``convert("RGB")``,
  ``crop`` of the same square box, ``resize((256, 256), BILINEAR)``, ``np.asarray``; no
  augmentation, no EXIF, no points), w = 0, 1, 2.

Reported per pipeline: images per second (wall clock; inflated when other jobs load the machine)
and CPU milliseconds per image (this process and its finished workers, ``getrusage``; what the
work costs on an idle core).  It also times one CPU training step of the default model (PIPNet, MobileNetV2, 256 px, batch 16,
forward + backward + Adam, ``torch`` threads = 1) to show the pipeline is not the bottleneck.

Run: ``python -m bench.bench_data [--quick] [--n N]`` from the repository root.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

# shared, oversubscribed CPUs: let idle OpenMP workers sleep instead of spinning (before libgomp loads)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

from bench._common import median_times, print_table, write_json

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "300w_train_crops"
SIZE = 256
BATCH = 16


def load_faces(n: int, tmp: str):
    """``(LandmarkDataset of n real faces, source description)``."""
    from flmcore.datasets import LandmarkDataset

    if DATA.is_dir():
        ds = LandmarkDataset.from_folder(DATA, "ibug68")
        idx = np.random.default_rng(0).permutation(len(ds))[:n]
        return ds.subset(np.sort(idx)), f"300w_train_crops ({len(ds)} faces, {n} used)"
    from PIL import Image

    from flmcore.data import load_sample

    d = load_sample("helen_pairs")
    m = min(n, len(d["images"]))
    for i in range(m):
        Image.fromarray(d["images"][i]).save(os.path.join(tmp, f"f{i:03d}.jpg"), quality=92)
        with open(os.path.join(tmp, f"f{i:03d}.pts"), "w") as fh:
            fh.write("version: 1\nn_points: 68\n{\n")
            fh.writelines(f"{x + 1:.3f} {y + 1:.3f}\n" for x, y in d["shapes68"][i])
            fh.write("}\n")
    return LandmarkDataset.from_folder(tmp, "ibug68"), f"bundled helen_pairs sample as JPEG ({m} faces, 128 px)"


class PlainPIL:
    """The anchor: open, crop the same square box, resize with PIL (no augmentation)."""

    def __init__(self, ds, size, margin):
        self.files = ds.files
        b = ds.boxes
        c = (b[:, :2] + b[:, 2:]) / 2
        half = margin * np.max(b[:, 2:] - b[:, :2], 1) / 2
        self.boxes = np.round(np.concatenate([c - half[:, None], c + half[:, None]], 1)).astype(int)
        self.size = size

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        import torch
        from PIL import Image

        with Image.open(self.files[i]) as im:
            im = im.convert("RGB").crop(tuple(self.boxes[i])).resize((self.size, self.size), Image.BILINEAR)
            return torch.from_numpy(np.asarray(im).copy())


CPU_SECONDS = {}  # pipeline name -> CPU seconds (this process + its finished workers) of each pass


def _cpu_now() -> float:
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def cpu_timed(name, fn):
    """``fn`` recording the CPU time of each call (load-independent, unlike the wall time)."""
    def run():
        c0 = _cpu_now()
        out = fn()
        CPU_SECONDS.setdefault(name, []).append(_cpu_now() - c0)
        return out
    return run


def run_loader(dataset, workers: int) -> int:
    import torch

    n = 0
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=False, num_workers=workers,
                                         persistent_workers=False)
    for batch in loader:
        n += len(batch[0]) if isinstance(batch, (list, tuple)) else len(batch)
    return n


def train_step_time(repeat: int) -> float:
    """Median seconds of one PIPNet-MobileNetV2 training step (256 px, batch 16, 1 thread)."""
    import torch

    from flmcore.train._landmarker import build_network
    from flmcore.nn._pip import PIPLoss

    rng = np.random.default_rng(0)
    mean = rng.uniform(60, 196, (68, 2))
    net = build_network({"backbone": "mobilenetv2", "input_size": SIZE}, "ibug68", mean_shape=mean,
                        load_pretrained=False).to(memory_format=torch.channels_last)
    net.train()
    opt = torch.optim.Adam(net.parameters(), 1e-4)
    crit = PIPLoss(0.1, 0.1)
    x = torch.rand(BATCH, 3, SIZE, SIZE).contiguous(memory_format=torch.channels_last)
    pts = torch.as_tensor(mean[None] + rng.normal(0, 3, (BATCH, 68, 2)), dtype=torch.float32)

    def step():
        loss = crit(net(x), net.targets(pts, SIZE, device=x.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        step()  # warm-up
        wall, cpu = [], []
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), _cpu_now()
            step()
            wall.append(time.perf_counter() - t0)
            cpu.append(_cpu_now() - c0)
        return float(np.median(wall)), float(np.median(cpu))
    finally:
        torch.set_num_threads(saved)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_data", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="64 faces, 1 repeat")
    ap.add_argument("--n", type=int, default=None, help="faces per pass (default 256, quick 64)")
    ap.add_argument("--repeat", type=int, default=None, help="timed repeats (default 3, quick 1)")
    ap.add_argument("--no-train-step", action="store_true", help="skip timing the training step")
    ap.add_argument("--json", default=None, help="output JSON path (default bench/results/data.json)")
    args = ap.parse_args(argv)
    import torch

    from flmcore.augment import get_augmentation
    from flmcore.crop import DEFAULT_MARGIN
    from flmcore.train._run import _CropSet

    n = args.n or (64 if args.quick else 256)
    repeat = args.repeat or (1 if args.quick else 3)
    torch.set_num_threads(1)  # the pipeline is single-threaded per process; collation too
    with tempfile.TemporaryDirectory() as tmp:
        ds, source = load_faces(n, tmp)
        n = len(ds)
        sizes = [ds[i]["image"].shape[:2] for i in range(min(len(ds), 32))]
        full = _CropSet(ds, SIZE, DEFAULT_MARGIN, get_augmentation("flmcore"), seed=0)
        none = _CropSet(ds, SIZE, DEFAULT_MARGIN, get_augmentation("none"), seed=0)
        plain = PlainPIL(ds, SIZE, DEFAULT_MARGIN)
        fns = {}
        for w in (0, 1, 2):
            fns[f"flmcore_w{w}"] = cpu_timed(f"flmcore_w{w}", lambda w=w: run_loader(full, w))
            fns[f"pil_loop_w{w}"] = cpu_timed(f"pil_loop_w{w}", lambda w=w: run_loader(plain, w))
        fns["flmcore_none_w0"] = cpu_timed("flmcore_none_w0", lambda: run_loader(none, 0))
        print(f"data: {source}; image sizes (first 32) {min(sizes)} .. {max(sizes)}; crop {SIZE} px; "
              f"batch {BATCH}; {repeat} repeat(s); {os.cpu_count()} CPUs")
        t0 = time.perf_counter()
        times = median_times(fns, repeat=repeat, warmup=1)
        wall = time.perf_counter() - t0
    rate = {k: n / t for k, t in times.items()}
    # CPU ms per image (median over the timed passes, warm-up excluded): what the work costs on an idle core
    cpu_ms = {k: 1000.0 * float(np.median(v[1:] if len(v) > 1 else v)) / n for k, v in CPU_SECONDS.items()}
    rows = []
    for w, f_key in ((0, "flmcore_w0"), (1, "flmcore_w1"), (2, "flmcore_w2"), ("0 (aug none)", "flmcore_none_w0")):
        p_key = f"pil_loop_w{w if isinstance(w, int) else 0}"
        rows.append({"workers": w, "flmcore img/s": rate[f_key], "PIL loop img/s": rate[p_key],
                     "ratio flmcore/PIL": rate[f_key] / rate[p_key], "flmcore CPU ms/img": cpu_ms[f_key],
                     "PIL CPU ms/img": cpu_ms[p_key]})
    print_table(rows)
    print("img/s: wall clock (inflated when other jobs load the machine); CPU ms/img: this process + its workers")
    payload = {"source": source, "n_faces": n, "crop_size": SIZE, "batch_size": BATCH, "repeat": repeat,
               "median_seconds_per_pass": times, "images_per_second": rate, "cpu_ms_per_image": cpu_ms,
               "rows": rows, "bench_wall_seconds": wall}
    if not args.no_train_step:
        st, st_cpu = train_step_time(max(2, repeat))
        payload["train_step"] = {"model": "PIPNet MobileNetV2 w1.0, 256 px, batch 16, Adam, 1 thread",
                                 "seconds": st, "cpu_seconds": st_cpu, "images_per_second": BATCH / st,
                                 "cpu_ms_per_image": 1000.0 * st_cpu / BATCH}
        print(f"training step (PIPNet-MobileNetV2, 256 px, batch {BATCH}, 1 thread): {st:.2f} s wall, "
              f"{1000 * st_cpu / BATCH:.0f} CPU ms/img; the augmented pipeline costs "
              f"{cpu_ms['flmcore_w0']:.1f} CPU ms/img ({100 * cpu_ms['flmcore_w0'] * BATCH / 1000 / st_cpu:.1f} % "
              f"of the step), and with 1 worker it delivers {rate['flmcore_w1'] * st / BATCH:.0f}x the images "
              "the step consumes")
    path = write_json("data", payload, args.json)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
