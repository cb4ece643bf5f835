"""Applying received buckets to a torch module by name, in place where the layout allows.

The first sync copies nothing: each parameter is re-pointed at its view inside the buffer it arrived in. Every
later sync with the same layout (the normal case: same model, same bucket size) receives straight into those
buffers, so the module is updated with no unpacking copy at all. Entries whose dtype or device differ from the
module's (a bf16 worker fed by an fp32 learner) are copied with a cast instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rayscale.wire.buckets import BucketMeta, Entry, dtype_from_name, unflatten


class SyncError(RuntimeError):
    """A sync that cannot be applied: unknown names, shape mismatches, checksum mismatches, missing tensors."""


@dataclass
class _Bound:
    key: tuple
    flat: torch.Tensor
    copied: list[Entry]  # entries that could not be bound and are copied after every receive


class ModelReceiver:
    def __init__(self, module: torch.nn.Module, bind: bool = True):
        self._targets: dict[str, torch.Tensor] = dict(module.state_dict(keep_vars=True))
        self._bind = bind
        self._bound: dict[int, _Bound] = {}
        self._applied: set[int] = set()  # ids of target tensors written in the current sync (tied weights)
        self._names_seen: set[str] = set()

    def begin(self) -> None:
        self._applied.clear()
        self._names_seen.clear()

    def buffer_for(self, meta: BucketMeta, device: torch.device | str) -> torch.Tensor:
        """Where to receive this bucket: the bound buffer when the layout is unchanged, else a new one."""
        bound = self._bound.get(meta.index)
        if bound is not None and bound.key == meta.layout_key() and bound.flat.device == torch.device(device):
            return bound.flat
        return torch.empty(meta.numel, dtype=dtype_from_name(meta.dtype), device=device)

    @torch.no_grad()
    def apply(self, meta: BucketMeta, flat: torch.Tensor) -> None:
        """Make the module hold this bucket's values. `flat` is what `buffer_for` returned, or any source tensor."""
        bound = self._bound.get(meta.index)
        if bound is not None and bound.flat is flat and self._still_views(meta, bound):
            # received in place: only the unbindable entries need work
            views = dict(unflatten(meta, flat))
            for e in bound.copied:
                self._write(e.name, views[e.name], bind=False)
            for e in meta.entries:  # the bound ones already hold the new values
                self._names_seen.add(e.name)
                self._applied.add(id(self._targets[e.name]))
            return
        if not self._bind or not flat.is_contiguous():
            self._copy_all(meta, flat)
            return
        copied = [e for (name, view), e in zip(unflatten(meta, flat), meta.entries)
                  if not self._write(name, view, bind=True)]
        self._bound[meta.index] = _Bound(meta.layout_key(), flat, copied)

    def _still_views(self, meta: BucketMeta, bound: _Bound) -> bool:
        """Whether every bound parameter of this bucket still is a view of its buffer. A load through another
        layout (a catch-up or a test's scramble with another bucket size) re-points parameters at its own buffers:
        receiving into the old one would then change nothing, a sync that silently loads nothing."""
        copied = {e.name for e in bound.copied}
        base, size, seen = bound.flat.data_ptr(), bound.flat.element_size(), set()
        for e in meta.entries:
            target = self._targets.get(e.name)
            if e.name in copied or target is None or id(target) in seen:
                continue  # copied after every receive, unknown (reported by _write), or a tied alias
            seen.add(id(target))
            if target.data_ptr() != base + e.offset * size:
                return False
        return True

    def _copy_all(self, meta: BucketMeta, flat: torch.Tensor) -> None:
        for name, view in unflatten(meta, flat):
            self._write(name, view, bind=False)

    def _write(self, name: str, value: torch.Tensor, bind: bool) -> bool:
        """Returns True when the target now *is* a view of `value` (bound)."""
        target = self._targets.get(name)
        if target is None:
            raise SyncError(f"the sender sent {name!r}, which this model does not have "
                            f"(it has e.g. {', '.join(list(self._targets)[:5])}, ...)")
        if tuple(target.shape) != tuple(value.shape):
            raise SyncError(f"{name}: sender shape {tuple(value.shape)} != receiver shape {tuple(target.shape)}")
        self._names_seen.add(name)
        if id(target) in self._applied:  # a tied weight already written under another name
            return True
        self._applied.add(id(target))
        if bind and target.dtype == value.dtype and target.device == value.device:
            target.data = value
            return True
        target.data.copy_(value)
        return False

    def finish(self) -> None:
        """Every tensor of the module must have arrived (a tied alias counts through its twin)."""
        missing = [n for n, t in self._targets.items() if n not in self._names_seen and id(t) not in self._applied]
        if missing:
            raise SyncError(f"sync incomplete: {len(missing)} tensors not sent, e.g. {missing[:5]}")
