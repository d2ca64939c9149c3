"""A small training loop for ATF (Lan, Hu, Cheng, Algorithm 1): alternating batches from several
datasets per an :class:`~flmcore.train.ATDPSampler`, a shared backbone with one head per dataset
(:class:`flmcore.nn.models.MultiBranch`) and the mixed branch loss (:class:`flmcore.nn.losses.MixedBranchLoss`)
or any per-branch loss.  Works unchanged under ``DistributedDataParallel`` (wrap the model; give
the sampler ``num_replicas``/``rank`` or let it read them from :mod:`torch.distributed`).
"""
from __future__ import annotations

from typing import Callable, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .._validate import check_int

__all__ = ["fit_atf", "BranchLoss"]


class BranchLoss(nn.Module):
    """Apply a plain loss to the branch of the batch's dataset only: ``loss(outputs[name], target)``.

    Used for ATDP without the mixed branch loss, single-dataset baselines and fine-tuning a branch.

    Examples
    --------
    >>> import torch
    >>> from flmcore.nn.losses import L1Loss
    >>> BranchLoss(L1Loss())({"a": torch.ones(1, 2, 2)}, torch.zeros(1, 2, 2), "a").item()
    2.0
    """

    def __init__(self, loss: Callable[[Tensor, Tensor], Tensor]):
        super().__init__()
        if not callable(loss):
            raise TypeError(f"loss must be callable, got {type(loss).__name__}")
        self.loss = loss

    def forward(self, outputs: Mapping[str, Tensor], target: Tensor, dataset: str) -> Tensor:
        return self.loss(outputs[dataset], target)


