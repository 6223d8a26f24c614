"""VILA-P on the synthetic aesthetic world: the paper's Table 2 (zero-shot
SRCC, VILA-R on top) and Table 5 (style / attribute zero-shot mAP), its
critiques (CIDEr-D against a nearest-neighbour retrieval baseline; how often
a critique names the edit applied), and the speed checks.

Stages, as in the paper, on a world split by source photo (70/10/20):

1. *general*: a CoCa with random weights (``random:small``) pretrained on
   generic captions of the training images ("a photo of a bridge" - the
   content of the source photo, nothing about aesthetics). Its tokenizer is
   trained on those captions and on the training comments' text (a general
   tokenizer knows the words of comments; no pairing is used).
2. *VILA-P*: the general CoCa pretrained on the training images' user
   comments (contrastive + captioning).

Then, on the test photos (sources neither stage saw): zero-shot SRCC with
VILA's six prompt pairs; VILA-R trained on the training ratings on top of
each CoCa (with seeds 0..4, as one VILA-R's test SRCC moves by several
hundredths with its seed; their mean is compared); zero-shot mAP of ten
edit "attributes" (dark, blurry, noisy ...); critiques (greedy) against the nearest-neighbour baseline (the first comment
of the closest training image, by the same model's image embedding); and the
rate at which critiques name the edit applied. The same for critiques by
mutual-information decoding (``critique --pmi``), its weight chosen on the
validation images by CIDEr-D.

``--part information``: where the comment-to-image information is lost
(:func:`information`); it trains no CoCa.

``--part zero-shot-seeds --work DIR [--pretrain-seeds 3]``: VILA-P
pretrained again with other seeds from the same general stage, and the
zero-shot gain per seed and of the mean over seeds, with both prompt sets
(:func:`zero_shot_seeds`).

``--part attribute-map --work DIR [--variant NAME]``: the zero-shot
attribute mAPs and the paired CI of their difference, from the models a
quality run left in ``DIR``, added to that run's entry (the quality part
computes them too).

``--part speed``: pretraining steps/s with the real data loader (JPEG files;
with the shared cache of decoded images that pretraining uses, and decoding
every epoch) against in-memory tensors, and critique tokens/s with and
without the key-value cache at 64 tokens.

    python benchmarks/vilap.py [--n 3000] [--part all|quality|speed|information|attribute-map|zero-shot-seeds]
writes benchmarks/results/vilap.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, world_summary, write_results  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "vilap.json"

#: generic (content) captions of the source photos: what a general image-text corpus would say
CONTENT = {
    "Bridge_by_Sander_Klootwijk": "a bridge", "Dragonfly_by_Bolly": "a dragonfly on a plant",
    "Picture_0B_by_freespace": "a landscape", "Picture_1A_by_freespace": "a landscape with trees",
    "Wine_by_Jakkub_Mede": "a glass of wine", "aitzgorri_by_Aitzol_Berasategi": "a mountain ridge",
    "free_by_Peter_Nerlich": "a bird in the sky", "friends_by_Aitzol_Berasategi": "two animals in a field",
    "greentock_by_Peter_Nerlich": "green leaves", "life_by_Aitzol_Berasategi": "a small plant",
    "picosdeeuropa_by_Aitzol_Berasategi": "mountains and clouds",
    "seeding_by_Clements_Engelhardt": "a dandelion seed", "sunset_by_Aitzol_Berasategi": "a sunset",
    "Infinite-Sea_by_Aury88": "the sea", "Kleiber_by_Lukas_Baubkus": "a small bird on a branch",
    "BytheWater": "a lake shore", "ColdRipple": "ripples on water", "DarkestHour": "a night sky",
    "EveningGlow": "an evening sky", "FallenLeaf": "a fallen leaf", "Grey": "a grey landscape",
    "Kite": "a kite in the sky", "OneStandsOut": "a single flower", "Path": "a path through a forest",
    "summer_1am": "a summer night", "Volna": "a wave", "skimage-astronaut": "an astronaut",
    "skimage-coffee": "a cup of coffee", "skimage-chelsea": "a cat", "skimage-rocket": "a rocket",
    "skimage-stereo_motorcycle": "a motorcycle", "skimage-hubble_deep_field": "galaxies in space",
    "skimage-immunohistochemistry": "cells under a microscope", "skimage-retina": "a scan of a retina",
}
GENERIC = ["a photo of {}", "{}", "a picture of {}", "an image showing {}"]
#: zero-shot prompt pairs in the words the world's commenters use (VILA's own pairs, "good image" /
#: "bad image" ..., use words its comments never contain: both are reported)
WORLD_PROMPTS = {"name": "world-vocabulary", "rule": "antonym", "pairs": [
    ["beautiful light", "too dark"], ["tack sharp", "blurry"], ["gorgeous colours", "the colours look washed out"],
    ["well composed", "awkward crop"], ["very clean and crisp", "too much noise"],
    ["great use of light", "the exposure is off"]]}

#: attribute -> (edit test on a labels row, two prompts, keywords a critique naming it would use,
#: the commenters' phrase for it)
ATTRIBUTES = {
    "dark": (lambda r: r["exposure"] < -1.5, ["a dark photo", "a photo that is too dark"], ["dark"], "Too dark."),
    "overexposed": (lambda r: r["exposure"] > 1.5, ["an overexposed photo", "a photo with blown out highlights"],
                    ["blown out", "exposure"], "Blown out highlights."),
    "blurry": (lambda r: r["defocus"] > 0.5, ["a blurry photo", "an out of focus photo"],
               ["blurry", "out of focus", "soft"], "Blurry."),
    "noisy": (lambda r: r["noise"] > 0.5, ["a noisy photo", "a grainy photo"], ["noise", "grainy"], "Too much noise."),
    "tilted": (lambda r: abs(r["tilt"]) > 8, ["a photo with a tilted horizon", "a crooked photo"], ["tilted"], "The horizon is tilted."),
    "washed out": (lambda r: r["saturation"] < 0.4, ["a photo with washed out colours", "a colourless photo"],
                   ["washed out"], "The colours look washed out."),
    "colour cast": (lambda r: r["cast"] > 0.15, ["a photo with a colour cast", "a photo with a strange tint"],
                    ["cast"], "A strange colour cast."),
    "shallow depth of field": (lambda r: r["dof"] > 0.6, ["a photo with a blurred background",
                                                          "a photo with shallow depth of field"],
                               ["bokeh", "background blur", "shallow"], "Lovely bokeh."),
    "compressed": (lambda r: r["jpeg"] > 0.75, ["a photo with compression artefacts", "a blocky photo"],
                   ["compression"], "Ugly compression artefacts."),
    "pixelated": (lambda r: r["resolution"] > 0.7, ["a pixelated photo", "a low resolution photo"],
                  ["pixelated"], "Looks pixelated."),
}


def run(cmd: list[str]) -> None:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "photocritic", *cmd], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"failed: photocritic {' '.join(cmd)}\n{res.stderr[-3000:]}")
    print(f"  photocritic {cmd[0]} {cmd[1] if len(cmd) > 1 else ''}: {time.perf_counter() - t0:.0f} s", flush=True)


def pretrain_stage(cmd: list[str], out: Path, label: str) -> float:
    """Run a pretraining command unless ``out`` holds a finished run of the
    same command (``--work`` of an earlier run; the runs are deterministic);
    returns its training seconds."""
    done = out / "train_args.json"
    if (out / "metrics.json").exists() and done.exists() and json.loads(done.read_text()) == cmd:
        print(f"  {label}: reused from --work", flush=True)
    else:
        run([*cmd, "--overwrite"])
        done.write_text(json.dumps(cmd))
    return json.loads((out / "metrics.json").read_text())["seconds"]


def looks(r: dict) -> list[str]:
    """The plain visual facts a general caption may state (alt text says "a dark photo of ...",
    "a blurry picture of ..."; it does not judge composition, noise, colour or focus depth)."""
    out = []
    if r["exposure"] < -1.5:
        out.append("dark")
    elif r["exposure"] > 1.5:
        out.append("bright")
    if r["defocus"] > 0.5:
        out.append("blurry")
    return out


def write_captions(world: Path, rows: list[dict], comments: dict, out: Path) -> dict:
    """generic.json (two general captions per image: its source photo's
    content, and in half of them its plain visual facts) and
    comments_train.json (user comments), for the train + val images."""
    rng = np.random.default_rng(0)
    generic, aesthetic = {}, {}
    for r in rows:
        if r["split"] == "test":
            continue
        name = Path(r["path"]).name
        content = CONTENT.get(r["source"], "a photo")
        facts = looks(r)
        caps = []
        for t in rng.permutation(GENERIC)[:2]:
            if facts and rng.random() < 0.5:
                caps.append(f"a {', '.join(facts)} photo of {content}")
            else:
                caps.append(t.format(content))
        generic[name] = caps
        aesthetic[name] = comments[name]
    (out / "generic.json").write_text(json.dumps(generic))
    (out / "comments_train.json").write_text(json.dumps(aesthetic))
    return {"generic_images": len(generic), "comment_images": len(aesthetic),
            "comments": sum(len(v) for v in aesthetic.values()),
            "generic_with_facts": sum(any(" photo of " in c and c.split(" photo of ")[0] != "a" for c in v)
                                      for v in generic.values())}


def oracle_contrastive(rows: list[dict], batch: int = 64, appeals: list[float] | None = None,
                       draws: int = 1, seed: int = 0) -> dict:
    """How much a single comment can tell about its image in this world: the
    text-to-image InfoNCE loss (batches of ``batch``) of the Bayes oracle
    that knows every image's true attribute qualities and edits and the
    comment generator, against chance, log(batch). A comment's opener and
    closer are drawn independently of its image, so the oracle's likelihood
    ratio is that of its phrase, whose exact distribution per image
    :func:`photocritic.data.synthetic.comment_phrase_probabilities` gives.

    With ``appeals`` (the training sources' appeals) the oracle knows only
    what the pixels of a photo no training image shows can tell: the edits.
    The hidden appeal is one of ``appeals`` and the mood U(0, 1), so whether
    content and emotion are praised is marginalised out. Each image's
    comment is still drawn with its true qualities. The loss is averaged
    over ``draws`` batchings of the rows (the first in their order), with a
    comment drawn per image in each."""
    from photocritic.data.synthetic import ATTRIBUTES as ATTRS
    from photocritic.data.synthetic import EDITS, SOUND, comment_phrase_probabilities

    hidden = None
    if appeals is not None:  # content = a, emotion = 0.6 a + 0.4 m (attribute_qualities), m ~ U(0, 1)
        a = np.asarray(appeals, dtype=float)
        hidden = {"content": float(np.mean(a > SOUND)),
                  "emotion": float(np.mean(1 - np.clip((SOUND - 0.6 * a) / 0.4, 0, 1)))}  # P(emotion > SOUND)
    true, known = [], []
    for r in rows:
        q = {k: (float(r[k]) - 1) / 9 for k in ATTRS}
        edits = {k: float(r[k]) for k in EDITS}
        true.append(comment_phrase_probabilities(q, edits))
        known.append(true[-1] if hidden is None else comment_phrase_probabilities(q, edits, good=hidden))
    phrases = sorted({p for d in true + known for p in d})
    true, known = (np.array([[d.get(p, 0.0) for p in phrases] for d in ds]) for ds in (true, known))
    rng = np.random.default_rng(seed)
    losses = []
    for d in range(draws):  # the first in the rows' order; then shuffled
        order = np.arange(len(rows)) if d == 0 else rng.permutation(len(rows))
        for s in range(0, len(rows) - batch + 1, batch):
            ix = order[s:s + batch]
            said = np.array([rng.choice(len(phrases), p=p / p.sum()) for p in true[ix]])
            lik = known[ix][:, said]  # [image j, comment i]
            losses.append(float(np.mean(np.log(lik.sum(0)) - np.log(np.diag(lik)))))
    return {"oracle_loss": float(np.mean(losses)), "chance": float(np.log(batch)), "batch": batch,
            "knows": "edits only" if appeals is not None else "edits, appeal and mood", "draws": draws}


def phrase_ids(comment_lists: list[list[str]]) -> tuple[list[list[int]], int]:
    """Each comment's phrase (the generator's own list; openers and closers carry nothing): a text
    encoder that reads a comment perfectly."""
    from photocritic.data.synthetic import ATTRIBUTES as ATTRS
    from photocritic.data.synthetic import NOISE, PRAISE, criticisms

    phrases = sorted({p for a in ATTRS for p in PRAISE[a] + criticisms(a)} | set(NOISE))
    assert not any(p != o and p in o for p in phrases for o in phrases), "a phrase inside another"
    return [[next(k for k, p in enumerate(phrases) if p in c.lower()) for c in cs] for cs in comment_lists], \
        len(phrases)


def pixel_statistics(path: str) -> np.ndarray:
    """Hand features of what the edits change, and little of what the photo shows: per-channel
    mean and spread, the share of clipped dark and bright pixels, mean gradients and a 16-bin grey
    histogram (a thumbnail would let a learner tell the training photos apart, and it over-fits)."""
    from PIL import Image

    im = Image.open(path).convert("RGB")
    a = np.asarray(im.resize((128, 128)), dtype=np.float32) / 255
    g = a.mean(2)
    return np.concatenate([a.mean((0, 1)), a.std((0, 1)), [(g < 0.02).mean(), (g > 0.98).mean(),
                           np.abs(np.diff(g, axis=1)).mean(), np.abs(np.diff(g, axis=0)).mean()],
                           np.histogram(g, bins=16, range=(0, 1))[0] / g.size])


def fixed_feature_learner(x: np.ndarray, phrases: list[list[int]], n_phrases: int, split: np.ndarray,
                          epochs: int = 100, batch: int = 64, seed: int = 0, draws: int = 10) -> dict:
    """CLIP-style contrastive learning on fixed image features with a perfect text encoder: a
    linear map of the (standardised) features and one learnt vector per phrase, 64-d, symmetric
    InfoNCE with a learnt temperature, one random comment per image per step, AdamW. Returns the
    validation losses of the best epoch (by text-to-image loss) and the test losses there, each the
    mean over ``draws`` orders of the held-out images with a comment drawn per image."""
    import torch.nn.functional as F

    tr, va, te = (np.where(split == s)[0] for s in ("train", "val", "test"))
    mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
    x = torch.tensor(((x - mu) / sd).astype(np.float32))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    image = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(x.shape[1], 64))
    text = torch.nn.Embedding(n_phrases, 64)
    scale = torch.nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))
    opt = torch.optim.AdamW([*image.parameters(), *text.parameters(), scale], lr=1e-3, weight_decay=0.05)

    def losses(idx, pid):
        logits = scale.exp().clamp(max=100) * F.normalize(text(pid), dim=-1) @ F.normalize(image(x[idx]), dim=-1).T
        y = torch.arange(len(idx))
        return F.cross_entropy(logits, y), F.cross_entropy(logits.T, y)  # text->image, image->text

    fixed = np.random.default_rng([seed, 1])  # held-out batches: 10 orders, a comment drawn per image in each
    held = {name: [(order, torch.tensor([phrases[i][fixed.integers(len(phrases[i]))] for i in order]))
                   for order in (fixed.permutation(ix) for _ in range(draws))]
            for name, ix in (("val", va), ("test", te))}

    @torch.no_grad()
    def evaluate(name):
        v = [losses(ix[s:s + batch], pid[s:s + batch]) for ix, pid in held[name]
             for s in range(0, len(ix) - batch + 1, batch)]
        t2i = float(np.mean([a.item() for a, _ in v]))
        return {"text_to_image": t2i, "symmetric": float(np.mean([(a.item() + b.item()) / 2 for a, b in v]))}

    best = None
    for epoch in range(1, epochs + 1):
        image.train()
        order = rng.permutation(tr)
        for s in range(0, len(order) - batch + 1, batch):
            idx = order[s:s + batch]
            t2i, i2t = losses(idx, torch.tensor([phrases[i][rng.integers(len(phrases[i]))] for i in idx]))
            opt.zero_grad()
            ((t2i + i2t) / 2).backward()
            opt.step()
        image.eval()
        val = evaluate("val")
        if best is None or val["text_to_image"] < best["val"]["text_to_image"]:
            best = {"epoch": epoch, "val": val, "test": evaluate("test")}
    return {**best, "epochs": epochs, "features": int(x.shape[1]), "held_out_draws": draws}


def information(args, tmp: Path) -> dict:
    """``--part information``: where the comment-to-image information of the world is lost. The
    Bayes oracle's loss knowing everything, and knowing only the edits (the hidden appeal and mood
    marginalised: all a photo no training image shows can tell); then CLIP-style learners with a
    perfect text encoder on fixed image features: the true edit strengths (the edits known, no
    pixels), hand pixel statistics, and EfficientNet-Lite0's pooled features (PCA to 32, as all
    2,912 over-fit the training photos)."""
    import photocritic
    from photocritic.data.synthetic import EDITS, VISUAL
    from photocritic.features import EmbeddingCache

    world_dir, world, rows = make_world(args, tmp)
    info = json.loads((world_dir / "world.json").read_text())
    appeals = [s["appeal"] for s in info["sources"] if s["split"] == "train"]
    out = {"world": world, "batch": 64, "chance": float(np.log(64)), "oracle": {}}
    for name in ("val", "test"):
        part = [r for r in rows if r["split"] == name]
        out["oracle"][name] = {"knows everything": oracle_contrastive(part, draws=10)["oracle_loss"],
                               "knows the edits only": oracle_contrastive(part, appeals=appeals,
                                                                          draws=10)["oracle_loss"]}
        print(name, out["oracle"][name], flush=True)
    comments = json.loads((world_dir / "comments.json").read_text())
    phrases, n_phrases = phrase_ids([comments[Path(r["path"]).name] for r in rows])
    split = np.array([r["split"] for r in rows])
    paths = [str(world_dir / r["path"]) for r in rows]
    truth = np.array([[float(r[k]) for k in EDITS + VISUAL] + [abs(float(r["tilt"])), max(0.0, -float(r["exposure"])),
                      max(0.0, float(r["exposure"])), abs(np.log(float(r["contrast"])))] for r in rows])
    _, lite = photocritic.load("lite").embed_paths(paths, EmbeddingCache(None), batch_size=64)
    lite = np.asarray(lite, dtype=np.float64)
    tr = split == "train"
    centred = lite - lite[tr].mean(0)
    lite32 = centred @ np.linalg.svd(centred[tr], full_matrices=False)[2][:32].T
    out["learners"] = {}
    for name, x in (("true edit strengths and visual qualities", truth),
                    ("pixel statistics", np.stack([pixel_statistics(p) for p in paths])),
                    ("EfficientNet-Lite0 pooled, PCA 32", lite32)):
        out["learners"][name] = fixed_feature_learner(x, phrases, n_phrases, split, seed=args.seed)
        print(name, json.dumps(out["learners"][name]), flush=True)
    return out


@torch.no_grad()
def phrase_auc(model, paths: list[str], rows: list[dict]) -> dict:
    """Per attribute: the AUC with which the captioner's log-probability of
    the commenters' phrase for it ("Too dark.") separates the test images
    with that edit from the others (0.5: it does not know)."""
    from scipy.stats import mannwhitneyu

    from photocritic.data.images import decode_for, read_bytes
    from photocritic.encoders.coca import tokenize

    enc = model.encoder
    pre = model.preprocess
    phrases = [spec[3] for spec in ATTRIBUTES.values()]
    ids, mask = tokenize(enc.tokenizer, phrases, enc.model.config)
    logp = np.zeros((len(paths), len(phrases)))
    for s in range(0, len(paths), 32):
        px = torch.stack([torch.from_numpy(decode_for(read_bytes(p), pre).copy()) for p in paths[s:s + 32]])
        gen = enc.model.encode_image(pre.normalize(px).float())["generative"]
        for j in range(len(phrases)):
            states, _ = enc.model.text_states(ids[j:j + 1].expand(len(px), -1), mask[j:j + 1].expand(len(px), -1))
            kv = enc.model.image_kv(gen)
            lp = torch.log_softmax(enc.model.decode(states[:, :-1], kv).float(), -1)
            labels = ids[j, 1:][None].expand(len(px), -1)
            keep = mask[j, 1:].bool()
            logp[s:s + len(px), j] = lp.gather(2, labels[..., None])[..., 0][:, keep].sum(1).numpy()
    out = {}
    for j, (name, spec) in enumerate(ATTRIBUTES.items()):
        has = np.array([bool(spec[0](r)) for r in rows])
        if has.sum() and (~has).sum():
            u = mannwhitneyu(logp[has, j], logp[~has, j]).statistic
            out[name] = float(u / (has.sum() * (~has).sum()))
    out["mean"] = float(np.mean(list(out.values())))
    return out


def embed(model, paths):
    from photocritic.features import EmbeddingCache

    rows, emb = model.embed_paths(paths, EmbeddingCache(None), batch_size=64)
    assert all(r.status == "ok" for r in rows)
    return emb


def paired_gain(a, b, true: np.ndarray, n_boot: int = 1000) -> dict:
    """SRCC(a) - SRCC(b) with a paired bootstrap 95% CI (images resampled).
    ``a`` and ``b`` may each be a list of score arrays (models trained with
    different seeds): then the gain is that of their mean SRCCs, every
    model scored on the same resample."""
    from photocritic.metrics import srcc

    a = a if isinstance(a, list) else [a]
    b = b if isinstance(b, list) else [b]

    def gain(i):
        return float(np.mean([srcc(x[i], true[i]) for x in a]) - np.mean([srcc(x[i], true[i]) for x in b]))

    rng = np.random.default_rng(0)
    vals = [gain(rng.integers(0, len(true), len(true))) for _ in range(n_boot)]
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return {"gain": gain(np.arange(len(true))), "ci95": [float(lo), float(hi)]}


def vilap_command(args, tmp: Path, output: Path, common: list[str]) -> list[str]:
    """The VILA-P stage's command: from ``tmp/general``, on the training comments."""
    return ["pretrain", "vila-p", "--init", str(tmp / "general"), "--captions", str(tmp / "comments_train.json"),
            "--output", str(output), "--epochs", str(args.epochs), "--lr", str(args.lr),
            "--lr-image", str(args.lr_image), "--alpha", str(args.alpha), "--beta", str(args.beta),
            "--lr-temperature", str(args.lr_temperature),
            *(["--same-text-positives"] if args.same_text_positives else []), *common]


