import contextlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PHOTOCRITIC_SHARED", REPO.parent / "shared"))


TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")
needs_torchrun = pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None,
                                    reason="torchrun is not installed beside this python")


CHROMIUM = os.environ.get("PHOTOCRITIC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (Debian: apt-get install "
                                                              "chromium; or set PHOTOCRITIC_CHROMIUM to a Chromium binary)")


@contextlib.contextmanager
def served(critic):
    """A real uvicorn server on loopback in a thread serving ``critic``; yields its URL."""
    import socket
    import threading
    import time

    import uvicorn

    from photocritic.serving import create_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(critic), host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        t.join(10)


@contextlib.contextmanager
def browser_page():
    """A page of headless Chromium (through Playwright), closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            yield browser.new_page(viewport={"width": 1200, "height": 900})
        finally:
            browser.close()


def run_processes(args: list[str], procs: int, cwd, **env) -> None:
    """``photocritic ARGS`` as ``procs`` data-parallel processes: one is the
    plain in-process run (torchrun would add only its start-up), more go
    through torchrun with one thread each (``env``: extra variables for them).
    Their temporary files (torchrun's own ``torchelastic_*`` folders) go in
    ``cwd``, a test's temporary folder, not in the machine's /tmp."""
    from photocritic.cli import main

    if procs == 1:
        assert main([str(a) for a in args]) == 0
        return
    cmd = [TORCHRUN, "--nproc_per_node", str(procs), "-m", "photocritic", *map(str, args)]
    res = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(cwd), **env}, capture_output=True, text=True,
                         timeout=300, cwd=cwd)
    # a failing process's own message first (torchrun's report of it comes last and is long)
    said = [line for line in res.stderr.splitlines() if line.startswith(("photocritic:", "Traceback"))
            or "Error:" in line and "[rank" in line]
    assert res.returncode == 0, "\n".join(said[-20:]) + "\n...\n" + res.stderr[-2000:]


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """300 images of the synthetic world from scikit-image's 5 photos (tests
    need no Debian package), with labels, attributes and comments."""
    from photocritic.data.synthetic import find_sources, synthesize

    out = tmp_path_factory.mktemp("world")
    synthesize(out, 300, seed=3, sources=list(find_sources(debian=False)), min_sources=8)
    return out


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    """One feature store for the session's trainings on ``world``."""
    return tmp_path_factory.mktemp("store") / "features.sqlite"


@pytest.fixture(scope="session")
def tiny_text(tmp_path_factory):
    """A tiny random BERT with MiniLM's tokenizer: a comment encoder that is fast to run."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from photocritic.encoders.text import packaged_minilm_dir

    d = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(str(packaged_minilm_dir()), local_files_only=True)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def train_cli(args, store):
    """`photocritic train ARGS` in-process, on the session's feature store, in fp32."""
    from photocritic.cli import main

    return main(["train", *args, "--cache", str(store), "-q", "--precision", "fp32"])


