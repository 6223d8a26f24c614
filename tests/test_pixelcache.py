"""The shared cache of decoded training images (training/pixelcache.py)."""

import json
import os
import pickle

import numpy as np
import torch

from photocritic.data.images import decode_for, read_bytes
from photocritic.encoders.base import Preprocess
from photocritic.training.pixelcache import PixelCache, fixed_shape
from photocritic.training.pretrain import ImageComments

PRE = Preprocess(resize=40, crop=32, mode="shortest", resample="bilinear", mean=(0.0,) * 3, std=(1.0,) * 3)


def test_shape_and_budget():
    assert fixed_shape(PRE) == (32, 32, 3)
    assert fixed_shape(Preprocess(resize=40, crop=None, mode="squash")) == (40, 40, 3)
    assert fixed_shape(Preprocess(resize=40, crop=None, mode="shortest")) is None
    per = 32 * 32 * 3
    c = PixelCache(100, PRE, budget_mb=10 * per / 2 ** 20)  # room for exactly 10 images
    assert c.slots == 10 and c.bytes == 10 * per
    assert os.path.getsize(os.path.join(c.folder, "pixels.u8")) == 10 * per  # allocated up front
    c.close()
    assert PixelCache(5, PRE, budget_mb=100).slots == 5  # never more slots than images
    none = PixelCache(5, PRE, budget_mb=0)
    assert none.slots == 0 and none.folder is None and "budget" in none.reason
    varying = PixelCache(5, Preprocess(resize=40, crop=None), budget_mb=100)
    assert varying.slots == 0 and "vary" in varying.reason
    nowhere = PixelCache(5, PRE, budget_mb=100, folder="/nonexistent/folder")  # no file: decode every epoch
    assert nowhere.slots == 0 and "cannot allocate" in nowhere.reason and nowhere.get(0) is None


def test_the_cache_takes_at_most_half_the_free_space(monkeypatch, tmp_path):
    import shutil
    from collections import namedtuple

    per = 32 * 32 * 3
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 ** 9, 0, 8 * per + 5))
    c = PixelCache(100, PRE, budget_mb=100, folder=str(tmp_path))
    assert c.slots == 4  # half of 8 images' worth
    c.close()
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 ** 9, 0, per))
    full = PixelCache(100, PRE, budget_mb=100, folder=str(tmp_path))
    assert full.slots == 0 and "free in the temporary folder" in full.reason


def test_put_get_states_and_cleanup():
    c = PixelCache(4, PRE, budget_mb=3 * 32 * 32 * 3 / 2 ** 20)
    assert c.slots == 3
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert c.get(0) is None  # empty
    c.put(0, a)
    got = c.get(0)
    assert np.array_equal(got, a)
    got[:] = 0  # a copy: changing it leaves the cache as it was
    assert np.array_equal(c.get(0), a)
    c.put(1, None)
    assert c.get(1) is False  # known to be unreadable
    c.put(3, a)  # past the slots: not kept
    assert c.get(3) is None
    c.put(2, a[:16])  # a wrong shape is never kept
    assert c.get(2) is None
    # a pickled copy (a spawned worker's) maps the same file, and never removes it
    twin = pickle.loads(pickle.dumps(c))
    assert np.array_equal(twin.get(0), a) and twin.get(1) is False
    twin.put(2, a[::-1].copy())
    assert np.array_equal(c.get(2), a[::-1])
    del twin
    folder = c.folder
    assert os.path.isdir(folder)
    c.close()
    assert not os.path.exists(folder) and c.get(0) is None


def test_workers_share_the_cache_and_see_the_same_pixels(world):
    """A DataLoader worker decodes each image once; the parent (and a later
    epoch) read the same pixels decode_for gives, and an unreadable image
    stays None in every epoch."""
    comments = json.loads((world / "comments.json").read_text())
    names = sorted(comments)[:12]
    paths = [str(world / "images" / k) for k in names]
    paths[5] = str(world / "missing.jpg")
    cache = PixelCache(len(paths), PRE, budget_mb=64)
    data = ImageComments(paths, [comments[k] for k in names], PRE, None, None, pixels=cache)
    loader = torch.utils.data.DataLoader(data, batch_size=4, num_workers=1, collate_fn=lambda items: items)
    first = [it for batch in loader for it in batch]
    assert first[5] is None and all(it is not None for k, it in enumerate(first) if k != 5)
    assert cache.get(5) is False
    for k in (0, 7, 11):  # filled by the worker process, read here
        want = decode_for(read_bytes(paths[k]), PRE, paths[k])
        assert np.array_equal(cache.get(k), want)
        assert torch.equal(first[k][0], torch.from_numpy(np.array(want)))
    # a second pass in this process reads the cache: the same pixels, no file opened
    data.paths = ["/nonexistent"] * len(paths)
    again = [data[(2, k)] for k in range(len(paths))]
    assert again[5] is None
    assert all(torch.equal(a[0], b[0]) for k, (a, b) in enumerate(zip(first, again)) if k != 5)
    cache.close()


