"""PIPNet decoding and forward speed (not a test).

1. ``pip_decode`` for B=32, N=98 (WFLW), C=10, 8x8 maps against
   * the official per-image loop: a faithful re-statement of PIPNet's
     ``forward_pip`` (which asserts batch == 1) + the padded neighbour merge of
     ``lib/test.py``, called once per image;
   * a plain vectorised torch version (the same code with a batch dimension
     and the padded merge by advanced indexing).
   flmcore runs with the exact merge (and, for reference, the padded one).
2. PIPNet-R18-style forward (ResNet-18 width 1, stride 32, 68 points, C=10,
   RGB 256x256, batch 1) on CPU with 1 and 2 threads, images/s.

3. ``--experiment``: the real-data protocol of docs/guide/pipnet.rst on the
   bundled HELEN crops (187 train / 47 held-out per split, 114 unlabelled
   crops): PIPNet with and without the neighbour module, the three merges,
   then three 8-epoch rounds of labelled-only training, plain self-training
   and STC from the same supervised model.  CPU, one thread, minutes per split.

Run: ``python -m bench.bench_pip [--quick]`` from the repository root;
``python -m bench.bench_pip --experiment --splits 0,1,2`` for the real-data table.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ._common import median_times, print_table, thread_limits, write_json


def _official_loop_decode(outputs, stride_over_size, num_nb, r1, r2, max_len, num_lms):
    """Per-image loop mirroring the official forward_pip + padded merge (one image at a time)."""
    import torch

    res = []
    for b in range(outputs[0].shape[0]):
        outputs_cls, outputs_x, outputs_y, outputs_nb_x, outputs_nb_y = (o[b:b + 1] for o in outputs)
        tmp_batch, tmp_channel, tmp_height, tmp_width = outputs_cls.size()
        outputs_cls = outputs_cls.view(tmp_batch * tmp_channel, -1)
        max_ids = torch.argmax(outputs_cls, 1)
        max_ids = max_ids.view(-1, 1)
        max_ids_nb = max_ids.repeat(1, num_nb).view(-1, 1)
        outputs_x = outputs_x.view(tmp_batch * tmp_channel, -1)
        outputs_x_select = torch.gather(outputs_x, 1, max_ids).squeeze(1)
        outputs_y = outputs_y.view(tmp_batch * tmp_channel, -1)
        outputs_y_select = torch.gather(outputs_y, 1, max_ids).squeeze(1)
        outputs_nb_x = outputs_nb_x.view(tmp_batch * num_nb * tmp_channel, -1)
        outputs_nb_x_select = torch.gather(outputs_nb_x, 1, max_ids_nb).squeeze(1).view(-1, num_nb)
        outputs_nb_y = outputs_nb_y.view(tmp_batch * num_nb * tmp_channel, -1)
        outputs_nb_y_select = torch.gather(outputs_nb_y, 1, max_ids_nb).squeeze(1).view(-1, num_nb)
        tmp_x = (max_ids % tmp_width).view(-1, 1).float() + outputs_x_select.view(-1, 1)
        tmp_y = (max_ids // tmp_width).view(-1, 1).float() + outputs_y_select.view(-1, 1)
        tmp_x /= 1.0 / stride_over_size
        tmp_y /= 1.0 / stride_over_size
        tmp_nb_x = (max_ids % tmp_width).view(-1, 1).float() + outputs_nb_x_select
        tmp_nb_y = (max_ids // tmp_width).view(-1, 1).float() + outputs_nb_y_select
        tmp_nb_x = tmp_nb_x.view(-1, num_nb) / (1.0 / stride_over_size)
        tmp_nb_y = tmp_nb_y.view(-1, num_nb) / (1.0 / stride_over_size)
        # merge (lib/test.py)
        nb_x = tmp_nb_x[r1, r2].view(num_lms, max_len)
        nb_y = tmp_nb_y[r1, r2].view(num_lms, max_len)
        mx = torch.mean(torch.cat((tmp_x, nb_x), dim=1), dim=1).view(-1, 1)
        my = torch.mean(torch.cat((tmp_y, nb_y), dim=1), dim=1).view(-1, 1)
        res.append(torch.cat((mx, my), dim=1))
    return torch.stack(res)


def _plain_vectorised_decode(outputs, stride, num_nb, r1, r2, max_len, num_lms):
    """The same computation with a batch dimension (padded merge by advanced indexing)."""
    import torch

    s, ox, oy, nx, ny = outputs
    b, n, h, w = s.shape
    ids = torch.argmax(s.view(b * n, -1), 1).view(-1, 1)
    ids_nb = ids.repeat(1, num_nb).view(-1, 1)
    gx = torch.gather(ox.view(b * n, -1), 1, ids)
    gy = torch.gather(oy.view(b * n, -1), 1, ids)
    gnx = torch.gather(nx.reshape(b * n * num_nb, -1), 1, ids_nb).view(b * n, num_nb)
    gny = torch.gather(ny.reshape(b * n * num_nb, -1), 1, ids_nb).view(b * n, num_nb)
    cx, cy = (ids % w).float(), (ids // w).float()
    px, py = ((cx + gx) * stride).view(b, n, 1), ((cy + gy) * stride).view(b, n, 1)
    vx, vy = ((cx + gnx) * stride).view(b, n, num_nb), ((cy + gny) * stride).view(b, n, num_nb)
    mx = torch.cat((px, vx[:, r1, r2].view(b, n, max_len)), 2).mean(2)
    my = torch.cat((py, vy[:, r1, r2].view(b, n, max_len)), 2).mean(2)
    return torch.stack((mx, my), -1)


def _mean_face_98(rng):
    here = Path(__file__).resolve().parents[2] / "shared" / "data" / "pipnet_meanfaces" / "WFLW_meanface.txt"
    if here.is_file():
        from flmcore.pip import load_meanface_txt

        return load_meanface_txt(here), "WFLW mean face"
    return rng.random((98, 2)), "random mean face"


def _experiment(splits, epochs: int = 30, round_epochs: int = 8, width: float = 0.25, out=None) -> dict:
    """Real-data evidence on the bundled HELEN crops (see the module docstring)."""
    import torch

    from flmcore import metrics as M
    from flmcore.data import load_sample
    from flmcore.nn.backbones import ResNet18
    from flmcore.nn.models import PIPNet
    from flmcore.train import predict_pipnet, self_train_curriculum, train_pipnet

    torch.set_num_threads(1)
    d, u = load_sample("helen_pairs"), load_sample("helen_unlabelled")
    X, S, U = d["images"], d["shapes68"], u["images"]
    kw = dict(batch_size=16, lr=2e-3, device="cpu")

    def score(pred, gt):
        e = M.nme(pred, gt, scheme="ibug68")
        return dict(nme=100 * float(e.mean()), fr=100 * M.failure_rate(e, 0.1), auc=M.auc(e, 0.1),
                    pointvar=float(M.point_var(pred, gt, scheme="ibug68")))

    def model(c):
        torch.manual_seed(0)
        return PIPNet(ResNet18(in_channels=1, width=width, stride=16), "ibug68", n_neighbors=c, stc_heads=2)

    results = []
    for seed in splits:
        perm = np.random.default_rng(seed).permutation(len(X))
        tr, te = np.sort(perm[47:]), np.sort(perm[:47])
        res = {"split": seed, "n_train": len(tr), "n_test": len(te), "n_unlabelled": len(U)}
        sup = {}
        for c in (10, 0):
            net = model(c)
            t0 = time.perf_counter()
            train_pipnet(net, X[tr], S[tr], epochs=epochs, rng=0, **kw)
            res[f"C{c}_train_s"] = time.perf_counter() - t0
            for merge in (("exact", "padded", "none") if c else ("none",)):
                res[f"sup_C{c}_{merge}"] = score(predict_pipnet(net, X[te], merge=merge, device="cpu"), S[te])
            sup[c] = {k: v.clone() for k, v in net.state_dict().items()}
        net = model(10)
        net.load_state_dict(sup[10])
        pe = predict_pipnet(net, X[te], merge="exact", device="cpu")
        pp = predict_pipnet(net, X[te], merge="padded", device="cpu")
        res["exact_vs_padded_px"] = float(np.linalg.norm(pe - pp, axis=-1).mean())
        curve = []
        for r in range(3):
            train_pipnet(net, X[tr], S[tr], epochs=round_epochs, rng=100 + r, **kw)
            curve.append(score(predict_pipnet(net, X[te], device="cpu"), S[te])["nme"])
        res["sup_cont"], res["sup_cont_curve"] = score(predict_pipnet(net, X[te], device="cpu"), S[te]), curve
        for tasks, tag in (((1, 2, 3), "curriculum"), ((3, 3, 3), "plain")):
            net = model(10)
            net.load_state_dict(sup[10])
            curve = []
            self_train_curriculum(
                net, (X[tr], S[tr]), U, tasks=tasks, epochs=round_epochs, initial_epochs=0, reinit=False, rng=1,
                progress=False, callback=lambda r, m, p: curve.append(
                    score(predict_pipnet(m, X[te], device="cpu"), S[te])["nme"]) if r else None, **kw)
            res[f"stc_{tag}"] = score(predict_pipnet(net, X[te], device="cpu"), S[te])
            res[f"stc_{tag}_curve"] = curve
        print({k: (round(v["nme"], 2) if isinstance(v, dict) else v) for k, v in res.items()}, flush=True)
        results.append(res)
    payload = {"experiment": results, "epochs": epochs, "round_epochs": round_epochs, "width": width}
    path = write_json("pip_experiment", payload, out)
    print(f"wrote {path}")
    return payload


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_pip", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--out", default=None, help="JSON output path")
    ap.add_argument("--experiment", action="store_true", help="run the real-data protocol instead (minutes)")
    ap.add_argument("--splits", default="0", help="comma-separated split seeds for --experiment")
    args = ap.parse_args(argv)
    if args.experiment:
        return _experiment([int(v) for v in args.splits.split(",")], out=args.out)
    import torch

    from flmcore.nn.functional import pip_decode
    from flmcore.nn.backbones import ResNet18
    from flmcore.nn.models import PIPNet
    from flmcore.pip import neighbor_table

    rng = np.random.default_rng(0)
    mean98, src = _mean_face_98(rng)
    tab = neighbor_table(mean98, 10)
    r1, r2, max_len = tab.padded_reverse_index()
    r1t, r2t = torch.as_tensor(r1.ravel().copy()), torch.as_tensor(r2.ravel().copy())
    b, n, c, h = 32, 98, 10, 8
    stride = 32
    g = torch.Generator().manual_seed(0)
    outputs = (torch.rand(b, n, h, h, generator=g), torch.rand(b, n, h, h, generator=g),
               torch.rand(b, n, h, h, generator=g), torch.randn(b, n * c, h, h, generator=g),
               torch.randn(b, n * c, h, h, generator=g))
    r1v, r2v = torch.as_tensor(r1.copy()), torch.as_tensor(r2.copy())
    repeat = 7 if args.quick else 25
    rows, payload = [], {"decode": {}, "forward": {}, "mean_face": src}
    with thread_limits(1):
        fns = {
            "official loop (padded)": lambda: _official_loop_decode(outputs, stride, c, r1t, r2t, max_len, n),
            "plain vectorised (padded)": lambda: _plain_vectorised_decode(outputs, stride, c, r1v, r2v, max_len, n),
            "flmcore pip_decode exact": lambda: pip_decode(outputs, stride, tab, merge="exact"),
            "flmcore pip_decode padded": lambda: pip_decode(outputs, stride, tab, merge="padded"),
        }
        times = median_times(fns, repeat=repeat, warmup=2, min_time=0.05 if args.quick else 0.2)
    ref = _official_loop_decode(outputs, stride, c, r1t, r2t, max_len, n)
    agree_plain = float((_plain_vectorised_decode(outputs, stride, c, r1v, r2v, max_len, n) - ref).abs().max())
    agree_padded = float((pip_decode(outputs, stride, tab, merge="padded") - ref).abs().max())
    diff_exact = float((pip_decode(outputs, stride, tab) - ref).norm(dim=-1).mean())
    loop_t = times["official loop (padded)"]
    for k, t in times.items():
        rows.append({"decode (B=32, N=98, C=10, 8x8, 1 thread)": k, "ms": t * 1e3, "speed-up vs loop": loop_t / t})
        payload["decode"][k] = {"ms": t * 1e3, "speedup_vs_loop": loop_t / t}
    print_table(rows)
    print(f"max |plain - loop| = {agree_plain:.2e} px, max |flmcore padded - loop| = {agree_padded:.2e} px, "
          f"mean |exact - padded| = {diff_exact:.3f} px (random maps; the merges differ by design)")
    payload["decode"]["check"] = {"plain_vs_loop_max_px": agree_plain, "padded_vs_loop_max_px": agree_padded,
                                  "exact_vs_padded_mean_px_random_maps": diff_exact}

    net = PIPNet(ResNet18(in_channels=3, width=1.0, stride=32), 68, n_neighbors=10,
                 mean_shape=rng.random((68, 2))).eval()
    x = torch.rand(1, 3, 256, 256)
    frows = []
    for threads in (1, 2):
        with thread_limits(threads), torch.no_grad():
            t = median_times({"forward": lambda: net(x)}, repeat=5 if args.quick else 15, warmup=2)["forward"]
            td = median_times({"forward+decode": lambda: net.decode(net(x))}, repeat=5 if args.quick else 15,
                              warmup=1)["forward+decode"]
        frows.append({"PIPNet-R18 256x256 batch 1": f"{threads} thread(s)", "ms": t * 1e3, "images/s": 1 / t,
                      "with decode images/s": 1 / td})
        payload["forward"][f"threads_{threads}"] = {"ms": t * 1e3, "images_per_s": 1 / t,
                                                    "images_per_s_with_decode": 1 / td}
    print_table(frows)
    print("paper: 35.7 FPS for PIPNet-R18 on a server CPU")
    import os

    if hasattr(os, "getloadavg"):
        payload["load_average_1min"] = os.getloadavg()[0]
        print(f"machine load average (1 min): {payload['load_average_1min']:.1f} (timings on a shared machine)")
    path = write_json("pip", payload, args.out)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
