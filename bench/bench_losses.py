"""Benchmark: AnisotropicLoss forward+backward and ATDP sampler throughput.

* AnisotropicLoss (closed form ``|d|^2/b^2 + (1/a^2 - 1/b^2)(t.d)^2``, weights built from the
  target shape in torch) for B = 64, 98 points (WFLW), against a naive per-point loop (the
  paper's eq. 2 written out with a 2x2 matrix per point) and a plain ``einsum`` over explicit
  (B, P, 2, 2) weight matrices (built the same vectorised way).  Same values checked first.
* ATDPSampler: time to draw the plan of one epoch for 100k samples (two datasets, 60k + 40k,
  batch 32), against a naive baseline that draws each batch's dataset with
  ``rng.choice(p=...)`` and slices a fresh permutation.

Run: ``python -m bench.bench_losses [--quick]``.
"""
from __future__ import annotations

import argparse

import numpy as np

from bench._common import median_times, print_table, thread_limits, write_json


def _naive_loop(x, z, scheme, a, b):
    import torch

    from flmcore.nn._losses import _curve_neighbours

    prev, nxt, on, *_ = _curve_neighbours(scheme)
    total = x.new_zeros(())
    eye = torch.eye(2, dtype=x.dtype)
    B, P, _ = x.shape
    for i in range(P):
        d = x[:, i] - z[:, i]  # (B, 2)
        if on[i]:
            t = z[:, nxt[i]] - z[:, prev[i]]
            t = t / t.norm(dim=-1, keepdim=True)
            tt = t[:, :, None] * t[:, None, :]
            W = tt / a ** 2 + (eye - tt) / b ** 2
        else:
            W = eye.expand(B, 2, 2)
        total = total + (d[:, None, :] @ W @ d[:, :, None]).sum()
    return total / (B * P)


def _einsum(x, z, scheme, a, b):
    import torch

    from flmcore.nn.functional import anisotropic_weights

    W = anisotropic_weights(z, scheme, a, b)
    d = x - z
    return torch.einsum("bpi,bpij,bpj->", d, W, d) / (x.shape[0] * x.shape[1])


def bench_aniso(B: int, repeat: int) -> list:
    import torch

    from flmcore.nn.functional import anisotropic_loss
    from flmcore.schemes import get_scheme

    s = get_scheme("wflw98")
    g = torch.Generator().manual_seed(0)
    z = torch.rand(B, 98, 2, generator=g) * 200
    x0 = z + torch.randn(B, 98, 2, generator=g) * 3
    rows = []
    for dtype in (torch.float32, torch.float64):
        zz = z.to(dtype)
        xs = x0.to(dtype)
        fns = {"flmcore": lambda x: anisotropic_loss(x, zz, s, 5.0, 3.0),
               "einsum": lambda x: _einsum(x, zz, s, 5.0, 3.0),
               "naive loop": lambda x: _naive_loop(x, zz, s, 5.0, 3.0)}
        vals = {k: float(f(xs)) for k, f in fns.items()}
        ref = vals["naive loop"]
        assert all(abs(v - ref) <= 1e-4 * abs(ref) for v in vals.values()), vals

        def fb(f):
            def run():
                x = xs.clone().requires_grad_(True)
                f(x).backward()
            return run

        t = median_times({k: fb(f) for k, f in fns.items()}, repeat=repeat, warmup=2, min_time=0.02)
        for k in fns:
            rows.append({"case": f"AnisotropicLoss fwd+bwd B={B} P=98 {str(dtype)[6:]}", "impl": k,
                         "ms": t[k] * 1e3, "speed-up of flmcore": t[k] / t["flmcore"]})
    return rows


def _naive_sampler(sizes, ratios, decay, batch_size, epoch, seed):
    rng = np.random.default_rng(seed + epoch)
    w = np.asarray(ratios, float) * np.asarray(decay, float) ** epoch
    p = w / w.sum()
    n_batches = int(sizes[0] // batch_size / p[0])
    perms = [rng.permutation(n) for n in sizes]
    pos = [0] * len(sizes)
    out = []
    for _ in range(n_batches):
        d = int(rng.choice(len(sizes), p=p))
        if pos[d] + batch_size > sizes[d]:
            perms[d] = rng.permutation(sizes[d])
            pos[d] = 0
        out.append((d, perms[d][pos[d]:pos[d] + batch_size]))
        pos[d] += batch_size
    return out


def bench_sampler(n_total: int, repeat: int) -> list:
    from flmcore.train import ATDPSampler

    sizes = [int(n_total * 0.6), n_total - int(n_total * 0.6)]
    s = ATDPSampler(sizes, [1.0, 1.0], [1.0, 0.9], 32, seed=0)

    def flm():
        s.set_epoch(3)
        return sum(len(i) for _, i in s)

    def naive():
        return sum(len(i) for _, i in _naive_sampler(sizes, [1.0, 1.0], [1.0, 0.9], 32, 3, 0))

    t = median_times({"flmcore": flm, "naive rng.choice": naive}, repeat=repeat, warmup=1)
    n_samples = flm()
    return [{"case": f"ATDPSampler epoch plan, {n_total} samples ({n_samples} drawn), batch 32", "impl": k,
             "ms": v * 1e3, "samples/s": n_samples / v, "speed-up of flmcore": v / t["flmcore"]}
            for k, v in t.items()]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_losses", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    repeat = 3 if args.quick else 9
    with thread_limits(args.threads):
        rows = bench_aniso(64, repeat) + bench_sampler(20_000 if args.quick else 100_000, repeat)
    print_table(rows, ["case", "impl", "ms", "samples/s", "speed-up of flmcore"])
    payload = {"threads": args.threads, "quick": args.quick, "rows": rows}
    write_json("losses", payload, args.out)
    return payload


if __name__ == "__main__":
    main()