def test_pretraining_reports_what_it_cached(world, tiny_clip_dir, tmp_path):
    from photocritic.cli import main

    comments = json.loads((world / "comments.json").read_text())
    (tmp_path / "c.json").write_text(json.dumps(dict(list(comments.items())[:24])))
    args = ["pretrain", "vila-p", "--init", str(tiny_clip_dir), "--captions", str(tmp_path / "c.json"),
            "--images", str(world / "images"), "--batch-size", "8", "--gen-queries", "4", "--val-fraction", "0",
            "--epochs", "1", "-q", "--precision", "fp32", "--workers", "0"]
    assert main([*args, "--output", str(tmp_path / "a")]) == 0
    assert main([*args, "--output", str(tmp_path / "b"), "--image-cache-mb", "0"]) == 0
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in "ab")
    assert a["cached_images"] == 24 and b["cached_images"] == 0
    assert a["epochs"][0]["train_loss"] == b["epochs"][0]["train_loss"]  # the same pixels either way


def test_pair_loader_collates_in_process_once_everything_is_cached(world):
    """Epoch 1 decodes in a worker; then every image is cached and (on CPU)
    the batches are collated in this process: the same batches either way,
    each epoch's comments drawn from its own epoch."""
    from photocritic.encoders import coca as C
    from photocritic.training.pixelcache import EpochLoader
    from photocritic.training.pretrain import collate_pairs

    comments = json.loads((world / "comments.json").read_text())
    names = sorted(comments)[:20]
    tok = C.train_tokenizer([t for v in comments.values() for t in v], vocab_size=300)
    ids = tuple(tok.convert_tokens_to_ids(t) for t in ("<bos>", "<eos>", "<pad>"))
    config = C.random_config("tiny", len(tok), ids, gen_queries=4)
    paths = [str(world / "images" / k) for k in names]
    paths[3] = str(world / "missing.jpg")

    def loader(cache, workers, in_process):
        data = ImageComments(paths, [comments[k] for k in names], PRE, tok, config, seed=3, pixels=cache)
        return EpochLoader(data, collate_pairs(tok, config), workers, in_process_when_cached=in_process)

    batches = [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]]
    cache = PixelCache(len(paths), PRE, budget_mb=64)
    fast = loader(cache, 1, True)
    reference = loader(None, 0, True)  # decodes everything, every epoch, in this process
    assert not fast.in_process()
    for epoch in (1, 2, 3):
        got, want = list(fast.epoch(epoch, batches)), list(reference.epoch(epoch, batches))
        assert len(got) == len(want) == 3
        for g, w in zip(got, want):
            assert all(torch.equal(a, b) for a, b in zip(g, w))
        assert len(got[0][3]) == 3  # the missing image is left out of its batch
        assert fast.in_process() and fast.loader is None  # complete after the first epoch: no worker left
    cache.close()
    slow = loader(PixelCache(len(paths), PRE, budget_mb=64), 1, False)  # an accelerator keeps its worker
    list(slow.epoch(1, batches))
    assert not slow.in_process() and slow.loader is not None
    part = PixelCache(len(paths), PRE, budget_mb=5 * 32 * 32 * 3 / 2 ** 20)
    some = loader(part, 1, True)
    list(some.epoch(1, batches))
    assert not some.in_process()  # images past the budget still need decoding
    part.close()


def test_the_cache_budget_must_be_a_size(capsys):
    from photocritic.cli import main

    for bad in ("-1", "nan", "lots"):
        try:
            code = main(["pretrain", "vila-p", "--init", "random:tiny", "--captions", "c.json", "--images", ".",
                         "--output", "out", "--image-cache-mb", bad])
        except SystemExit as exc:
            code = exc.code
        assert code == 2
        assert "--image-cache-mb" in capsys.readouterr().err