@pytest.fixture(scope="session")
def trained(world, store, tmp_path_factory):
    """Every frozen method trained once on EfficientNet-Lite0 features (one extraction)."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for method, extra in (("linear", []), ("linear-pooled", ["--ridge", "auto", "--param", "view=image.pooled"]),
                          ("nima", []), ("mlp", []), ("vila-r", [])):
        out[method] = root / method
        assert train_cli([method.split("-pooled")[0], "--backbone", "efficientnet-lite0", "--dataset", str(world),
                       "--split", "train", "--val-split", "val", "--output", str(out[method]), *extra], store) == 0
    return out


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never touch the user's real cache; never try the network for models."""
    monkeypatch.setenv("PHOTOCRITIC_CACHE", str(tmp_path_factory.mktemp("cache") / "emb.sqlite"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared_images():
    d = SHARED / "data" / "images"
    if not d.is_dir():
        pytest.skip(f"{d} not found: the project's shared data is not beside this checkout")
    return d


@pytest.fixture(scope="session")
def lite():
    import photocritic

    return photocritic.load("lite", precision="fp32")


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    from photocritic.encoders.tiny import save_random_clip

    return save_random_clip(tmp_path_factory.mktemp("tiny-clip"), size="tiny", kind="clip")


@pytest.fixture(scope="session")
def tiny_siglip_dir(tmp_path_factory):
    from photocritic.encoders.tiny import save_random_clip

    return save_random_clip(tmp_path_factory.mktemp("tiny-siglip"), size="tiny", kind="siglip")


def photo(seed: int, size=(160, 120)) -> Image.Image:
    """A smooth random colour field with some edges: a cheap stand-in photo."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    chans = []
    for _ in range(3):
        a, b, c = rng.uniform(-3, 3, 3)
        chans.append(127 + 120 * np.sin(a * xx * 6 + b * yy * 6 + c))
    arr = np.stack(chans, -1)
    x0, y0 = rng.integers(0, w // 2), rng.integers(0, h // 2)
    arr[y0:y0 + h // 3, x0:x0 + w // 3] = rng.uniform(0, 255, 3)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def jpeg_bytes(im: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def write_broken_files(folder: Path) -> dict[str, str]:
    """One file of every broken kind; returns {filename: expected status}."""
    folder.mkdir(parents=True, exist_ok=True)
    good = jpeg_bytes(photo(999, (320, 240)))
    png = io.BytesIO()
    photo(998).save(png, "PNG")
    png = png.getvalue()
    expected = {}

    def put(name, data, kind):
        (folder / name).write_bytes(data)
        expected[name] = kind

    put("empty.jpg", b"", "empty")
    put("truncated.jpg", good[: len(good) // 2], "truncated")
    put("truncated.png", png[: len(png) // 2], "truncated")
    put("garbage_after_header.jpg", good[:20] + bytes(range(256)) * 40, "corrupt")
    put("bad_png_header.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "corrupt")
    put("text.jpg", b"this is a text file, not a photo\n" * 10, "not_image")
    put("html.png", b"<html><body>404 not found</body></html>", "not_image")
    (folder / "a_directory.jpg").mkdir()
    expected["a_directory.jpg"] = "unreadable"
    return expected


def write_style_lists(folder: Path, ids: list[str], labels: np.ndarray) -> Path:
    """AVA's style_image_lists for the 14 styles: a one-image train list and
    the test list ``ids`` with its 0/1 label rows."""
    from photocritic.methods.styles import STYLE_PHRASES

    folder.mkdir()
    names = list(STYLE_PHRASES)
    (folder / "styles.txt").write_text("".join(f"{k + 1} {n}\n" for k, n in enumerate(names)))
    (folder / "train.jpgl").write_text("1\n")
    (folder / "train.lab").write_text("1\n")
    (folder / "test.jpgl").write_text("".join(f"{i}\n" for i in ids))
    (folder / "test.multilab").write_text("".join(" ".join(map(str, r)) + "\n" for r in labels))
    return folder


def gray(b: float, seed: int, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.clip(b * 255 + rng.normal(0, 12, (size, size, 1)), 0, 255)
    return np.repeat(a, 3, axis=2).astype(np.uint8)


@pytest.fixture(scope="session")
def brightness_clip(tmp_path_factory):
    """A tiny CLIP trained here, for a few hundred steps, on images of graded
    brightness captioned by how bright they are."""
    from transformers import CLIPModel, CLIPTokenizer

    from photocritic.encoders.base import Preprocess
    from photocritic.encoders.tiny import save_random_clip

    d = save_random_clip(tmp_path_factory.mktemp("bright-clip"), size="tiny", kind="clip", seed=5)
    model = CLIPModel.from_pretrained(str(d))
    tok = CLIPTokenizer.from_pretrained(str(d))
    pre = Preprocess(resize=64, crop=64, mean=(0.48145466, 0.4578275, 0.40821073),
                     std=(0.26862954, 0.26130258, 0.27577711))
    captions = ["a very dark photo", "a dark photo", "a bright photo", "a very bright photo"]
    text = tok(captions, padding=True, return_tensors="pt")
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model.train()
    for step in range(300):
        # one image per caption bucket, so every caption in the batch is distinct
        b = [(k + rng.random()) / 4 for k in range(4)]
        pix = pre.normalize(torch.from_numpy(np.stack([gray(v, 1000 + 4 * step + k) for k, v in enumerate(b)])))
        out = model(input_ids=text["input_ids"], attention_mask=text["attention_mask"],
                    pixel_values=pix, return_loss=True)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(str(d))
    return d
