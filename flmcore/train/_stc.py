"""Training PIPNet and self-training with curriculum (STC; Jin, Liao & Shao, IJCV 2021, Sec. 3.3).

* :func:`train_pipnet` -- supervised training of a :class:`flmcore.nn.models.PIPNet`
  on grayscale face crops (optionally mixed with pseudo-labelled crops that
  only supervise one of the STC score heads);
* :func:`predict_pipnet` -- batched prediction to NumPy;
* :func:`self_train_curriculum` -- train on labels, pseudo-label the unlabelled
  faces, retrain with the pseudo-labels on the task sequence 1 -> 2 -> 3.

Every helper takes ``device`` (default: CUDA when available, else CPU); data
stay NumPy until each batch is moved to the device.
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .._validate import check_images, check_in, check_int, check_nonnegative, check_positive, check_shapes
from ..nn._pip import PIPLoss, PIPNet, pip_score_targets, pip_targets
from ..pip import mean_face

__all__ = ["train_pipnet", "predict_pipnet", "self_train_curriculum", "default_device"]


def default_device(device=None) -> torch.device:
    """``device`` as a :class:`torch.device`; ``None`` = ``"cuda"`` when available, else ``"cpu"``.

    Examples
    --------
    >>> default_device("cpu")
    device(type='cpu')
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _progress(progress, iterable, desc: str, total: Optional[int] = None):
    if progress is True:
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover - tqdm is a dependency
            return iterable
        return tqdm(iterable, desc=desc, total=total, leave=False)
    if callable(progress):
        return progress(iterable, desc=desc, total=total)
    return iterable


class _torch_threads:
    """Set ``torch.set_num_threads`` inside a block (``None`` leaves it) and restore it."""

    def __init__(self, n):
        self.n = None if n is None else check_int(n, "num_threads", min_value=1)

    def __enter__(self):
        self.saved = torch.get_num_threads()
        if self.n is not None:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.saved)
        return False


def _check_model(model) -> PIPNet:
    if not isinstance(model, PIPNet):
        raise TypeError(f"model must be a flmcore.nn.models.PIPNet, got {type(model).__name__}")
    return model


def _prep_images(images, name: str = "images") -> np.ndarray:
    arr = check_images(images, name, batch=True)
    return arr  # float32 (B, H, W) in [0, 1]


def _to_input(batch: np.ndarray, model: PIPNet, device: torch.device) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(batch)).to(device)[:, None]
    cin = getattr(model.backbone, "in_channels", 1)
    if cin != 1:
        x = x.expand(-1, cin, -1, -1)
    return x


def _pixel_to_norm(size: int, dtype, device) -> torch.Tensor:
    """3x3 matrix mapping 0-based pixel coordinates to grid_sample's [-1, 1] (align_corners=False)."""
    m = torch.eye(3, dtype=dtype, device=device)
    m[0, 0] = m[1, 1] = 2.0 / size
    m[0, 2] = m[1, 2] = 1.0 / size - 1.0
    return m