def saved_run(args, work: Path) -> tuple[Path, list[dict], list[str]]:
    """The world, test rows and test image paths of a quality run whose
    general and VILA-P models are in ``work`` (``--work`` of ``--part quality``)."""
    if not all((work / stage / "config.json").exists() for stage in ("general", "vilap")):
        raise SystemExit(f"--part {args.part}: {work} has no trained general and vilap models "
                         "(run --part quality --work DIR first)")
    world_dir, _, rows = make_world(args, work)
    test = [r for r in rows if r["split"] == "test"]
    return world_dir, test, [str(world_dir / r["path"]) for r in test]


def zero_shot_seeds(args, work: Path) -> dict:
    """``--part zero-shot-seeds``: VILA-P pretrained again from the same
    general stage (in ``--work``, from ``--part quality``) with seeds
    1 .. N-1 (its batch order and validation split; seed 0 is the quality
    run's own), and the zero-shot SRCC gain over the general stage with
    both prompt sets, for each seed and for the mean over seeds (paired
    bootstrap, every model scored on the same resample)."""
    import photocritic
    from photocritic.methods.zeroshot import PromptSet
    from photocritic.metrics import srcc

    world_dir, test, tpaths = saved_run(args, work)
    mean = np.array([sum(k * int(r[f"score{k}"]) for k in range(1, 11)) / sum(int(r[f"score{k}"]) for k in range(1, 11))
                     for r in test])
    common = ["--images", str(world_dir / "images"), "--batch-size", str(args.batch_size), "--precision", "fp32",
              "-q"]
    dirs, seconds = {0: work / "vilap"}, {}
    for seed in range(1, args.pretrain_seeds):
        dirs[seed] = work / f"vilap-seed{seed}"
        seconds[seed] = pretrain_stage(vilap_command(args, work, dirs[seed], [*common, "--seed", str(seed)]),
                                       dirs[seed], f"VILA-P stage, seed {seed}")

    def scores(path: Path, prompts) -> np.ndarray:
        m = photocritic.load(str(path), precision="fp32", **({"prompts": prompts} if prompts else {}))
        return np.array([float(r) for r in m.score(tpaths, batch_size=64)])

    out = {"seeds": list(dirs), "pretrain_seconds": seconds}
    for name, prompts in (("vila", None), ("world_vocabulary", PromptSet.from_dict(WORLD_PROMPTS))):
        before = scores(work / "general", prompts)
        after = {seed: scores(d, prompts) for seed, d in dirs.items()}
        out[name] = {"before": srcc(before, mean), "after": {str(k): srcc(v, mean) for k, v in after.items()},
                     "gain_per_seed": {str(k): paired_gain(v, before, mean) for k, v in after.items()},
                     "gain_of_the_mean": paired_gain(list(after.values()), before, mean)}
        print(name, json.dumps({k: out[name][k] for k in ("before", "after", "gain_of_the_mean")}), flush=True)
    return out


