"""Decoded training images: a cache shared by the loader's workers, and
the loader of a run's epochs (:class:`EpochLoader`) that uses it.

A pretraining run reads every image once per epoch, and with a fixed
preprocessing (resize + centre crop, no augmentation before it) each read
decodes the same file into the same pixels. :class:`PixelCache` keeps the
preprocessed pixels (uint8, H x W x 3) of the first ``slots`` images of a
dataset in a memory-mapped temporary file, so each of them is decoded once
per run instead of once per epoch:

* the file is shared by every DataLoader worker, whether the workers are
  forked or spawned (each process maps it on first use), so there is one
  copy however many workers there are, and a worker started for a later
  epoch finds what earlier ones decoded;
* a one-byte state per slot says whether the slot is empty, holds pixels,
  or belongs to an image that could not be decoded (so an unreadable image
  is reported the same way every epoch without being read again);
* the file is allocated in full when the cache is made (``posix_fallocate``
  where the platform has it), so a full disk disables the cache with a
  message instead of failing mid-run;
* images past ``slots`` (the budget, at most half the free space of the
  temporary folder, divided by one image's size) are decoded every time,
  as without a cache.

The pages live in the operating system's page cache: the kernel may write
them out and read them back under memory pressure, at the speed of the
disk the temporary folder is on.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np
import torch

from ..data.images import ImageError, decode_for, read_bytes

EMPTY, READY, UNREADABLE = 0, 1, 2


def fixed_shape(pre) -> tuple[int, int, int] | None:
    """The (H, W, 3) every image has after ``pre``, or None when it varies
    (a resize without a crop keeps each image's aspect ratio)."""
    if pre.crop is not None:
        return (pre.crop, pre.crop, 3)
    if pre.mode == "squash":
        return (pre.resize, pre.resize, 3)
    return None


def _remove(folder: str, owner: int) -> None:
    if os.getpid() == owner:  # a forked worker's copy never removes the parent's file
        shutil.rmtree(folder, ignore_errors=True)


class PixelCache:
    """Decoded pixels of images 0 .. slots - 1 of a dataset, shared between
    processes (see the module's docstring). ``budget_mb`` bounds the file;
    ``slots`` is 0 (nothing cached) when not even one image fits, when the
    shape varies, or when the file cannot be allocated (``reason`` says why)."""

    def __init__(self, n: int, pre, budget_mb: float, folder: str | None = None):
        self.shape = fixed_shape(pre)
        self.slots, self.reason, self.folder = 0, "", None
        self._owner = os.getpid()
        self._pixels = self._state = None
        if self.shape is None:
            self.reason = "the preprocessing keeps each image's aspect ratio, so sizes vary"
            return
        per = math.prod(self.shape)
        budget = max(0.0, budget_mb) * 2 ** 20
        try:  # never more than half the free space where the file goes
            free = shutil.disk_usage(folder or tempfile.gettempdir()).free
        except OSError:
            free = budget * 2
        self.slots = int(min(n, min(budget, free / 2) // per))
        if self.slots == 0:
            self.reason = ("the budget is 0" if budget_mb <= 0 else f"one image needs {per / 2 ** 20:.2f} MB" if
                           budget < per else f"{free / 2 ** 20:.0f} MB free in the temporary folder")
            return
        try:
            self.folder = tempfile.mkdtemp(prefix="photocritic-pixels-", dir=folder)
            self._finalizer = weakref.finalize(self, _remove, self.folder, self._owner)
            for name, size in (("pixels.u8", self.slots * per), ("state.u8", self.slots)):
                with open(Path(self.folder) / name, "wb") as f:
                    if hasattr(os, "posix_fallocate"):
                        os.posix_fallocate(f.fileno(), 0, size)
                    else:
                        f.truncate(size)
        except OSError as exc:
            self.close()
            self.slots, self.reason = 0, f"cannot allocate the cache file ({exc.strerror or exc})"

    def complete(self, n: int) -> bool:
        """Whether all of images 0 .. n - 1 are cached (or known to be unreadable)."""
        if self.slots < n or n == 0:
            return False
        self._open()
        return not bool((self._state[:n] == EMPTY).any())

    @property
    def bytes(self) -> int:
        return self.slots * math.prod(self.shape) if self.slots else 0

    def _open(self) -> None:
        if self._pixels is None:
            self._pixels = np.memmap(Path(self.folder) / "pixels.u8", dtype=np.uint8, mode="r+",
                                     shape=(self.slots, *self.shape))
            self._state = np.memmap(Path(self.folder) / "state.u8", dtype=np.uint8, mode="r+",
                                    shape=(self.slots,))

    def get(self, i: int) -> np.ndarray | bool | None:
        """A copy of image ``i``'s pixels; False if it is known to be
        unreadable; None if it is not cached (decode it, then :meth:`put`)."""
        if i >= self.slots:
            return None
        self._open()
        state = self._state[i]
        if state == READY:
            return np.array(self._pixels[i])
        return False if state == UNREADABLE else None

    def put(self, i: int, pixels: np.ndarray | None) -> None:
        """Keep image ``i``'s pixels (None: it could not be decoded). The
        state is written after the pixels, so a reader never sees a slot
        marked ready before its pixels are in place."""
        if i >= self.slots:
            return
        self._open()
        if pixels is None:
            self._state[i] = UNREADABLE
            return
        if pixels.shape != self.shape:  # never expected with a fixed shape; decode it every time instead
            return
        self._pixels[i] = pixels
        self._state[i] = READY

    def close(self) -> None:
        """Remove the file (in the process that made it); nothing is cached after."""
        self._pixels = self._state = None
        self.slots = 0
        if getattr(self, "_finalizer", None) is not None:
            self._finalizer()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_pixels"] = state["_state"] = None  # each process maps the file itself
        state["_finalizer"] = None
        return state


def decode_cached(cache: PixelCache | None, i: int, path: str, pre) -> np.ndarray | None:
    """Image ``i``'s preprocessed pixels (a writable array) from ``cache``,
    else decoded from ``path`` (and kept); None if it cannot be decoded."""
    got = None if cache is None else cache.get(i)
    if got is False:
        return None
    if got is None:
        try:
            got = np.array(decode_for(read_bytes(path), pre, path))
        except ImageError:
            got = None
        if cache is not None:
            cache.put(i, got)
    return got


def make_caches(pre, sizes: list[int], budget_mb: float) -> list[PixelCache]:
    """One cache per dataset of ``sizes`` images, filled in order from one
    ``budget_mb`` (the first dataset takes what it needs, the next the rest)."""
    out = []
    for n in sizes:
        cache = PixelCache(n, pre, budget_mb)
        budget_mb -= cache.bytes / 2 ** 20
        out.append(cache)
    return out


def report_caches(say, caches: list[PixelCache], sizes: list[int], budget_mb: float) -> None:
    """One line on what the caches of a run keep (the training set's first)."""
    kept = sum(c.slots for c in caches)
    if kept:
        mb = sum(c.bytes for c in caches) / 2 ** 20
        say(f"keeping {kept} of {sum(sizes)} decoded images ({mb:.0f} MB) for later epochs")
    elif budget_mb > 0 and caches:
        say(f"decoding every image every epoch: {caches[0].reason}")


class EpochBatches(torch.utils.data.Sampler):
    """The batches of the current epoch as lists of (epoch, index): set
    ``batches`` and ``epoch`` before each pass. A DataLoader iterates its
    batch sampler in the main process, so one loader with persistent
    workers serves every epoch (no worker start per epoch)."""

    def __init__(self):
        self.batches, self.epoch = [], 0

    def __iter__(self):
        for b in self.batches:
            yield [(self.epoch, i) for i in b]

    def __len__(self) -> int:
        return len(self.batches)


class EpochLoader:
    """The training batches of each epoch, from a dataset whose items are
    keyed by (epoch, index) and whose ``pixels`` is a :class:`PixelCache`
    (or None). A DataLoader with ``workers`` persistent decoding processes
    serves every epoch (no worker start per epoch) while images still need
    decoding. On a CPU device (``in_process_when_cached``), once every
    image is in the cache, batches are collated in the training process
    instead and the workers are let go: with nothing left to decode, a
    worker would only add copies between processes and compete with the
    training step for the same cores. The batches are the same either way."""

    def __init__(self, data, collate, workers: int, in_process_when_cached: bool):
        self.data, self.collate, self.workers = data, collate, workers
        self.in_process_when_cached = in_process_when_cached
        self.sampler = EpochBatches()
        self.loader = torch.utils.data.DataLoader(data, batch_sampler=self.sampler, num_workers=workers,
                                                  collate_fn=collate, persistent_workers=workers > 0)

    def in_process(self) -> bool:
        if self.workers == 0 or self.loader is None:
            return True
        cache = self.data.pixels
        if self.in_process_when_cached and cache is not None and cache.complete(len(self.data)):
            self.loader = None  # the workers exit
            return True
        return False

    def epoch(self, epoch: int, batches: list[list[int]]):
        """An iterator over the collated batches (None where no image of a batch is readable)."""
        if self.in_process():
            return (self.collate([self.data[(epoch, i)] for i in b]) for b in batches)
        self.sampler.epoch, self.sampler.batches = epoch, batches
        return iter(self.loader)
