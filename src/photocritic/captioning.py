"""Generated critiques: many images -> one aesthetic comment each, from a
model that can generate (a VILA-P model; ``photocritic critique``), and
their evaluation against reference comments (``photocritic eval --task
captions``).

Images are read and decoded exactly as for scoring (the same errors, the
same statuses): a bad file gets a row with its status and message and every
other file is critiqued.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
from PIL import Image

from .data.images import DEFAULT_MAX_BYTES
from .errors import UsageError


@dataclass
class CritiqueRow:
    path: str
    critique: str = ""
    status: str = "pending"
    error: str = ""

    def as_dict(self, extra=()) -> dict:
        return {"path": self.path, "critique": self.critique, "status": self.status, "error": self.error}


def check_captioner(critic) -> None:
    """A usage error (exit 2) unless ``critic``'s backbone can generate text."""
    spec = critic.encoder_spec
    if spec is None or spec.get("type") != "coca":
        kind = "no image backbone" if spec is None else f"backbone {spec['type']}"
        raise UsageError(f"model {critic.name} cannot generate critiques ({kind}; a VILA-P model from "
                         f"`photocritic pretrain vila-p` can); with a model trained with --retrieve-comments, "
                         f"--retrieve K shows the comments of similar images instead")


@dataclass
class MutualInformation:
    """Mutual-information decoding (:meth:`~photocritic.encoders.coca.CoCa.generate_pmi`):
    ``samples`` nucleus samples (``temperature``, ``top_p``) besides the
    greedy critique, the one kept maximising log p(c | image) - ``weight``
    * log p(c), p(c) averaged over the ``reference`` images (paths or
    folders; default: those saved with the model). ``seed`` with each
    image's pixels seeds its samples, so a critique does not depend on the
    batch it is in."""
    samples: int = 8
    weight: float = 1.0
    reference: list | None = None
    seed: int = 0
    temperature: float = 1.0
    top_p: float = 0.95

    def __post_init__(self):
        if self.samples < 0 or not 0 < self.top_p <= 1 or self.temperature <= 0 or self.weight < 0:
            raise UsageError(f"mutual-information decoding: samples >= 0, 0 < top_p <= 1, temperature > 0 and "
                             f"weight >= 0 (got {self.samples}, {self.top_p}, {self.temperature}, {self.weight})")


def mutual_information(pmi) -> MutualInformation | None:
    """``pmi`` as the API takes it (None/False: off, True: the defaults, a
    dict of :class:`MutualInformation` fields, or one) -> its settings."""
    if pmi is None or pmi is False:
        return None
    if pmi is True:
        return MutualInformation()
    if isinstance(pmi, dict):
        unknown = set(pmi) - set(MutualInformation.__dataclass_fields__)
        if unknown:
            raise UsageError(f"mutual-information decoding has no setting {sorted(unknown)[0]!r} "
                             f"(settings: {', '.join(MutualInformation.__dataclass_fields__)})")
        return MutualInformation(**pmi)
    if isinstance(pmi, MutualInformation):
        return pmi
    raise UsageError(f"pmi: True, a dict of settings or a MutualInformation, not {type(pmi).__name__}")


def reference_images(critic, paths) -> torch.Tensor:
    """uint8 (R, H, W, 3) reference images for mutual-information decoding:
    ``paths`` (image files and/or folders) decoded as for scoring, or the
    ones saved with the model; a usage error when there are none."""
    import numpy as np

    from .data.images import ImageError, decode_for, list_images, read_bytes

    if paths is None:
        ref = critic.encoder.reference_pixels()
        if ref is None:
            raise UsageError(f"model {critic.name} has no reference images for mutual-information decoding "
                             f"(`photocritic pretrain vila-p` saves them); pass some with --pmi-reference")
        return ref
    files = list_images([paths] if isinstance(paths, (str, os.PathLike)) else list(paths))
    pixels, bad = [], []
    for f in files:
        try:
            pixels.append(torch.from_numpy(np.array(decode_for(read_bytes(f), critic.preprocess, f))))
        except (ImageError, OSError) as exc:
            bad.append(f"{f}: {exc}")
    if not pixels:
        raise UsageError("--pmi-reference: no readable image" + (f" ({bad[0]})" if bad else ""))
    return torch.stack(pixels)


def critique_inputs(critic, inputs, max_tokens: int = 64, beams: int = 1, batch_size: int = 16,
                    workers: int | None = None, decode: str = "auto", max_bytes: int | None = DEFAULT_MAX_BYTES,
                    progress: bool = False, pmi=None) -> list[CritiqueRow]:
    """One :class:`CritiqueRow` per input (paths and/or PIL images), in
    order: greedy (``beams`` 1), beam search, or with ``pmi`` mutual-information decoding."""
    import zlib

    import numpy as np

    from .models import PRECISIONS
    from .pipeline import _name, each_batch

    check_captioner(critic)
    pmi = mutual_information(pmi)
    if pmi is not None and beams > 1:
        raise UsageError("mutual-information decoding chooses among samples: it takes no --beams")
    inputs = list(inputs)
    rows = [CritiqueRow(path=f"<image {i}>" if isinstance(x, Image.Image) else _name(x))
            for i, x in enumerate(inputs)]
    pre = critic.preprocess
    enc = critic.encoder
    dtype = PRECISIONS[critic.precision]
    opts = None
    if pmi is not None:
        ref = pre.normalize(reference_images(critic, pmi.reference)).to(dtype)
        opts = {"reference": enc.reference_context(ref),
                "samples": pmi.samples, "weight": pmi.weight, "temperature": pmi.temperature, "top_p": pmi.top_p}

    def generate(idx: list[int], pixels: torch.Tensor):
        extra = {}
        if opts is not None:
            seeds = [int(np.random.SeedSequence([pmi.seed, zlib.crc32(p.numpy().tobytes())]).generate_state(1)[0])
                     for p in pixels]
            extra["pmi"] = {**opts, "seeds": seeds}
        texts = enc.generate(pre.normalize(pixels).to(dtype), max_tokens=max_tokens, beams=beams, **extra)
        for i, t in zip(idx, texts):
            rows[i].critique, rows[i].status = t, "ok"

    each_batch(critic, inputs, rows, generate, batch_size=batch_size, workers=workers, decode=decode,
               max_bytes=max_bytes, progress=progress, desc="critiquing", verb="critiqued")
    return rows


