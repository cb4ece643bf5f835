"""Loading received buckets into a vLLM model in place, inside vLLM's worker process: the vLLM end of the wire.

Used by every transport that ends in a vLLM worker (the extension's broadcast and in-memory loads,
rayscale.rollout.vllm_extension; rayscale's vLLM weight-transfer engine, rayscale.rollout.vllm_transfer). Torch
only at import: vLLM is imported inside the functions that need it, and Ray never.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import sys
import weakref

import torch

from rayscale.wire.buckets import BucketMeta, dtype_from_name, dtype_name, unflatten
from rayscale.wire.group import SyncGroup
from rayscale.wire.protocol import SyncReport, iter_received


class BucketLoader:
    """Hands vLLM the tensors of received buckets on the engine's device, in its dtype, through warm buffers.
    Used by the extension's own transports and by rayscale's vLLM weight-transfer engine (vllm_transfer.py)."""

    def __init__(self, device, engine_dtype: torch.dtype):
        self.device, self.engine_dtype = torch.device(device), engine_dtype
        self._ring: list = [None, None]  # receive buffers of buckets that are cast (see buffer_for)
        self._cast_ring = _WarmRing(3)
        self._recv_ring = _WarmRing(4)  # receive buffers of buckets vLLM is handed as they are (see buffer_for)

    def received(self, group: SyncGroup, version: int, verify: bool, report: SyncReport):
        """(name, tensor) of every bucket of one broadcast sync, two buckets in flight."""
        for meta, flat in iter_received(group, lambda meta: self.buffer_for(meta, group.device), version, verify,
                                        report, max_in_flight=2):
            yield from self.unflatten(meta, flat, non_blocking=True)

    def buffer_for(self, meta: BucketMeta, device: torch.device) -> torch.Tensor:
        dtype = dtype_from_name(meta.dtype)
        if not self.copies_out(dtype, device):
            # vLLM keeps views of what it is given until each layer is complete, which may be a bucket later. On
            # a CPU (the learner sent the engine's dtype: no cast) warm buffers in turn, one that vLLM still views
            # replaced by a fresh one (_WarmRing); two in flight plus the one being loaded. On a GPU, fresh.
            if device.type == "cpu" and self.device.type == "cpu":
                return self._recv_ring.take(dtype, meta.numel)
            return torch.empty(meta.numel, dtype=dtype, device=device)
        # Cast on the CPU into a new tensor before vLLM sees it: this buffer is free again once its bucket has
        # been handed on, which happens before the bucket two places later is posted (two in flight). So two
        # warm buffers, alternating, instead of a fresh one per bucket, whose page faults cost about as much
        # as the transfer itself.
        slot = meta.index % 2
        if self._ring[slot] is None or self._ring[slot].numel() < meta.nbytes:
            self._ring[slot] = None  # free the old one first
            self._ring[slot] = torch.empty(meta.nbytes, dtype=torch.uint8, device=device)
        return self._ring[slot][: meta.nbytes].view(dtype)

    def copies_out(self, dtype: torch.dtype, device: torch.device) -> bool:
        """True when `unflatten` hands vLLM a synchronous CPU copy of a bucket of `dtype` on `device` (a cast to the
        engine dtype), never a view of the buffer it was received in."""
        return (device.type == "cpu" and self.device.type == "cpu" and dtype.is_floating_point
                and dtype != self.engine_dtype)

    def unflatten(self, meta: BucketMeta, flat: torch.Tensor, non_blocking: bool = False):
        """The bucket's tensors on the engine's device, in the engine's dtype: an fp32 learner feeding a bf16 engine
        is cast once per bucket here (vLLM would cast each tensor anyway, with a warning per tensor)."""
        dtype = self.engine_dtype if flat.is_floating_point() else flat.dtype
        if dtype == flat.dtype:
            return unflatten(meta, flat.to(self.device, non_blocking=non_blocking))
        meta = dataclasses.replace(meta, dtype=dtype_name(dtype))
        if self.copies_out(flat.dtype, flat.device):
            # into a warm buffer: a fresh one per bucket costs page faults worth more than the cast itself
            return unflatten(meta, self._cast_ring.take(dtype, meta.numel).copy_(flat))
        return unflatten(meta, flat.to(self.device, dtype=dtype, non_blocking=non_blocking))


def can_load_in_place(model: torch.nn.Module, model_config) -> bool:
    """Whether `load_in_place` can take this sync instead of vLLM's reload: a CPU engine, no quantization, and
    every layer's post-processing the CPU GEMM packing of an unquantized linear layer (its plain weight dropped,
    its shape recorded by vLLM) or an embedding's (repacked by `after_reload`). Anything else: vLLM's reload."""
    from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod  # vllm: above
    from vllm.model_executor.model_loader.reload.layerwise import get_layerwise_info  # vllm: as above
    from vllm.platforms import current_platform  # vllm: as above

    if not current_platform.is_cpu() or getattr(model_config, "quantization", None) is not None:
        return False
    for module in model.modules():
        method = getattr(module, "quant_method", None)
        if method is None or type(method) is UnquantizedEmbeddingMethod:
            continue
        if not _is_packed_linear(module) or not hasattr(module, "cpu_linear"):
            return False
        recorded = get_layerwise_info(module).restore_metadata[0].get("weight")
        if module.weight.numel() != 0 or recorded is None or recorded.ndim != 2:
            return False  # not a packed 2-D GEMM (MLA's unpacked kv_b_proj, a conv weight): vLLM knows better
        if getattr(module, "tp_size", 1) != 1:
            return False  # a shard of each tensor: load_in_place counts whole tensors
    return True


def load_in_place(model: torch.nn.Module, weights) -> None:
    """Load one whole sync into `model` (`can_load_in_place` said yes) without vLLM's layerwise reload.

    vLLM's `reload_weights` rebuilds every layer for every sync: each parameter restored from its recorded meta
    tensor, materialized, loaded, post-processed, copied back into the old storage, the old tensors put back; for
    SmolLM2 on one core that machinery costs about as much as the packing it exists for. Here every parameter
    that holds its weight (norms, embedding) is loaded by vLLM's own `load_weights` straight into its storage, in
    place. Only a linear layer, whose plain weight vLLM-CPU dropped once it was packed for the CPU GEMM, gets a
    full-size weight again, the moment its first shard arrives (vLLM's recorded parameter and weight loader, so
    q/k/v and gate/up shards land where vLLM puts them), and is packed again by its own
    `process_weights_after_loading` the moment the last arrives, which drops it: one layer's weight at a time.
    `after_reload` then re-packs the embedding (and a tied LM head) from the weights now in place. A layer that
    did not get its whole weight would compute with uninitialized memory: the sync fails naming it."""
    layers = [_PackedLayer(name, module) for name, module in model.named_modules()
              if _is_packed_linear(module)]
    try:
        model.load_weights(weights)
    finally:  # whatever happened, every layer is packed again and vLLM's recorded parameters are as they were
        problems = [problem for layer in layers if (problem := layer.close())]
    if problems:
        raise RuntimeError(f"in-place load: {len(problems)} packed layers did not get exactly their weight, e.g. "
                           f"{'; '.join(problems[:3])}: the sync did not carry what the engine needs")


def _is_packed_linear(module: torch.nn.Module) -> bool:
    from vllm.model_executor.layers.linear import UnquantizedLinearMethod  # vllm: see the module docstring

    return type(getattr(module, "quant_method", None)) is UnquantizedLinearMethod


class _PackedLayer:
    """One linear layer of `load_in_place`: vLLM's recorded (meta) weight stands in for it while `load_weights`
    runs, with a loader that loads into a real weight and packs the layer once all of it has arrived."""

    def __init__(self, name: str, layer: torch.nn.Module):
        from vllm.model_executor.model_loader.reload.layerwise import get_layerwise_info  # vllm: see above
        from vllm.model_executor.model_loader.reload.meta import restore_layer_on_meta  # vllm: as above

        self.name, self.layer, self.info = name, layer, get_layerwise_info(layer)
        self.kept = layer.weight  # the empty weight the packing left: back in place if nothing arrives
        restore_layer_on_meta(layer, self.info)
        self.meta = layer.weight
        self.previous = self.meta.weight_loader
        self.loader = self.previous
        while getattr(self.loader, "__name__", "") == "online_process_loader":  # a vLLM reload's wrapper, left
            self.loader = self.loader.__wrapped__  # on the recorded parameter: it would buffer, never load
        self.numel, self.loaded, self.real = self.meta.numel(), 0, None
        self.meta.weight_loader = self.load

    def load(self, param, loaded_weight: torch.Tensor, *args, **kwargs):
        """vLLM's loader, into the real weight instead of the stand-in (materialized at the first shard)."""
        from vllm.model_executor.model_loader.reload.meta import materialize_layer  # vllm: see the docstring

        if self.real is None:
            materialize_layer(self.layer, self.info)  # uninitialized until its shards are loaded
            self.real = self.layer.weight
        result = self.loader(self.real, loaded_weight, *args, **kwargs)
        self.loaded += loaded_weight.numel()  # all of it lands here: one tensor-parallel rank (can_load_in_place)
        if self.loaded >= self.numel:
            self.pack()
        return result

    def pack(self) -> None:
        self.layer.quant_method.process_weights_after_loading(self.layer)  # packs it, drops the full weight
        self.real = None

    def close(self) -> str | None:
        """Restore vLLM's recorded loader, pack what is still unpacked; a problem, if any."""
        self.meta.weight_loader = self.previous
        if self.real is not None:
            self.pack()
        elif self.layer.weight is self.meta:  # nothing arrived: the old packing and its empty weight stay
            self.layer.weight = self.kept
        if self.loaded != self.numel:
            return f"{self.name} ({self.loaded} of {self.numel} elements)"
        return None