def _branches_needed(criterion, name: str, all_names: Sequence[str]) -> List[str]:
    pairs = getattr(criterion, "pairs", None)
    if pairs is None:
        return [name]
    need = [name]
    for a, b in pairs:
        if name in (a, b):
            for n in (a, b):
                if n not in need and n in all_names:
                    need.append(n)
    return need


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def fit_atf(model: nn.Module, datasets: Mapping[str, Tuple[Tensor, Tensor]], sampler, criterion,
            optimizer: torch.optim.Optimizer, epochs: int, *, start_epoch: int = 0,
            target_transform: Optional[Callable[[Tensor], Tensor]] = None,
            augment: Optional[Callable[[Tensor, Tensor, torch.Generator], Tuple[Tensor, Tensor]]] = None,
            scheduler=None, progress: Optional[Callable] = None,
            callback: Optional[Callable[[int, nn.Module], Optional[dict]]] = None) -> List[dict]:
    """Train a multi-branch model by alternating batches of several datasets (ATF Algorithm 1).

    Each epoch ``e``: ``sampler.set_epoch(e)``; for each ``(dataset_index, indices)`` the batch
    ``X[indices]`` runs through the backbone and the branches the criterion needs, the loss
    ``criterion(outputs, target, name)`` is back-propagated and one optimiser step is taken
    (the batch of one dataset fine-tunes the weights the previous dataset's batch left, §III-B).

    Parameters
    ----------
    model : MultiBranch (or DistributedDataParallel around one)
        ``model(x, branches=[...])`` must return a dict name -> output.
    datasets : mapping name -> (images, targets)
        In sampler order (``dataset_index`` ``i`` is the ``i``-th item); ``images`` a tensor
        ``(N, C, H, W)``, ``targets`` ``(N, P, 2)`` in the branch's scheme.  Names are branch names.
    sampler : ATDPSampler
        Yields ``(dataset_index, sample_indices)``; has ``set_epoch``.
    criterion : callable
        ``criterion(outputs, target, name) -> scalar``, e.g. :class:`flmcore.nn.losses.MixedBranchLoss`
        (every branch paired with ``name`` is evaluated) or :class:`BranchLoss`.
    optimizer : torch.optim.Optimizer
    epochs : int
        Number of epochs to run, from ``start_epoch``.
    target_transform : callable, optional
        Maps a coordinate batch ``(B, P, 2)`` to the loss target (e.g. heatmaps).
    augment : callable, optional
        ``augment(x, y, generator) -> (x, y)`` applied to each batch.
    scheduler : optional LR scheduler stepped once per epoch.
    progress : callable, optional
        ``progress(iterable, desc=...)`` wrapper for the epoch loop.
    callback : callable, optional
        ``callback(epoch, model) -> dict or None``; the dict is merged into the epoch record
        (e.g. validation NME, Algorithm 1 line 9).

    Returns
    -------
    list of dict
        One record per epoch: ``epoch``, ``batches`` (per dataset name), ``loss`` (mean per name),
        plus the callback's entries.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from flmcore.nn import CoordHead, MixedBranchLoss
    >>> from flmcore.nn.models import MultiBranch
    >>> from flmcore.train import ATDPSampler
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> bb = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    >>> m = MultiBranch(bb, {"a": CoordHead(4, 3), "b": CoordHead(4, 2)})
    >>> data = {"a": (torch.rand(16, 1, 8, 8), torch.rand(16, 3, 2)),
    ...         "b": (torch.rand(16, 1, 8, 8), torch.rand(16, 2, 2))}
    >>> s = ATDPSampler([16, 16], [1, 1], 0.5, batch_size=4, seed=0)
    >>> crit = MixedBranchLoss(0.1, 1.0, 0.1, {("a", "b"): [[0, 0]]}, main="a")
    >>> hist = fit_atf(m, data, s, crit, torch.optim.SGD(m.parameters(), 0.01), epochs=2)
    >>> [h["batches"] for h in hist]
    [{'a': 4, 'b': 4}, {'a': 4, 'b': 2}]
    """
    if not isinstance(datasets, Mapping) or not datasets:
        raise ValueError("datasets must be a non-empty mapping name -> (images, targets)")
    names = list(datasets.keys())
    n_sampler = getattr(sampler, "n_datasets", None)
    if n_sampler is not None and n_sampler != len(names):
        raise ValueError(f"sampler draws from {n_sampler} datasets but {len(names)} were given")
    for n, pair in datasets.items():
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ValueError(f"datasets[{n!r}] must be a pair (images, targets)")
        x, y = pair
        if len(x) != len(y):
            raise ValueError(f"datasets[{n!r}]: {len(x)} images but {len(y)} targets")
        sizes = getattr(sampler, "sizes", None)
        if sizes is not None and int(sizes[names.index(n)]) != len(x):
            raise ValueError(f"datasets[{n!r}] has {len(x)} samples but the sampler expects "
                             f"{int(sizes[names.index(n)])}")
    epochs = check_int(epochs, "epochs", min_value=0)
    start_epoch = check_int(start_epoch, "start_epoch", min_value=0)
    inner = _unwrap(model)
    branch_names = list(getattr(inner, "branch_names", names))
    missing = [n for n in names if n not in branch_names]
    if missing:
        raise ValueError(f"datasets {missing} have no branch in the model (branches: {branch_names})")
    param = next((p for p in model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    gen = torch.Generator().manual_seed(int(getattr(sampler, "seed", 0)) + 7919)
    history = []
    epoch_iter = range(start_epoch, start_epoch + epochs)
    if progress is not None:
        epoch_iter = progress(epoch_iter, desc="ATF epochs")
    for e in epoch_iter:
        sampler.set_epoch(e)
        model.train()
        tot = {n: 0.0 for n in names}
        cnt = {n: 0 for n in names}
        for d, idx in sampler:
            name = names[d]
            x_all, y_all = datasets[name]
            it = torch.as_tensor(idx, dtype=torch.long)
            x = x_all[it].to(device)
            y = y_all[it].to(device)
            if augment is not None:
                x, y = augment(x, y, gen)
            tgt = target_transform(y) if target_transform is not None else y
            outputs = model(x, branches=_branches_needed(criterion, name, branch_names))
            loss = criterion(outputs, tgt, name)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            tot[name] += float(loss.detach())
            cnt[name] += 1
        if scheduler is not None:
            scheduler.step()
        rec = {"epoch": e, "batches": dict(cnt), "loss": {n: tot[n] / cnt[n] for n in names if cnt[n]}}
        if callback is not None:
            extra = callback(e, model)
            if extra:
                rec.update(extra)
        history.append(rec)
    return history