def _augment(x: torch.Tensor, shapes: torch.Tensor, gen: torch.Generator, rotate: float, scale: float,
             shift: float, intensity: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Random similarity warp (about the crop centre) + contrast/brightness jitter; shapes follow."""
    b, _, h, w = x.shape
    if h != w:
        raise ValueError(f"augmentation needs square crops, got {h}x{w}")
    dev, dt = x.device, x.dtype
    r = torch.rand(b, 6, generator=gen)
    ang = (r[:, 0] * 2 - 1) * math.radians(rotate)
    sc = 1.0 + (r[:, 1] * 2 - 1) * scale
    sh = (r[:, 2:4] * 2 - 1) * shift * w
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    # input = A (output - c) + c + sh ;  A = R(ang) / sc  (output zooms by sc)
    a = torch.zeros(b, 3, 3, dtype=torch.float64)
    a[:, 0, 0], a[:, 0, 1], a[:, 1, 0], a[:, 1, 1] = cos, -sin, sin, cos
    c = (w - 1) / 2.0
    a[:, 0, 2] = c + sh[:, 0] - (cos - sin) * c
    a[:, 1, 2] = c + sh[:, 1] - (sin + cos) * c
    a[:, 2, 2] = 1.0
    n = _pixel_to_norm(w, torch.float64, "cpu")
    theta = (n @ a @ torch.linalg.inv(n))[:, :2].to(device=dev, dtype=dt)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    inv = torch.linalg.inv(a).to(device=dev, dtype=shapes.dtype)
    new = torch.einsum("bij,bpj->bpi", inv[:, :2, :2], shapes) + inv[:, None, :2, 2]
    gain = (1.0 + (r[:, 4] * 2 - 1) * intensity).to(dev, dt)
    bias = ((r[:, 5] * 2 - 1) * intensity * 0.5).to(dev, dt)
    out = (out - 0.5) * gain[:, None, None, None] + 0.5 + bias[:, None, None, None]
    return out.clamp_(0.0, 1.0), new


def _task_level(task: int, model: PIPNet) -> int:
    """Extra-head index (0-based) supervised by curriculum task ``task`` (< last task)."""
    return model.stc_heads - task  # task 1 -> coarsest head, task stc_heads -> finest extra head


def train_pipnet(model: PIPNet, images, shapes, *, epochs: int = 30, batch_size: int = 16, lr: float = 1e-3,
                 weight_decay: float = 0.0, alpha: float = 0.1, beta: float = 0.1,
                 tasks: Optional[Sequence[int]] = None, augment: bool = True, rotate: float = 15.0,
                 scale: float = 0.1, shift: float = 0.06, intensity: float = 0.2, outside: str = "clip",
                 device=None, rng: Union[int, None] = 0, progress: Union[bool, Callable] = False,
                 num_threads: Optional[int] = None, weighting: str = "flmcore") -> Dict:
    """Train a PIPNet on grayscale face crops (Adam + cosine learning-rate decay).

    Each batch is (optionally) augmented by a random similarity transform and
    intensity jitter, labelled with :func:`~flmcore.nn.functional.pip_targets`,
    and scored with :class:`~flmcore.nn.losses.PIPLoss` (eq. 5).  Samples whose
    ``tasks`` entry is smaller than the last task (``model.stc_heads + 1``)
    only train the score head of that curriculum task: task 1 the coarsest
    extra head (stride ``4 S`` with two heads), task 2 the next (``2 S``); the
    last task is the full PIP task.  How the groups are weighed is ``weighting``.
    When the neighbour table is not set yet, the mean face of the full-task
    shapes sets it (:func:`flmcore.pip.mean_face`).

    Parameters
    ----------
    model : PIPNet
        Trained in place (moved to ``device``).
    images : array_like, shape (B, S, S)
        Grayscale square crops, uint8 or float in [0, 1]; ``S`` a multiple of the stride.
    shapes : array_like, shape (B, N, 2)
        Landmarks in crop pixels (labels or pseudo-labels).
    epochs, batch_size, lr, weight_decay : training schedule.
    alpha, beta : float
        Loss weights (eq. 5); 0.1 suits 8x8 maps (paper: stride 32 at 256x256).
    tasks : sequence of int, optional
        Curriculum task per sample (default: all the full PIP task).
    augment, rotate, scale, shift, intensity :
        Augmentation on/off, max rotation (degrees), relative zoom, shift
        (fraction of the crop) and intensity jitter.
    outside : {"clip", "raise"}
        Landmarks leaving the crop (see :func:`~flmcore.nn.functional.pip_targets`).
    device : str or torch.device, optional
        Default CUDA when available, else CPU.
    rng : int, optional
        Seed of the shuffling and augmentation (torch.Generator on the CPU).
    progress : bool or callable
        ``True`` shows a tqdm bar over the epochs; a callable
        ``progress(iterable, desc=..., total=...)`` wraps the loop.
    num_threads : int, optional
        CPU threads of torch during the call (restored afterwards); ``None``
        keeps the current setting.  One thread is the robust choice on a
        shared machine.
    weighting : {"flmcore", "official"}
        How labelled (full-task) and pseudo-labelled (score-head) faces share
        the score loss of a mixed batch.  ``"flmcore"`` (default): each group's
        loss is the mean over its own cells, weighted by the group's share of
        the batch, so every *face* weighs the same whatever the resolution of
        the head it trains.  ``"official"``: PIPNet's ``compute_loss_pip``
        (``lib/functions_gssl.py``): one mean of the squared score errors over
        every supervised *cell* of all score maps,
        :math:`L_S = \\sum_{\\text{cells}} (s - s^*)^2 / n_{\\text{cells}}`, so a
        pseudo-labelled face on a coarse ``h x w`` head weighs ``h w / (H W)``
        of a labelled one (1/16 for a 2x2 head beside an 8x8 map); the offset
        and neighbour terms average over the labelled faces in both.

    Returns
    -------
    dict
        ``{"loss": [mean loss per epoch], "device": str}``.

    Examples
    --------
    >>> import numpy as np
    >>> from flmcore.nn.models import PIPNet
    >>> from flmcore.nn.backbones import ResNet18
    >>> rs = np.random.default_rng(0)
    >>> imgs = rs.random((4, 32, 32)).astype(np.float32)
    >>> pts = rs.uniform(4, 28, (4, 5, 2))
    >>> net = PIPNet(ResNet18(width=0.125, stride=16), 5, n_neighbors=2)
    >>> hist = train_pipnet(net, imgs, pts, epochs=1, batch_size=2, device="cpu")
    >>> len(hist["loss"])
    1
    """
    model = _check_model(model)
    imgs = _prep_images(images)
    n_img, hgt, wid = imgs.shape
    pts = check_shapes(shapes, "shapes", batch=True, n_points=model.n_points)
    if pts.shape[0] != n_img:
        raise ValueError(f"images and shapes must hold the same number of faces, got {n_img} and {pts.shape[0]}")
    map_hw = model.map_size((hgt, wid))
    last = model.stc_heads + 1
    task_arr = np.full(n_img, last, dtype=np.int64) if tasks is None else np.asarray(tasks)
    if task_arr.shape != (n_img,) or not np.issubdtype(task_arr.dtype, np.integer):
        raise ValueError(f"tasks must be {n_img} integers (one per face), got shape {task_arr.shape} dtype {task_arr.dtype}")
    if task_arr.min() < 1 or task_arr.max() > last:
        raise ValueError(f"tasks must lie in [1, {last}] for a model with {model.stc_heads} STC heads, "
                         f"got values in [{task_arr.min()}, {task_arr.max()}]")
    epochs = check_int(epochs, "epochs", min_value=1)
    batch_size = check_int(batch_size, "batch_size", min_value=1)
    lr = check_positive(lr, "lr")
    weight_decay = check_nonnegative(weight_decay, "weight_decay", finite=True)
    check_in(outside, "outside", ("clip", "raise"))
    check_in(weighting, "weighting", ("flmcore", "official"))
    if outside == "raise":
        pip_targets(pts, map_hw, model.stride, None, outside="raise")  # fail early on the raw labels
    dev = default_device(device)
    if model.n_neighbors and model.neighbors is None:
        full = task_arr == last
        model.set_mean_face(mean_face(pts[full] if full.any() else pts))
    model.to(dev)
    loss_fn = PIPLoss(alpha, beta)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, math.ceil(n_img / batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch, eta_min=lr * 0.01)
    gen = torch.Generator().manual_seed(int(np.random.default_rng(rng).integers(2 ** 62)))
    table = model.neighbors if model.n_neighbors else None
    history = {"loss": [], "device": str(dev)}
    with _torch_threads(num_threads):
        _fit(model, imgs, pts, task_arr, last, map_hw, table, loss_fn, opt, sched, gen, history, epochs, batch_size,
             augment, (rotate, scale, shift, intensity), dev, progress, weighting)
    model.eval()
    return history


def _mixed_loss(model, out, extra, y, tk, last, map_hw, table, loss_fn, weighting, dev):
    """Loss of a batch mixing full-task faces and score-head-only (pseudo-labelled) faces."""
    m_full = tk == last
    tgt = pip_targets(y, map_hw, model.stride, table, device=dev, dtype=out[0].dtype)
    if weighting == "official":
        ls, lo, ln = loss_fn.terms(out, tgt, mask=m_full)
        n_cells = int(m_full.sum()) * out[0][0].numel()     # N H W cells per labelled face
        num, den = ls * n_cells, n_cells
        loss_reg = loss_fn.alpha * lo + loss_fn.beta * ln
    else:
        frac = m_full.float().mean()
        loss = frac * loss_fn(out, tgt, mask=m_full) if bool(m_full.any()) else out[0].sum() * 0.0
    for t in range(1, last):
        m_t = tk == t
        if not bool(m_t.any()):
            continue
        lvl = _task_level(t, model)
        head = extra[lvl]
        st = pip_score_targets(y[m_t], tuple(head.shape[-2:]), model.stride * 2 ** (lvl + 1),
                               device=dev, dtype=head.dtype)
        if weighting == "official":
            num = num + F.mse_loss(head[m_t], st, reduction="sum")
            den += st.numel()
        else:
            loss = loss + m_t.float().mean() * F.mse_loss(head[m_t], st)
    if weighting == "official":
        return (num / max(den, 1)) + loss_reg
    return loss


def _fit(model, imgs, pts, task_arr, last, map_hw, table, loss_fn, opt, sched, gen, history, epochs, batch_size,
         augment, aug, dev, progress, weighting="flmcore") -> None:
    n_img = imgs.shape[0]
    model.train()
    for _ in _progress(progress, range(epochs), desc="train PIPNet", total=epochs):
        perm = torch.randperm(n_img, generator=gen).numpy()
        total, count = 0.0, 0
        for s0 in range(0, n_img, batch_size):
            idx = perm[s0:s0 + batch_size]
            if idx.size < 2 and n_img >= 2:  # BatchNorm needs two samples; skip a trailing single one
                continue
            x = _to_input(imgs[idx], model, dev)
            y = torch.as_tensor(pts[idx], dtype=torch.float32, device=dev)
            if augment:
                x, y = _augment(x, y, gen, *aug)
            tk = torch.as_tensor(task_arr[idx], device=dev)
            if model.stc_heads:
                out, extra = model.forward_stc(x)
            else:
                out, extra = model(x), []
            loss = _mixed_loss(model, out, extra, y, tk, last, map_hw, table, loss_fn, weighting, dev)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * idx.size
            count += idx.size
        history["loss"].append(total / max(count, 1))


@torch.no_grad()
def predict_pipnet(model: PIPNet, images, *, batch_size: int = 64, merge: str = "exact", device=None,
                   return_votes: bool = False):
    """Landmarks ``(B, N, 2)`` float64 (crop pixels) for grayscale crops ``(B, S, S)``.

    With ``return_votes`` also the unmerged predictions ``(B, N, 2)`` and the
    neighbour votes ``(B, N, C, 2)`` (see :func:`~flmcore.nn.functional.pip_decode`).

    Examples
    --------
    >>> import numpy as np
    >>> from flmcore.nn.models import PIPNet
    >>> from flmcore.nn.backbones import ResNet18
    >>> net = PIPNet(ResNet18(width=0.125, stride=16), 3, n_neighbors=1, mean_shape=[[8, 8], [20, 8], [14, 20]])
    >>> predict_pipnet(net, np.zeros((2, 32, 32), np.uint8), device="cpu").shape
    (2, 3, 2)
    """
    model = _check_model(model)
    imgs = _prep_images(images)
    batch_size = check_int(batch_size, "batch_size", min_value=1)
    dev = default_device(device)
    model.to(dev)
    was = model.training
    model.eval()
    outs, owns, votes = [], [], []
    try:
        for s0 in range(0, imgs.shape[0], batch_size):
            x = _to_input(imgs[s0:s0 + batch_size], model, dev)
            res = model.decode(model(x), merge=merge, return_votes=return_votes)
            if return_votes:
                outs.append(res[0].double().cpu().numpy())
                owns.append(res[1].double().cpu().numpy())
                votes.append(res[2].double().cpu().numpy())
            else:
                outs.append(res.double().cpu().numpy())
    finally:
        model.train(was)
    if return_votes:
        return np.concatenate(outs), np.concatenate(owns), np.concatenate(votes)
    return np.concatenate(outs)


def self_train_curriculum(model: PIPNet, labelled: Tuple, unlabelled, *, tasks: Sequence[int] = (1, 2, 3),
                          epochs: int = 30, initial_epochs: Optional[int] = None, reinit: bool = True, device=None, rng: Union[int, None] = 0,
                          progress: Union[bool, Callable] = True, callback: Optional[Callable] = None,
                          pseudo_merge: str = "exact", **train_kwargs) -> Dict:
    """Self-training with curriculum (PIPNet, Sec. 3.3, Fig. 8).

    1. Train ``model`` on the labelled faces (the full PIP task, "Task 3").
    2. Pseudo-label the unlabelled faces with the trained model (neighbour
       predictions merged by ``pseudo_merge``).
    3. Train on labelled (full task) + pseudo-labelled faces, the latter only
       through task ``tasks[r]`` of round ``r`` (task 1 = coarsest extra score
       head, ..., last = full PIP task).
    4. Repeat 2-3 for every entry of ``tasks``.

    The paper's sequence is 1 -> 2 -> 3 followed by further Task-3 rounds until
    convergence (the official script runs ``(1, 2, 3, 3, 3)``); the default here
    is the three-round ``(1, 2, 3)``.

    Parameters
    ----------
    model : PIPNet
        Built with ``stc_heads >= max(tasks) - 1`` extra score heads (2 for the
        paper's curriculum).  Trained in place; its final weights are those of
        the last round.
    labelled : tuple (images, shapes)
        ``images`` (B, S, S) crops and ``shapes`` (B, N, 2) labels in crop pixels.
    unlabelled : array_like, shape (U, S, S)
        Unlabelled crops of the same size.
    tasks : sequence of int
        Curriculum task per self-training round (``1 .. stc_heads + 1``).
    epochs : int
        Epochs of every self-training round.
    initial_epochs : int, optional
        Epochs of the supervised start (default ``epochs``); 0 skips it and
        starts from ``model`` as given (e.g. already trained on the labels).
    reinit : bool
        Restart every round from the weights ``model`` had on entry (the
        official code re-creates the network from its pretrained weights);
        ``False`` continues from the previous round.
    device : optional
        Default CUDA when available, else CPU.
    rng : int, optional
        Seed (round ``r`` uses ``rng + r``).
    progress : bool or callable
        Progress bar over the rounds (and epochs).
    callback : callable, optional
        ``callback(round, model, pseudo_labels)`` after every training (round
        0 is the supervised start), e.g. to evaluate on held-out faces.
    pseudo_merge : {"exact", "padded"}
        Neighbour merge of the pseudo-labels (:func:`flmcore.nn.functional.pip_merge`).
        ``"exact"`` (default): each landmark's own prediction averaged with
        every vote for it once (the paper's Sec. 3.2 mean).  ``"padded"``: the
        official code's merge, whose vote lists are padded to equal length by
        repeating votes (some votes count twice).
    **train_kwargs :
        Passed to :func:`train_pipnet` (``batch_size``, ``lr``, ``alpha``,
        ``weighting`` -- ``"official"`` for PIPNet's per-cell weighting of the
        pseudo-labelled score heads, ...).  The official recipe is
        ``pseudo_merge="padded", weighting="official", tasks=(1, 2, 3, 3, 3)``.

    Returns
    -------
    dict
        ``{"pseudo_labels": [(U, N, 2) per round], "loss": [per-round loss curves], "tasks": tasks}``.

    Examples
    --------
    >>> import numpy as np
    >>> from flmcore.nn.models import PIPNet
    >>> from flmcore.nn.backbones import ResNet18
    >>> rs = np.random.default_rng(0)
    >>> imgs, un = rs.random((4, 64, 64)), rs.random((2, 64, 64))
    >>> pts = rs.uniform(8, 56, (4, 4, 2))
    >>> net = PIPNet(ResNet18(width=0.125, stride=16), 4, n_neighbors=2, stc_heads=2)
    >>> out = self_train_curriculum(net, (imgs, pts), un, epochs=1, batch_size=4, device="cpu", progress=False)
    >>> len(out["pseudo_labels"]), out["pseudo_labels"][0].shape
    (3, (2, 4, 2))
    """
    model = _check_model(model)
    if not isinstance(labelled, (tuple, list)) or len(labelled) != 2:
        raise TypeError("labelled must be a tuple (images, shapes)")
    limgs = _prep_images(labelled[0], "labelled images")
    lpts = check_shapes(labelled[1], "labelled shapes", batch=True, n_points=model.n_points)
    if lpts.shape[0] != limgs.shape[0]:
        raise ValueError(f"labelled images and shapes differ in number: {limgs.shape[0]} and {lpts.shape[0]}")
    uimgs = _prep_images(unlabelled, "unlabelled")
    if uimgs.shape[1:] != limgs.shape[1:]:
        raise ValueError(f"unlabelled crops must have the labelled size {limgs.shape[1:]}, got {uimgs.shape[1:]}")
    check_in(pseudo_merge, "pseudo_merge", ("exact", "padded"))
    tasks = [check_int(t, "tasks", min_value=1, max_value=model.stc_heads + 1) for t in tasks]
    if not tasks:
        raise ValueError("tasks must hold at least one round")
    last = model.stc_heads + 1
    dev = default_device(device)
    seed = 0 if rng is None else int(rng)
    start = copy.deepcopy(model.state_dict())
    if model.n_neighbors and model.neighbors is None:
        model.set_mean_face(mean_face(lpts))
        start = copy.deepcopy(model.state_dict())
    epochs = check_int(epochs, "epochs", min_value=1)
    initial_epochs = epochs if initial_epochs is None else check_int(initial_epochs, "initial_epochs", min_value=0)
    hist = {"pseudo_labels": [], "loss": [], "tasks": list(tasks)}
    if initial_epochs:
        h = train_pipnet(model, limgs, lpts, epochs=initial_epochs, device=dev, rng=seed, progress=False,
                         **train_kwargs)
        hist["loss"].append(h["loss"])
    else:
        hist["loss"].append([])
    if callback is not None:
        callback(0, model, None)
    for r, task in enumerate(_progress(progress, tasks, desc="STC rounds", total=len(tasks)), start=1):
        pseudo = predict_pipnet(model, uimgs, device=dev, merge=pseudo_merge)
        hist["pseudo_labels"].append(pseudo)
        if reinit:
            model.load_state_dict(start)
        imgs = np.concatenate([limgs, uimgs])
        pts = np.concatenate([lpts, pseudo])
        tk = np.concatenate([np.full(len(limgs), last), np.full(len(uimgs), task)]).astype(np.int64)
        h = train_pipnet(model, imgs, pts, tasks=tk, epochs=epochs, device=dev, rng=seed + r,
                         progress=False, **train_kwargs)
        hist["loss"].append(h["loss"])
        if callback is not None:
            callback(r, model, pseudo)
    return hist