def before_reload(model: torch.nn.Module) -> None:
    """Right before vLLM reloads `model` in place: note its packed CPU GEMMs, for `after_reload` to tell re-packed
    from stale."""
    _PACKED_BEFORE_RELOAD[model] = _packed_gemms(model)


def after_reload(model: torch.nn.Module, device) -> None:
    """Right after an in-place reload: re-pack the GEMMs it left stale, wait for the device."""
    refresh_cpu_gemms(model)
    if torch.device(device).type == "cuda":  # a CPU build of torch has no CUDA to wait for
        torch.cuda.synchronize()


_MALLOC_TUNED = False


def keep_freed_memory_warm() -> bool:
    """glibc malloc, once per process: keep freed memory for reuse instead of handing it back to the OS.

    vLLM's in-place reload builds every layer afresh (new tensors for its weights, re-packed, copied back) and
    frees them again; with glibc's defaults each of those allocations comes back as untouched pages, and the page
    faults cost a CPU engine about a third of a sync (0.15 s of 0.5 s for SmolLM2 on one core). vLLM-CPU asks for
    tcmalloc in LD_PRELOAD for the same reason; this is the same effect without it: allocations up to 32 MB
    from the heap (`M_MMAP_THRESHOLD`, glibc's maximum), freed heap kept up to 256 MB (`M_TRIM_THRESHOLD`) and
    grown 64 MB at a time (`M_TOP_PAD`). The price: the process holds up to that much freed memory. Only in
    the rollout worker's process (a CPU engine's vLLM worker); a no-op without glibc. Returns whether it applied.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    _MALLOC_TUNED = all(mallopt(opt, value) == 1 for opt, value in
                        ((m_mmap_threshold, 32 << 20), (m_trim_threshold, 256 << 20), (m_top_pad, 64 << 20)))
    return _MALLOC_TUNED


class _WarmRing:
    """CPU buffers handed out in turn and reused, for tensors that vLLM copies out of while loading. vLLM keeps
    what it is given until the layer it belongs to is complete (possibly a bucket later): a buffer that anything
    still views is left to its holders and replaced by a fresh one, so reuse never overwrites live weights."""

    def __init__(self, slots: int):
        self.bufs: list[torch.Tensor | None] = [None] * slots
        self.next = 0

    def take(self, dtype: torch.dtype, numel: int) -> torch.Tensor:
        nbytes = numel * dtype.itemsize
        i, self.next = self.next, (self.next + 1) % len(self.bufs)
        buf = self.bufs[i]
        if buf is None or buf.numel() < nbytes or _viewed(buf):
            self.bufs[i] = None  # ours goes; a viewed one lives on with its holders
            buf = self.bufs[i] = torch.empty(nbytes, dtype=torch.uint8)
        return buf[:nbytes].view(dtype)


def _viewed(buf: torch.Tensor) -> bool:
    """Whether any tensor but `buf` uses its storage (over-counts, never under-counts: views of views keep their
    base alive). 2 = `buf` + the temporary storage object of this call."""
    use_count = getattr(torch._C, "_storage_Use_Count", None)
    return use_count is None or use_count(buf.untyped_storage()._cdata) > 2


# model -> {layer: its packed GEMM} taken right before a reload, for refresh_cpu_gemms to tell re-packed from stale
_PACKED_BEFORE_RELOAD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _packed_gemms(model: torch.nn.Module) -> dict[torch.nn.Module, object]:
    """The layers whose CPU GEMM is packed from a weight they keep (embedding, LM head), with that GEMM."""
    out = {}
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if hasattr(module, "cpu_linear") and isinstance(weight, torch.Tensor) and weight.ndim == 2 \
                and weight.numel() > 0 and not weight.is_meta:
            out[module] = module.cpu_linear
    return out


def refresh_cpu_gemms(model: torch.nn.Module) -> int:
    """Re-pack the CPU GEMM of every layer that keeps its weight beside a packed copy the reload left stale;
    returns how many layers got a new GEMM.

    On a CPU, vLLM packs each linear layer's weight for oneDNN once, at load (`layer.cpu_linear`). A reload
    re-packs the layers it loads, but a tied `lm_head` is never loaded under its own name (its weight is the
    embedding's): it would go on computing logits with the old packed weights. Linear layers drop their plain
    weight after packing (empty tensor) and were re-packed by the reload; of the layers that kept theirs
    (embedding and LM head, `remove_weight=False`), those whose GEMM the reload did not replace are stale. A stale
    layer whose weight is the very tensor of a layer packed afresh (a tied LM head: the embedding's weight) takes
    that layer's GEMM; any other is packed again from the weight it now holds (about 55 ms for SmolLM2's
    49152 x 576 head on one core). Without a snapshot from `_rayscale_reload`, every such layer counts as stale.
    """
    from vllm.platforms import current_platform  # vllm: this module imports without it (see the docstring)

    if not current_platform.is_cpu():
        return 0
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm  # vllm: as above

    before = _PACKED_BEFORE_RELOAD.pop(model, None)
    layers = _packed_gemms(model)

    def key(module):  # same storage, shape, strides and dtype: the same matrix
        w = module.weight
        return (w.data_ptr(), tuple(w.shape), w.stride(), w.dtype)

    fresh = {key(m): g for m, g in layers.items() if before is not None and before.get(m) is not g}
    count = 0
    for module, gemm in layers.items():
        if before is not None and before.get(module) is not gemm:
            continue  # re-packed by the reload
        shared = fresh.get(key(module))
        if shared is not None:
            module.cpu_linear = shared  # packed from this very weight
        else:
            dispatch_cpu_unquantized_gemm(module, remove_weight=False)
            fresh[key(module)] = module.cpu_linear
        count += 1
    return count