def attribute_scores(model, paths: list[str], rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Zero-shot attribute classification: the edit labels (images, edits)
    and each image's score per edit from the model's contrastive towers (a
    prompt pair averaged per attribute)."""
    from photocritic.methods import styles as ST

    labels = np.array([[float(spec[0](r)) for spec in ATTRIBUTES.values()] for r in rows])
    prompts = [spec[1] for spec in ATTRIBUTES.values()]
    text = model.text_embeddings([p for group in prompts for p in group])
    return labels, ST.style_scores(embed(model, paths), text, 2)


def map_gain(labels: np.ndarray, a: np.ndarray, b: np.ndarray, n_boot: int = 1000) -> dict:
    """mAP(a) - mAP(b) on the same images, with a paired bootstrap 95% CI
    (images resampled; an edit with no image in a resample is left out of
    both means, as :func:`mean_average_precision` does)."""
    from photocritic.metrics import mean_average_precision

    def gain(i):
        return mean_average_precision(labels[i], a[i])[0] - mean_average_precision(labels[i], b[i])[0]

    rng = np.random.default_rng(0)
    vals = [gain(rng.integers(0, len(labels), len(labels))) for _ in range(n_boot)]
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return {"after": mean_average_precision(labels, a)[0], "before": mean_average_precision(labels, b)[0],
            "gain": float(gain(np.arange(len(labels)))), "ci95": [float(lo), float(hi)]}


def attribute_map(args, work: Path) -> dict:
    """``--part attribute-map``: the zero-shot attribute mAPs of the general
    stage and of VILA-P already trained in ``--work`` (by ``--part
    quality`` with the same ``--n`` and ``--seed``), with the paired CI of
    their difference, computed as the quality part does."""
    import photocritic

    _, test, tpaths = saved_run(args, work)
    atts = {}
    for stage in ("general", "vilap"):
        labels, atts[stage] = attribute_scores(photocritic.load(str(work / stage), precision="fp32"), tpaths, test)
    out = map_gain(labels, atts["vilap"], atts["general"])
    print(json.dumps(out), flush=True)
    return out


def vilar_dir(tmp: Path, stage: str, seed: int) -> Path:
    """Where the VILA-R of ``stage`` trained with ``seed`` goes (seed 0: the original single run's folder)."""
    return tmp / (f"vilar-{stage}" if seed == 0 else f"vilar-{stage}-seed{seed}")


def make_world(args, tmp: Path) -> tuple[Path, dict, list[dict]]:
    """The world of ``--n`` and ``--seed`` in ``tmp/world`` (one already there is reused), its
    summary and its labels' rows (the edit strengths as numbers)."""
    import csv

    from photocritic.data.synthetic import find_sources, synthesize

    t0 = time.perf_counter()
    world_dir = tmp / "world"
    if (world_dir / "world.json").exists():  # --work DIR of an earlier run: reused
        info = json.loads((world_dir / "world.json").read_text())
        world = {"images": info["n"], "sources": len(info["sources"]), "splits": info["images_per_split"],
                 "version": info["version"]}
        assert info["n"] == args.n and info["seed"] == args.seed, "--work holds a world of another size or seed"
    else:
        world = synthesize(world_dir, args.n, seed=args.seed, sources=find_sources(), min_sources=30)
    print(f"world: {world['splits']} in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = list(csv.DictReader(open(world_dir / "labels.csv")))
    for r in rows:
        for k in ("exposure", "defocus", "noise", "tilt", "saturation", "cast", "dof", "jpeg", "resolution"):
            r[k] = float(r[k])
    return world_dir, world, rows


def quality(args, tmp: Path) -> dict:
    import photocritic
    from photocritic.captioning import caption_scores
    from photocritic.metrics import mean_average_precision, plcc, srcc

    world_dir, world, rows = make_world(args, tmp)
    comments = json.loads((world_dir / "comments.json").read_text())
    data = write_captions(world_dir, rows, comments, tmp)
    images = str(world_dir / "images")
    common = ["--images", images, "--batch-size", str(args.batch_size), "--precision", "fp32", "-q",
              "--seed", str(args.seed)]
    general = ["pretrain", "vila-p", "--init", f"random:{args.size}", "--captions", str(tmp / "generic.json"),
               "--tokenizer-corpus", str(tmp / "comments_train.json"), "--output", str(tmp / "general"),
               "--epochs", str(args.general_epochs), "--lr", "1e-3", "--lr-image", "1e-3",
               *(["--image-size", str(args.image_size)] if args.image_size else []), *common]
    vilap = vilap_command(args, tmp, tmp / "vilap", common)
    timing = {"general_seconds": pretrain_stage(general, tmp / "general", "general stage"),
              "vilap_seconds": pretrain_stage(vilap, tmp / "vilap", "VILA-P stage")}
    for stage in ("general", "vilap"):
        for seed in range(args.vila_r_seeds):
            run(["train", "vila-r", "--backbone", str(tmp / stage), "--dataset", str(world_dir), "--split", "train",
                 "--val-split", "val", "--output", str(vilar_dir(tmp, stage, seed)), "--seed", str(seed),
                 "--no-cache", "-q", "--overwrite"])
    test = [r for r in rows if r["split"] == "test"]
    train = [r for r in rows if r["split"] == "train"]
    tpaths = [str(world_dir / r["path"]) for r in test]
    true = np.array([float(r["true_mean"]) for r in test])
    mean = np.array([sum(k * int(r[f"score{k}"]) for k in range(1, 11)) / sum(int(r[f"score{k}"]) for k in range(1, 11))
                     for r in test])
    out = {"world": world_summary(world), "data": data, "timing": timing,
           "val_contrastive_by_epoch": {stage: [round(e["val_contrastive"], 4) for e in json.loads(
               (tmp / stage / "metrics.json").read_text())["epochs"]] for stage in ("general", "vilap")},
           "settings": {k: getattr(args, k) for k in ("n", "seed", "size", "image_size", "general_epochs", "epochs",
                                                    "lr", "lr_image", "alpha", "beta", "lr_temperature",
                                                    "batch_size", "same_text_positives", "pmi_samples",
                                                    "pmi_weights", "vila_r_seeds")},
           "test_images": len(test), "stages": {}}
    scores, models, atts = {}, {}, {}
    for stage in ("general", "vilap"):
        m = photocritic.load(str(tmp / stage), precision="fp32")
        models[stage] = m
        zs = np.array([float(r) for r in m.score(tpaths, batch_size=64)])
        from photocritic.methods.zeroshot import PromptSet

        zw = np.array([float(r) for r in photocritic.load(str(tmp / stage), precision="fp32",
                                                          prompts=PromptSet.from_dict(WORLD_PROMPTS))
                       .score(tpaths, batch_size=64)])
        vrs = [np.array([float(r) for r in photocritic.load(str(vilar_dir(tmp, stage, seed)), precision="fp32")
                         .score(tpaths, batch_size=64)]) for seed in range(args.vila_r_seeds)]
        vr = vrs[0]
        scores[stage] = (zs, vr, zw, vrs)
        labels, att = attribute_scores(m, tpaths, test)
        atts[stage] = att
        mp, aps = mean_average_precision(labels, att)
        out["stages"][stage] = {
            "zero_shot": {"srcc": srcc(zs, mean), "plcc": plcc(zs, mean), "srcc_true_mean": srcc(zs, true)},
            "zero_shot_world_vocabulary": {"srcc": srcc(zw, mean), "plcc": plcc(zw, mean)},
            "vila_r": {"srcc": srcc(vr, mean), "plcc": plcc(vr, mean)},
            "vila_r_seeds": {"srcc": [srcc(v, mean) for v in vrs],
                             "mean_srcc": float(np.mean([srcc(v, mean) for v in vrs])),
                             "best_epochs": [json.loads((vilar_dir(tmp, stage, seed) / "metrics.json").read_text())
                                             ["history"]["best_epoch"] for seed in range(args.vila_r_seeds)]},
            "attribute_map": mp, "attribute_ap": dict(zip(ATTRIBUTES, map(float, aps))),
            "attribute_base_rates": dict(zip(ATTRIBUTES, map(float, labels.mean(0))))}
        print(f"{stage}: {json.dumps({k: v for k, v in out['stages'][stage].items() if k != 'attribute_ap'})}",
              flush=True)
    out["zero_shot_gain"] = paired_gain(scores["vilap"][0], scores["general"][0], mean)
    out["vila_r_gain"] = paired_gain(scores["vilap"][1], scores["general"][1], mean)
    out["vila_r_seed_mean_gain"] = paired_gain(scores["vilap"][3], scores["general"][3], mean)
    out["zero_shot_world_vocabulary_gain"] = paired_gain(scores["vilap"][2], scores["general"][2], mean)
    out["attribute_map_gain"] = map_gain(labels, atts["vilap"], atts["general"])
    # critiques against the nearest-neighbour retrieval baseline
    vp = models["vilap"]
    t = time.perf_counter()
    crit = vp.critique(tpaths, max_tokens=64, batch_size=64)
    gen_seconds = time.perf_counter() - t
    cands = {Path(r["path"]).name: c.critique for r, c in zip(test, crit)}
    refs = {Path(r["path"]).name: comments[Path(r["path"]).name] for r in test}
    from photocritic.retrieval import exact_topk, normalise

    tr_paths = [str(world_dir / r["path"]) for r in train]
    sims, nearest = exact_topk(normalise(embed(vp, tr_paths)), normalise(embed(vp, tpaths)), 1)
    nn = {Path(r["path"]).name: comments[Path(train[int(j[0])]["path"]).name][0] for r, j in zip(test, nearest)}
    general_crit = {Path(r["path"]).name: c.critique for r, c in
                    zip(test, models["general"].critique(tpaths, max_tokens=64, batch_size=64))}
    out["critiques"] = {"vilap_greedy": caption_scores(refs, cands), "nearest_neighbour": caption_scores(refs, nn),
                        "general_greedy": caption_scores(refs, general_crit),
                        "generation_seconds": round(gen_seconds, 2),
                        "distinct_critiques": len(set(cands.values())),
                        "examples": [{"image": k, "critique": cands[k], "references": refs[k]}
                                     for k in list(cands)[:8]]}
    # does a critique name the edit applied?
    out["edit_naming"], out["edit_naming_mean"] = edit_naming(cands, test)
    out["comment_information"] = oracle_contrastive(test, draws=10)
    out["edit_phrase_auc"] = phrase_auc(vp, tpaths, test)
    # mutual-information decoding: its weight chosen on the validation images by CIDEr-D
    val = [r for r in rows if r["split"] == "val"]
    vpaths = [str(world_dir / r["path"]) for r in val]
    vrefs = {Path(r["path"]).name: comments[Path(r["path"]).name] for r in val}
    reference = None
    if vp.encoder.reference_pixels() is None:  # a model pretrained before references were saved
        pick = np.random.default_rng([args.seed, 7]).permutation(len(train))[:32]
        reference = [tr_paths[int(i)] for i in pick]
    pmi = {"samples": args.pmi_samples, "validation": {}}
    for w in args.pmi_weights:
        got = vp.critique(vpaths, max_tokens=64, batch_size=64,
                          pmi={"samples": args.pmi_samples, "weight": w, "reference": reference})
        vc = {Path(r["path"]).name: c.critique for r, c in zip(val, got)}
        pmi["validation"][str(w)] = {"cider": caption_scores(vrefs, vc)["cider"],
                                     "edit_naming_mean": edit_naming(vc, val)[1]}
    weight = max(args.pmi_weights, key=lambda w: pmi["validation"][str(w)]["cider"])
    t = time.perf_counter()
    got = vp.critique(tpaths, max_tokens=64, batch_size=64,
                      pmi={"samples": args.pmi_samples, "weight": weight, "reference": reference})
    pmi_seconds = time.perf_counter() - t
    pc = {Path(r["path"]).name: c.critique for r, c in zip(test, got)}
    naming, mean = edit_naming(pc, test)
    pmi.update(weight=weight, reference=f"{len(reference)} training images" if reference else "saved with the model",
               test=caption_scores(refs, pc), generation_seconds=round(pmi_seconds, 2),
               distinct_critiques=len(set(pc.values())), edit_naming=naming, edit_naming_mean=mean,
               examples=[{"image": k, "critique": pc[k], "references": refs[k]} for k in list(pc)[:8]])
    out["critiques_mutual_information"] = pmi
    print(json.dumps({k: out[k] for k in ("zero_shot_gain", "zero_shot_world_vocabulary_gain", "vila_r_gain",
                                          "vila_r_seed_mean_gain",
                                          "edit_naming_mean")}), flush=True)
    print(json.dumps({k: v for k, v in out["critiques"].items() if k != "examples"}), flush=True)
    print(json.dumps({k: v for k, v in pmi.items() if k not in ("examples", "edit_naming")}), flush=True)
    return out


def edit_naming(cands: dict[str, str], rows: list[dict], n_boot: int = 1000) -> tuple[dict, dict]:
    """Per edit, how often a critique uses one of its keywords for the images
    with that edit and for the others; and the means over the edits, with
    their difference and its 95% CI (images resampled with replacement)."""
    from photocritic.captioning import caption_tokens

    naming, has, said = {}, [], []
    for name, (test_fn, _, words, _) in ATTRIBUTES.items():
        h = np.array([bool(test_fn(r)) for r in rows])
        s = np.array([any(w in caption_tokens(cands[Path(r["path"]).name]) for w in words) for r in rows])
        if h.sum() and (~h).sum():
            naming[name] = {"images_with_edit": int(h.sum()), "named_when_applied": float(s[h].mean()),
                            "named_otherwise": float(s[~h].mean())}
            has.append(h)
            said.append(s)
    has, said = np.array(has), np.array(said)  # (edits, images)

    def gap(idx):
        h, s = has[:, idx], said[:, idx]
        rates = [(s[k][h[k]].mean() - s[k][~h[k]].mean()) for k in range(len(h)) if h[k].any() and (~h[k]).any()]
        return float(np.mean(rates))

    rng = np.random.default_rng(0)
    boots = [gap(rng.integers(0, has.shape[1], has.shape[1])) for _ in range(n_boot)]
    mean = {"named_when_applied": float(np.mean([v["named_when_applied"] for v in naming.values()])),
            "named_otherwise": float(np.mean([v["named_otherwise"] for v in naming.values()])),
            "difference": gap(np.arange(has.shape[1])),
            "difference_ci95": [float(x) for x in np.percentile(boots, [2.5, 97.5])],
            "edits_named_more_when_applied": int(sum(v["named_when_applied"] > v["named_otherwise"]
                                                     for v in naming.values()))}
    return naming, mean


def speed(args, tmp: Path) -> dict:
    """Steps/s: real loader vs in-memory tensors; tokens/s with and without the KV cache."""
    from photocritic.data.synthetic import find_sources, synthesize
    from photocritic.encoders import coca as C
    from photocritic.training.pixelcache import EpochLoader, PixelCache
    from photocritic.training.pretrain import ImageComments, _forward, collate_pairs, pair_losses

    world_dir = tmp / "speed-world"
    n = 512
    synthesize(world_dir, n, seed=1, sources=list(find_sources(debian=False)), min_sources=8)
    comments = json.loads((world_dir / "comments.json").read_text())
    names = sorted(comments)
    tok = C.train_tokenizer([t for v in comments.values() for t in v])
    ids = tuple(tok.convert_tokens_to_ids(t) for t in ("<bos>", "<eos>", "<pad>"))
    out = {}
    rounds_of = {"tiny": 5, "small": 3, "vit-b-16": 1}  # the small shapes' rounds are short: more of them
    for size, bs, steps in (("tiny", 32, 16), ("small", 32, 12), ("vit-b-16", 16, 4)):
        torch.manual_seed(0)
        model = C.CoCa(C.random_config(size, len(tok), ids, gen_queries=16 if size != "vit-b-16" else 196))
        pre = C.preprocess_of(model.config)
        take = names[:bs * steps]
        collate = collate_pairs(tok, model.config)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(batch):
            pixels, tid, mask, idx = batch
            out_ = _forward(model, pixels, tid, mask, pre, "cpu", torch.ones(len(idx), dtype=torch.bool))
            con, cap, _, _ = pair_losses(out_, 1, "cpu")
            opt.zero_grad()
            (con + 2 * cap).backward()
            opt.step()

        # the pretraining loader (a persistent decoding worker while images need decoding), with the
        # shared cache of decoded images that pretraining makes, and without it (decoding every epoch)
        cache = PixelCache(len(take), pre, 2048)
        batches = [list(range(k, k + bs)) for k in range(0, len(take), bs)]
        loaders, epochs = {}, {"loader": 0, "decoding": 0}
        for name, pixels in (("loader", cache), ("decoding", None)):
            data = ImageComments([str(world_dir / "images" / k) for k in take], [comments[k] for k in take], pre,
                                 tok, model.config, pixels=pixels)
            loaders[name] = EpochLoader(data, collate, args.workers, in_process_when_cached=True)

        def loader(name):
            epochs[name] += 1
            return loaders[name].epoch(epochs[name], batches)

        memory = [b for b in loader("loader")]  # the first pass decodes and fills the cache, and starts the worker
        first = [b for b in loader("decoding")]  # starts that loader's worker
        assert all(torch.equal(a[0], b[0]) for a, b in zip(memory, first))
        model.train()
        step(memory[0])  # warm-up
        rates = {"memory": [], "loader": [], "decoding": []}
        for _ in range(rounds_of[size]):  # interleaved rounds
            t = time.perf_counter()
            for b in memory:
                step(b)
            rates["memory"].append(len(memory) / (time.perf_counter() - t))
            for name in ("loader", "decoding"):
                t = time.perf_counter()
                k = 0
                for b in loader(name):
                    step(b)
                    k += 1
                rates[name].append(k / (time.perf_counter() - t))
        cache.close()
        mem_rate, load_rate = float(np.median(rates["memory"])), float(np.median(rates["loader"]))
        dec_rate = float(np.median(rates["decoding"]))
        model.eval()
        px = pre.normalize(memory[0][0][:8])
        gen = {"with_cache": [], "without_cache": []}
        for cache in (True, False):
            model.generate(px, max_tokens=4, use_cache=cache)
        for _ in range(rounds_of[size]):  # interleaved rounds; the medians are reported, each speed-up as well
            for cache in (True, False):
                t = time.perf_counter()
                tokens = 0
                while tokens == 0 or time.perf_counter() - t < 0.5:  # at least half a second a round
                    seqs = model.generate(px, max_tokens=64, use_cache=cache, stop_at_end=False)
                    tokens += sum(len(s) for s in seqs)
                gen["with_cache" if cache else "without_cache"].append(tokens / (time.perf_counter() - t))
        rounds = [a / b for a, b in zip(gen["with_cache"], gen["without_cache"])]
        gen = {k: float(np.median(v)) for k, v in gen.items()}
        out[size] = {"loader_in_process": loaders["loader"].in_process(), "steps_per_s_loader": load_rate, "steps_per_s_memory": mem_rate,
                     "loader_over_memory": load_rate / mem_rate, "steps_per_s_loader_decoding": dec_rate,
                     "decoding_over_memory": dec_rate / mem_rate, "batch_size": bs, "steps": steps,
                     "image_size": model.config.vision["image_size"], "loader_workers": args.workers,
                     "tokens_per_s_with_cache": gen["with_cache"], "tokens_per_s_without_cache": gen["without_cache"],
                     "cache_speedup": gen["with_cache"] / gen["without_cache"],
                     "cache_speedup_rounds": rounds, "rounds": rounds_of[size],
                     "loader_over_memory_rounds": [a / b for a, b in zip(rates["loader"], rates["memory"])],
                     "generation_batch": 8,
                     "tokens": 63}
        print(size, json.dumps(out[size]), flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", default="small")
    ap.add_argument("--image-size", type=int, help="the random init's input side (default: its size's)")
    ap.add_argument("--general-epochs", type=int, default=25)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--lr-image", type=float, default=1e-4)
    ap.add_argument("--alpha", type=float, default=1.0, help="VILA-P's contrastive weight")
    ap.add_argument("--lr-temperature", type=float, default=0.01, help="VILA-P's temperature rate")
    ap.add_argument("--beta", type=float, default=2.0, help="VILA-P's captioning weight")
    ap.add_argument("--same-text-positives", action="store_true",
                    help="VILA-P's contrastive loss treats equal comment texts as positives")
    ap.add_argument("--pmi-samples", type=int, default=8, help="samples per image of mutual-information decoding")
    ap.add_argument("--pmi-weights", type=float, nargs="+", default=[0.5, 1.0, 1.5],
                    help="weights of log p(c) tried on the validation images (the best CIDEr-D is kept)")
    ap.add_argument("--variant", help="store the quality figures under quality_variants[NAME] (a run with "
                                      "other VILA-P settings), keeping the main ones")
    ap.add_argument("--vila-r-seeds", type=int, default=5,
                    help="VILA-R is trained on each encoder with seeds 0..N-1 (initialisation and batch order); "
                         "the seed-0 figures are reported alone as well")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--part", choices=["all", "quality", "speed", "information", "attribute-map",
                                       "zero-shot-seeds"], default="all")
    ap.add_argument("--pretrain-seeds", type=int, default=3,
                    help="--part zero-shot-seeds: VILA-P is pretrained with seeds 0..N-1")
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--work", help="keep the world and models here (a second run reuses the world and "
                                   "the general stage); default: a temporary folder")
    args = ap.parse_args()
    print(machine_line(), flush=True)
    old = json.loads(Path(args.results).read_text()) if Path(args.results).exists() else {}
    fields = {k: old[k] for k in ("quality", "speed", "quality_variants", "information") if k in old}
    with tempfile.TemporaryDirectory(prefix="vilap-bench-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.part in ("all", "speed"):
            fields["speed"] = speed(args, Path(tmp))
        if args.part == "information":
            fields.setdefault("information", {})[f"{args.n} images, seed {args.seed}"] = information(args, work)
        if args.part in ("attribute-map", "zero-shot-seeds"):
            if not args.work:
                raise SystemExit(f"--part {args.part} needs --work DIR (where --part quality trained its models)")
            entry = fields.setdefault("quality_variants", {}).get(args.variant) if args.variant \
                else fields.get("quality")
            if entry is None:
                raise SystemExit(f"--part {args.part}: {args.results} has no quality entry "
                                 f"{args.variant or ''} to add to")
            if args.part == "attribute-map":
                entry["attribute_map_gain"] = attribute_map(args, work)
            else:
                entry["zero_shot_over_pretraining_seeds"] = zero_shot_seeds(args, work)
        if args.part in ("all", "quality"):
            res = quality(args, work)
            if args.variant:
                fields.setdefault("quality_variants", {})[args.variant] = res
            else:
                fields["quality"] = res
    write_results(args.results, **fields)
    print(f"-> {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