def decoding_name(beams: int, pmi: MutualInformation | None) -> str:
    if pmi is not None:
        return (f"mutual information: {pmi.samples} samples (temperature {pmi.temperature}, top-p {pmi.top_p}) "
                f"and the greedy critique, weight {pmi.weight}, seed {pmi.seed}")
    return "greedy" if beams == 1 else f"beam search, {beams} beams"


_PUNCT = re.compile(r"[^\w\s']")


def caption_tokens(text: str) -> str:
    """Lower-cased words without punctuation, space-separated: how both
    candidates and references are tokenised before BLEU/ROUGE-L/CIDEr-D
    (the COCO toolkit's PTB tokenizer drops punctuation likewise)."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def caption_scores(refs: dict[str, list[str]], cands: dict[str, str]) -> dict:
    """BLEU-1..4, ROUGE-L and CIDEr-D of one candidate per id against its references."""
    from .metrics import caption_metrics

    keys = [k for k in cands if refs.get(k)]
    r = {k: [caption_tokens(t) for t in refs[k]] for k in keys}
    c = {k: [caption_tokens(cands[k])] for k in keys}
    out = caption_metrics(r, c) if len(keys) >= 2 else {}
    out["n"] = len(keys)
    return out


def evaluate_captions(critic, ds, comments: dict[str, list[str]], output, max_tokens: int = 64, beams: int = 1,
                      batch_size: int = 16, progress: bool = False, decode: str = "auto",
                      workers: int | None = None, split_info: dict | None = None, pmi=None) -> dict:
    """Generate a critique for every image of ``ds`` that has reference
    comments and score them against those references (BLEU-1..4, ROUGE-L,
    CIDEr-D); writes ``metrics.json``, ``critiques.jsonl`` and ``report.md``
    to ``output``."""
    import json
    import time
    from pathlib import Path

    from .evaluation import json_safe

    check_captioner(critic)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    if ds.root is None:
        raise UsageError(f"dataset {ds.name} has no image folder: pass --images DIR")
    refs = {i: [t for t in comments.get(i, []) if t.strip()] for i in ds.ids}
    with_refs = [k for k, i in enumerate(ds.ids) if refs[i]]
    if len(with_refs) < 2:
        raise UsageError(f"only {len(with_refs)} images of {ds.name} have reference comments in --comments "
                         f"(the ids must match the dataset's)")
    paths = ds.image_paths()
    exists = [k for k in with_refs if os.path.exists(paths[k])]
    t0 = time.perf_counter()
    pmi = mutual_information(pmi)
    rows = critique_inputs(critic, [paths[k] for k in exists], max_tokens=max_tokens, beams=beams,
                           batch_size=batch_size, progress=progress, decode=decode, workers=workers, pmi=pmi)
    seconds = time.perf_counter() - t0
    cands = {ds.ids[k]: r.critique for k, r in zip(exists, rows) if r.status == "ok"}
    res = caption_scores(refs, cands)
    failed = [r for r in rows if r.status != "ok"]
    res.update(model=critic.name, dataset=ds.name, split=split_info, images_listed=len(ds),
               images_with_references=len(with_refs), images_missing=len(with_refs) - len(exists),
               images_failed=len(failed), failed_examples=[r.error for r in failed[:10]],
               decoding=decoding_name(beams, pmi), max_tokens=max_tokens,
               seconds=round(seconds, 2))
    res = json_safe(res)
    (out / "metrics.json").write_text(json.dumps(res, indent=2, allow_nan=False) + "\n")
    with open(out / "critiques.jsonl", "w", encoding="utf-8") as fh:
        for k, r in zip(exists, rows):
            fh.write(json.dumps({"image_id": ds.ids[k], "path": r.path, "critique": r.critique,
                                 "status": r.status, "error": r.error, "references": refs[ds.ids[k]]},
                                ensure_ascii=False) + "\n")
    lines = [f"# Critiques of `{critic.name}` on `{ds.name}`", "",
             f"{res['n']} images critiqued ({res['decoding']}, at most {max_tokens} tokens) in {seconds:.1f} s; "
             f"{res['images_missing']} missing on disk, {len(failed)} failed to load (excluded).", "",
             "| metric | value |", "|---|---|"]
    for key in ("bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider"):
        if key in res:
            lines.append(f"| {key} | {res[key]:.4f} |")
    lines += ["", "Candidates and references are lower-cased with punctuation removed; CIDEr is CIDEr-D "
                  "(document frequencies from these references).", ""]
    (out / "report.md").write_text("\n".join(lines))
    return res
