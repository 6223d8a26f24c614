"""VILA-P's model: a CoCa (contrastive captioner; Yu et al. 2022, as used by
Ke et al., CVPR 2023, Sec. 3.1) built from plain torch modules.

* **Image encoder**: a ViT (a Hugging Face CLIP or SigLIP vision tower,
  initialised from a checkpoint or at random). Its patch tokens + class token
  are the image's tokens.
* **Attentional poolers**: a generative pooler with ``gen_queries`` learnable
  queries (196 in VILA) attends over the image tokens; the text decoder
  cross-attends to its output. A contrastive pooler with one query attends
  over the generative pooler's output.
* **Image embedding** (contrastive): the tower's projected class token (the
  initial CLIP's image embedding) plus a projection of the contrastive
  pooler's output. That projection starts at zero, so before aesthetic
  pretraining VILA-P's towers are exactly its CLIP's; pretraining learns
  how much of the pooled tokens to add.
* **Text decoder**: unimodal causal layers (copied from the CLIP text tower
  where the shapes allow) with a learnable CLS token appended after the
  text; the CLS output, layer-normed and projected, is the text embedding.
  CLS takes the place (and the initial embedding) of CLIP's end token, so
  the initial text embedding is CLIP's too. Then multimodal causal layers,
  each with cross-attention to the generative pooler's output (initialised
  fresh), a final norm and the vocabulary head.
* Sequences are ``[BOS, t_1..t_n, CLS]`` (at most ``max_length`` = 64
  positions); position ``k`` predicts token ``k + 1`` (the last text token
  predicts the end token).

Generation (:meth:`CoCa.generate`) is greedy or beam search with a
key-value cache: the image is encoded once, the cross-attention keys and
values are computed once, and each step runs the decoder on one new token.

A CoCa is saved as a directory: ``coca.json`` (architecture, tokenizer ids,
preprocessing), ``model.safetensors`` and the tokenizer's files.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .base import EncoderOutput, ModelNotAvailableError, Preprocess, WrappedModel, fit_tower_keys, tuned_suffix

COCA_FORMAT = "photocritic-coca"
COCA_FILE = "coca.json"


@dataclass
class CoCaConfig:
    vision_type: str                  # "clip" or "siglip": the Hugging Face vision tower
    vision: dict                      # its config (CLIPVisionConfig / SiglipVisionConfig fields)
    text_width: int
    text_heads: int
    text_mlp: int
    unimodal_layers: int
    multimodal_layers: int
    vocab_size: int
    embed_dim: int
    bos_id: int
    eos_id: int
    pad_id: int
    max_length: int = 64              # text positions, BOS and CLS included
    positions: int = 77               # rows of the position table
    gen_queries: int = 196
    pool_heads: int = 8
    act: str = "quick_gelu"
    eps: float = 1e-5
    vision_projection: bool = True    # CLIP's projection of the class token (SigLIP has none)
    text_projection_bias: bool = False
    preprocess: dict = field(default_factory=dict)
    init: str = "random"              # where the weights started (for the record)

    @property
    def vision_width(self) -> int:
        return int(self.vision["hidden_size"])


def _act(name: str):
    if name == "quick_gelu":
        return lambda x: x * torch.sigmoid(1.702 * x)
    if name in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
        return (lambda x: F.gelu(x, approximate="tanh")) if name != "gelu" else F.gelu
    raise ValueError(f"unknown activation {name!r}")


class KVCache:
    """The keys and values of one attention layer's earlier positions, for
    incremental decoding: (B, heads, capacity, head_dim) buffers allocated
    once and filled in place, so a step writes its new position instead of
    copying the whole past (a buffer doubles if a sequence outgrows it)."""

    def __init__(self, capacity: int = 64):
        self.capacity, self.n = capacity, 0
        self.k = self.v = None
        self.qkv = None  # the layer's q, k and v projections as one (weight, bias), made on first use

    def project(self, attn: "Attention", x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``attn``'s query, key and value projections of ``x`` in one matrix
        product (a decoding step is too small for three to pay)."""
        if self.qkv is None:
            parts = (attn.q_proj, attn.k_proj, attn.v_proj)
            self.qkv = (torch.cat([p.weight for p in parts]), torch.cat([p.bias for p in parts]))
        return F.linear(x, *self.qkv).chunk(3, dim=-1)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add positions (B, heads, t, head_dim); returns all keys and values so far."""
        t = k.shape[2]
        if self.k is None or self.n + t > self.k.shape[2]:
            size = max(self.capacity, self.n + t) if self.k is None else max(2 * self.k.shape[2], self.n + t)
            bk = k.new_empty(k.shape[0], k.shape[1], size, k.shape[3])
            bv = v.new_empty(v.shape[0], v.shape[1], size, v.shape[3])
            if self.k is not None:
                bk[:, :, :self.n] = self.k[:, :, :self.n]
                bv[:, :, :self.n] = self.v[:, :, :self.n]
            self.k, self.v = bk, bv
        self.k[:, :, self.n:self.n + t] = k
        self.v[:, :, self.n:self.n + t] = v
        self.n += t
        return self.k[:, :, :self.n], self.v[:, :, :self.n]

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep rows ``rows`` of the batch, in that order (beam search)."""
        if self.k is not None:
            self.k, self.v = self.k[rows], self.v[rows]


class Attention(nn.Module):
    """Multi-head attention with CLIP's parameter names (q/k/v/out_proj),
    so CLIP's text layers load into it unchanged. ``cache`` (a
    :class:`KVCache`) keeps the keys and values of earlier positions for
    incremental decoding."""

    def __init__(self, width: int, heads: int, kv_width: int | None = None):
        super().__init__()
        self.heads = heads
        self.head_dim = width // heads
        kv = kv_width or width
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(kv, width)
        self.v_proj = nn.Linear(kv, width)
        self.out_proj = nn.Linear(width, width)

    def _split(self, x):
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)

    def kv(self, context: torch.Tensor):
        return self._split(self.k_proj(context)), self._split(self.v_proj(context))

    def forward(self, x, context=None, causal: bool = False, cache: KVCache | None = None,
                key_mask: torch.Tensor | None = None, fixed_kv=None):
        if cache is not None and context is None and fixed_kv is None:  # a decoding step's self-attention
            q, k, v = (self._split(p) for p in cache.project(self, x))
            k, v = cache.append(k, v)
        else:
            q = self._split(self.q_proj(x))
            if fixed_kv is not None:  # cross-attention: keys/values of the image, computed once
                k, v = fixed_kv
            else:
                k, v = self.kv(x if context is None else context)
                if cache is not None:
                    k, v = cache.append(k, v)
        mask = None
        tq, tk = q.shape[2], k.shape[2]
        if causal and tq > 1:  # queries are the last tq of the tk positions
            mask = torch.ones(tq, tk, dtype=torch.bool, device=x.device).tril(tk - tq)
        if key_mask is not None:
            km = key_mask[:, None, None, :].to(torch.bool)
            mask = km if mask is None else (mask[None, None] & km)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        b, _, t, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int, act: str):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)
        self.act = _act(act)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class DecoderLayer(nn.Module):
    """Pre-norm causal self-attention (+ cross-attention to the image when
    ``cross``) + MLP, with residuals. Parameter names follow CLIP's encoder
    layer (``self_attn``, ``layer_norm1``, ``mlp.fc1`` ...)."""

    def __init__(self, width: int, heads: int, mlp: int, act: str, eps: float, cross: bool = False):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(width, eps=eps)
        self.self_attn = Attention(width, heads)
        if cross:
            self.cross_norm = nn.LayerNorm(width, eps=eps)
            self.cross_attn = Attention(width, heads)
        self.layer_norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = MLP(width, mlp, act)
        self.cross = cross

    def forward(self, x, cache=None, image_kv=None):
        x = x + self.self_attn(self.layer_norm1(x), causal=True, cache=cache)
        if self.cross:
            x = x + self.cross_attn(self.cross_norm(x), fixed_kv=image_kv)
        return x + self.mlp(self.layer_norm2(x))


class AttentionalPooler(nn.Module):
    """``n`` learnable queries attend over a sequence (CoCa's attentional pooling)."""

    def __init__(self, width: int, context_width: int, n: int, heads: int, eps: float):
        super().__init__()
        self.query = nn.Parameter(torch.randn(n, width) * width ** -0.5)
        self.ln_q = nn.LayerNorm(width, eps=eps)
        self.ln_k = nn.LayerNorm(context_width, eps=eps)
        self.attn = Attention(width, heads, kv_width=context_width)

    def forward(self, context: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        q = self.ln_q(self.query).unsqueeze(0).expand(context.shape[0], -1, -1)
        return self.attn(q, self.ln_k(context), key_mask=key_mask)


def _vision_classes(kind: str):
    if kind == "clip":
        from transformers import CLIPVisionConfig, CLIPVisionModel

        return CLIPVisionConfig, CLIPVisionModel
    if kind == "siglip":
        from transformers import SiglipVisionConfig, SiglipVisionModel

        return SiglipVisionConfig, SiglipVisionModel
    raise ValueError(f"unknown vision tower type {kind!r} (known: clip, siglip)")


class CoCa(nn.Module):
    def __init__(self, config: CoCaConfig):
        super().__init__()
        self.config = c = config
        vcfg_cls, vmodel_cls = _vision_classes(c.vision_type)
        self.vision = vmodel_cls(vcfg_cls(**c.vision))
        vw, tw = c.vision_width, c.text_width
        self.visual_projection = nn.Linear(vw, c.embed_dim, bias=False) if c.vision_projection else nn.Identity()
        self.gen_pooler = AttentionalPooler(tw, vw, c.gen_queries, c.pool_heads, c.eps)
        self.con_pooler = AttentionalPooler(tw, tw, 1, c.pool_heads, c.eps)
        self.con_projection = nn.Linear(tw, c.embed_dim, bias=False)
        nn.init.zeros_(self.con_projection.weight)
        self.token_embedding = nn.Embedding(c.vocab_size, tw)
        self.position_embedding = nn.Embedding(c.positions, tw)
        self.cls_embedding = nn.Parameter(torch.randn(tw) * 0.02)
        self.unimodal = nn.ModuleList(DecoderLayer(tw, c.text_heads, c.text_mlp, c.act, c.eps)
                                      for _ in range(c.unimodal_layers))
        self.final_layer_norm = nn.LayerNorm(tw, eps=c.eps)
        self.text_projection = nn.Linear(tw, c.embed_dim, bias=c.text_projection_bias)
        self.multimodal = nn.ModuleList(DecoderLayer(tw, c.text_heads, c.text_mlp, c.act, c.eps, cross=True)
                                        for _ in range(c.multimodal_layers))
        self.decoder_norm = nn.LayerNorm(tw, eps=c.eps)
        self.lm_head = nn.Linear(tw, c.vocab_size, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    # -- image side ----------------------------------------------------------------
    def encode_image(self, pixels: torch.Tensor) -> dict:
        """``embedding`` (N, D) contrastive, ``prelogits`` (N, W) the tower's
        pooled output, ``tokens`` (N, T, W) the tower's last hidden states,
        ``generative`` (N, Q, text width) the generative pooler's output."""
        out = self.vision(pixel_values=pixels)
        tokens = out.last_hidden_state
        pre = out.pooler_output
        gen = self.gen_pooler(tokens)
        con = self.con_pooler(gen)[:, 0]
        emb = self.visual_projection(pre) + self.con_projection(con)
        return {"embedding": emb, "prelogits": pre, "tokens": tokens, "generative": gen}

    # -- text side -------------------------------------------------------------------
    def _embed_tokens(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        end = start + ids.shape[1]
        if end > self.position_embedding.num_embeddings:
            raise ValueError(f"positions {start}..{end - 1}: the model has {self.position_embedding.num_embeddings}")
        return self.token_embedding(ids) + self.position_embedding.weight[start:end][None]

    def text_states(self, ids: torch.Tensor, mask: torch.Tensor):
        """Unimodal pass over ``[BOS, t.., CLS]`` batches: ``ids`` (N, L) hold
        BOS, the text and the end token (where CLS goes), then padding; ``mask``
        marks the first three. Returns (hidden states (N, L, W), the text
        embedding (N, D) from the CLS position)."""
        x = self._embed_tokens(ids)
        last = mask.long().sum(1) - 1  # the end token's position: CLS replaces it
        rows = torch.arange(len(ids), device=ids.device)
        x = x.clone()
        x[rows, last] = self.cls_embedding.to(x.dtype) + self.position_embedding(last)
        for layer in self.unimodal:
            x = layer(x)
        emb = self.text_projection(self.final_layer_norm(x[rows, last]))
        return x, emb

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.text_states(ids, mask)[1]

    def image_kv(self, generative: torch.Tensor) -> list:
        """Each multimodal layer's cross-attention keys and values (computed once per image)."""
        return [layer.cross_attn.kv(generative) for layer in self.multimodal]

    def decode(self, states: torch.Tensor, image_kv: list, caches: list | None = None) -> torch.Tensor:
        x = states
        for k, layer in enumerate(self.multimodal):
            x = layer(x, cache=None if caches is None else caches[k], image_kv=image_kv[k])
        return self.lm_head(self.decoder_norm(x))

    def forward(self, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> dict:
        """Everything the pretraining loss needs: image and text embeddings,
        caption logits (N, L - 1, V) for positions 0..L-2 and their labels
        (the next token; -100 where it is padding), the logit scale."""
        img = self.encode_image(pixels)
        states, text_emb = self.text_states(ids, mask)
        logits = self.decode(states[:, :-1], self.image_kv(img["generative"]))
        labels = ids[:, 1:].masked_fill(~mask[:, 1:].bool(), -100)
        return {"image": img["embedding"], "text": text_emb, "logits": logits, "labels": labels,
                "logit_scale": self.logit_scale.exp()}

    # -- generation ------------------------------------------------------------------
    def _step(self, ids: torch.Tensor, start: int, uni_caches, multi_caches, image_kv):
        x = self._embed_tokens(ids, start)
        for layer, cache in zip(self.unimodal, uni_caches):
            x = layer(x, cache=cache)
        return self.decode(x, image_kv, multi_caches)[:, -1]

    @torch.no_grad()
    def generate(self, pixels: torch.Tensor, max_tokens: int = 64, beams: int = 1,
                 use_cache: bool = True, stop_at_end: bool = True, prefix: list[int] | None = None) -> list[list[int]]:
        """Token ids (without BOS and end token) per image: greedy with
        ``beams`` = 1, else beam search (the highest sum of log-probabilities
        among finished beams, each beam's score divided by its length).
        ``use_cache=False`` reruns the decoder on the whole prefix at every
        step (the slow reference). ``stop_at_end=False`` never ends a
        sequence (for timing a fixed number of tokens). ``prefix``: token ids
        every text starts with (forced, their log-probabilities counted),
        part of the ``max_tokens`` and of the result."""
        return self._decode(self.encode_image(pixels)["generative"], max_tokens, beams, use_cache, stop_at_end,
                            prefix)

    def _decode(self, gen: torch.Tensor, max_tokens: int = 64, beams: int = 1, use_cache: bool = True,
                stop_at_end: bool = True, prefix: list[int] | None = None, samplers: list | None = None,
                temperature: float = 1.0, top_p: float = 1.0) -> list[list[int]]:
        """Decoding from the generative pooler's output ``gen`` (N, Q, W):
        greedy, beam search, or with ``samplers`` (one ``torch.Generator``
        per row of ``gen``) nucleus sampling at ``temperature``/``top_p``."""
        c = self.config
        prefix = list(prefix or [])
        steps = max(0, min(max_tokens, c.max_length - 1))
        n = len(gen)
        if beams > 1:
            gen = gen.repeat_interleave(beams, 0)
        kv = self.image_kv(gen)
        width = n * max(beams, 1)
        # every sequence so far, BOS first, in one buffer filled in place
        seq = torch.full((width, steps + 1), c.pad_id, dtype=torch.long, device=gen.device)
        seq[:, 0] = c.bos_id
        uni = [KVCache(steps + 1) for _ in self.unimodal]
        multi = [KVCache(steps + 1) for _ in self.multimodal]
        score = torch.zeros(n, max(beams, 1), device=gen.device)
        if beams > 1:
            score[:, 1:] = -math.inf  # all beams start as the same sequence: keep one
        done = torch.zeros(width, dtype=torch.bool, device=gen.device)
        finished = None  # a finished sequence only extends with padding, at no cost
        length = 1
        for t in range(steps):
            if use_cache:
                logits = self._step(seq[:, t:t + 1], t, uni, multi, kv)
            else:
                logits = self._step(seq[:, :t + 1], 0, [None] * len(uni), [None] * len(multi), kv)
            logp = torch.log_softmax(logits.float(), -1)
            if t < len(prefix):  # a forced token: the only choice
                logp = torch.full_like(logp, -math.inf).index_copy_(1, torch.tensor([prefix[t]], device=logp.device),
                                                                    logp[:, prefix[t]:prefix[t] + 1])
            if not stop_at_end:
                logp[:, c.eos_id] = -math.inf
            if finished is None:
                finished = torch.full_like(logp[:1], -math.inf)
                finished[0, c.pad_id] = 0.0
            if t > 0:
                logp = torch.where(done[:, None], finished, logp)
            length = t + 2
            if beams <= 1:
                nxt = logp.argmax(-1) if samplers is None else _nucleus(logp, samplers, temperature, top_p)
                nxt = torch.where(done, c.pad_id, nxt)
                seq[:, t + 1] = nxt
                done |= nxt == c.eos_id
            else:
                v = logp.shape[-1]
                total = (score.view(-1, 1) + logp).view(n, beams * v)
                score, flat = total.topk(beams, dim=1)
                src = (flat // v) + torch.arange(n, device=seq.device)[:, None] * beams
                tok = (flat % v).view(-1)
                src = src.view(-1)
                seq = seq[src]
                seq[:, t + 1] = tok
                done = done[src] | (tok == c.eos_id)
                for cache in uni + multi:
                    cache.reorder(src)
            if bool(done.all()):
                break
        seq = seq[:, 1:length]
        if beams > 1:
            lengths = torch.stack([self._length(s) for s in seq]).view(n, beams).float().clamp(min=1)
            best = (score / lengths).argmax(1) + torch.arange(n, device=seq.device) * beams
            seq = seq[best]
        return [self._strip(s) for s in seq.tolist()]

    @torch.no_grad()
    def text_logprobs(self, seqs: list[list[int]], gen: torch.Tensor, pairs: torch.Tensor,
                      chunk: int = 2048) -> torch.Tensor:
        """log p(text, end token | image) for each (text, image) row of
        ``pairs`` (P, 2): the index of a token sequence in ``seqs`` (without
        BOS and end token, as :meth:`generate` returns them) and of an image
        in ``gen`` (its generative pooler output). The sum of the
        log-probabilities of every token after BOS, end token included,
        exactly as the captioning loss counts them. Each text's unimodal
        pass runs once, however many images it is paired with."""
        c = self.config
        ids, mask = pack_sequences(seqs, c)
        ids, mask = ids.to(gen.device), mask.to(gen.device)
        states = self.text_states(ids, mask)[0][:, :-1]
        labels = ids[:, 1:].masked_fill(~mask[:, 1:].bool(), -100)
        out = torch.empty(len(pairs), device=gen.device)
        for lo in range(0, len(pairs), chunk):
            t, i = pairs[lo:lo + chunk, 0], pairs[lo:lo + chunk, 1]
            logits = self.decode(states[t], self.image_kv(gen[i]))
            lab = labels[t]
            logp = torch.log_softmax(logits.float(), -1).gather(-1, lab.clamp(min=0)[..., None])[..., 0]
            out[lo:lo + chunk] = logp.masked_fill(lab == -100, 0.0).sum(1)
        return out

    @torch.no_grad()
    def generate_pmi(self, pixels: torch.Tensor, reference: torch.Tensor, samples: int = 8, weight: float = 1.0,
                     max_tokens: int = 64, temperature: float = 1.0, top_p: float = 0.95,
                     seeds: list[int] | None = None) -> list[list[int]]:
        """Critiques chosen by pointwise mutual information with the image.
        Each image's candidates are its greedy critique and ``samples``
        nucleus samples (``seeds``: one per image, so an image's candidates do
        not depend on the rest of its batch). The one kept maximises

            log p(c | image) - weight * log p(c),  p(c) = 1/R sum_r p(c | reference r)

        with p(c) the model's average over R reference images, given as
        ``reference``, their generative pooler output (R, Q, W), computed
        once for every batch: a critique the image makes likelier than
        other images do wins over one the model says of any image.
        ``weight`` 0 keeps the likeliest candidate."""
        gen = self.encode_image(pixels)["generative"]
        n = len(gen)
        cands = [[s] for s in self._decode(gen, max_tokens)]
        if samples > 0:
            seeds = list(range(n)) if seeds is None else list(seeds)
            samplers = [torch.Generator().manual_seed(int(seeds[i]) * 1000 + k) for i in range(n)
                        for k in range(samples)]
            drawn = self._decode(gen.repeat_interleave(samples, 0), max_tokens, samplers=samplers,
                                 temperature=temperature, top_p=top_p)
            for i in range(n):
                for s in drawn[i * samples:(i + 1) * samples]:
                    if s not in cands[i]:
                        cands[i].append(s)
        unique = {}
        for group in cands:
            for s in group:
                unique.setdefault(tuple(s), len(unique))
        seqs = [list(s) for s in unique]
        both = torch.cat([gen, reference.to(gen.dtype)])
        own = [(unique[tuple(s)], i) for i, group in enumerate(cands) for s in group]
        marg = [(u, n + r) for u in range(len(seqs)) for r in range(len(reference))]
        lp = self.text_logprobs(seqs, both, torch.tensor(own + marg, dtype=torch.long, device=gen.device))
        cond = lp[:len(own)]
        marginal = torch.logsumexp(lp[len(own):].view(len(seqs), len(reference)), 1) - math.log(len(reference))
        out, at = [], 0
        for group in cands:
            k = len(group)
            pmi = cond[at:at + k] - weight * marginal[[unique[tuple(s)] for s in group]]
            out.append(group[int(pmi.argmax())])
            at += k
        return out

    def _length(self, s: torch.Tensor) -> torch.Tensor:
        ends = (s == self.config.eos_id).nonzero()
        return ends[0, 0] + 1 if len(ends) else torch.tensor(len(s), device=s.device)

    def _strip(self, s: list[int]) -> list[int]:
        out = []
        for t in s:
            if t == self.config.eos_id:
                break
            out.append(t)
        return out


def _nucleus(logp: torch.Tensor, samplers: list, temperature: float, top_p: float) -> torch.Tensor:
    """One token per row, drawn from the smallest set of likeliest tokens
    whose probability reaches ``top_p`` (nucleus sampling; Holtzman et al.
    2020), at ``temperature``, with row k's uniform draw from ``samplers[k]``."""
    probs = torch.softmax(logp / max(temperature, 1e-6), -1)
    p, order = probs.sort(-1, descending=True)
    before = p.cumsum(-1) - p
    p = p.masked_fill(before >= top_p, 0.0)  # the likeliest token is always kept
    u = torch.stack([torch.rand((), generator=g) for g in samplers]).to(p.device) * p.sum(-1)
    pick = (p.cumsum(-1) < u[:, None]).sum(-1).clamp(max=p.shape[-1] - 1)
    return order.gather(1, pick[:, None])[:, 0]


def pack_sequences(seqs: list[list[int]], config: CoCaConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``[BOS, tokens, END]`` per token list (cut to ``max_length``), padded:
    (ids (N, L), mask (N, L)), as :func:`tokenize` makes them from texts."""
    rows = [[config.bos_id] + list(s)[:config.max_length - 2] + [config.eos_id] for s in seqs]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), config.pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for k, r in enumerate(rows):
        ids[k, :len(r)] = torch.tensor(r)
        mask[k, :len(r)] = 1
    return ids, mask


# -- tokenizer ------------------------------------------------------------------------

def tokenize(tokenizer, texts: list[str], config: CoCaConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``[BOS, tokens (at most max_length - 2), END]`` per text, padded:
    (ids (N, L), mask (N, L))."""
    return pack_sequences(tokenizer(list(texts), add_special_tokens=False)["input_ids"], config)


def train_tokenizer(texts, vocab_size: int = 4096, min_frequency: int = 2):
    """A byte-level BPE trained on the comment corpus with the ``tokenizers``
    library (for a CoCa started from scratch), wrapped for ``transformers``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=["<pad>", "<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator((t.lower() for t in texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>")
    return _Lowercase(fast)


class _Lowercase:
    """A tokenizer trained on lower-cased comments: lower-cases its input too."""

    def __init__(self, tok):
        self.tok = tok

    def __call__(self, texts, **kw):
        return self.tok([t.lower() for t in texts], **kw)

    def __len__(self):
        return len(self.tok)

    def __getattr__(self, name):
        return getattr(self.tok, name)


def load_tokenizer(directory: Path, config: dict):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    return _Lowercase(tok) if config.get("lowercase") else tok


# -- build, save, load --------------------------------------------------------------------

def config_from_clip(name: str, gen_queries: int, max_length: int = 64, multimodal_layers: int | None = None):
    """A CoCa's config shaped by a CLIP/SigLIP checkpoint (hub id or directory)."""
    from transformers import AutoConfig

    from .hf import SUPPORTED, _load_pretrained, _preprocess_from

    hf = _load_pretrained(AutoConfig.from_pretrained, name)
    if hf.model_type not in SUPPORTED:
        raise ValueError(f"--init {name}: model type '{hf.model_type}' is not a CLIP or SigLIP model")
    kind = "clip" if hf.model_type == "clip" else "siglip"
    v, t = hf.vision_config, hf.text_config
    vision = {k: getattr(v, k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                         "num_attention_heads", "num_channels", "image_size", "patch_size",
                                         "hidden_act", "layer_norm_eps", "attention_dropout")}
    if kind == "clip":
        vision["projection_dim"] = hf.projection_dim
    embed = hf.projection_dim if kind == "clip" else t.hidden_size
    pre = _preprocess_from(name, hf)
    bos = getattr(t, "bos_token_id", None)
    eos = getattr(t, "eos_token_id", None)
    pad = getattr(t, "pad_token_id", None)
    return CoCaConfig(
        vision_type=kind, vision=vision, text_width=t.hidden_size, text_heads=t.num_attention_heads,
        text_mlp=t.intermediate_size, unimodal_layers=t.num_hidden_layers,
        multimodal_layers=multimodal_layers or t.num_hidden_layers, vocab_size=t.vocab_size, embed_dim=embed,
        bos_id=bos if bos is not None else 0, eos_id=eos if eos is not None else 1,
        pad_id=pad if pad is not None else (eos if eos is not None else 1),
        max_length=min(max_length, t.max_position_embeddings), positions=t.max_position_embeddings,
        gen_queries=gen_queries, pool_heads=t.num_attention_heads, act=t.hidden_act, eps=t.layer_norm_eps,
        vision_projection=kind == "clip", text_projection_bias=kind != "clip", preprocess=asdict(pre),
        init=str(name))


def from_clip(name: str, gen_queries: int = 196, max_length: int = 64, multimodal_layers: int | None = None):
    """(CoCa, tokenizer) initialised from a CLIP/SigLIP checkpoint: the vision
    tower, the text layers, embeddings, final norm, projections and logit
    scale are copied; the poolers, multimodal layers and vocabulary head are
    new. The CLS embedding starts as the checkpoint's end-token embedding."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from .hf import _load_pretrained

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    config = config_from_clip(name, gen_queries, max_length, multimodal_layers)
    hf = _load_pretrained(AutoModel.from_pretrained, name)
    tok = _load_pretrained(AutoTokenizer.from_pretrained, name)
    model = CoCa(config)
    tower = model.vision
    tower.load_state_dict(fit_tower_keys(hf.vision_model.state_dict(), tower.state_dict()))
    text = hf.text_model
    with torch.no_grad():
        if config.vision_projection:
            model.visual_projection.weight.copy_(hf.visual_projection.weight)
        model.token_embedding.weight.copy_(text.embeddings.token_embedding.weight)
        model.position_embedding.weight.copy_(text.embeddings.position_embedding.weight)
        model.cls_embedding.copy_(text.embeddings.token_embedding.weight[config.eos_id])
        for mine, theirs in zip(model.unimodal, text.encoder.layers):
            mine.load_state_dict(theirs.state_dict())
        model.final_layer_norm.load_state_dict(text.final_layer_norm.state_dict())
        if config.vision_type == "clip":
            model.text_projection.weight.copy_(hf.text_projection.weight)
        else:  # SigLIP's text head (Linear with bias) on the last position
            model.text_projection.load_state_dict(text.head.state_dict())
        model.logit_scale.copy_(hf.logit_scale.detach().reshape(()))
    return model, tok


#: name -> (vision width, layers, heads, patch, image size, text width, text layers (each of the
#: unimodal and multimodal stacks), embedding dim)
RANDOM_SIZES = {"tiny": (32, 2, 2, 16, 64, 32, 2, 32), "small": (128, 4, 4, 16, 128, 128, 3, 128),
                "vit-b-16": (768, 12, 12, 16, 224, 512, 6, 512)}


def random_config(size: str, vocab_size: int, ids: tuple[int, int, int], gen_queries: int = 16,
                  max_length: int = 64, image_size: int | None = None) -> CoCaConfig:
    """A CoCa of ``size`` (see :data:`RANDOM_SIZES`) with random weights."""
    sizes = RANDOM_SIZES
    if size not in sizes:
        raise ValueError(f"unknown CoCa size {size!r} (known: {', '.join(sizes)})")
    vw, vl, vh, patch, img, tw, tl, proj = sizes[size]
    if image_size is not None and (image_size < patch or image_size % patch):
        raise ValueError(f"image size {image_size}: give a multiple of random:{size}'s patch side, {patch}")
    img = image_size or img
    vision = dict(hidden_size=vw, intermediate_size=4 * vw, num_hidden_layers=vl, num_attention_heads=vh,
                  num_channels=3, image_size=img, patch_size=patch, hidden_act="quick_gelu",
                  layer_norm_eps=1e-5, attention_dropout=0.0, projection_dim=proj)
    # VILA's preprocessing: bilinear resize, centre crop, [0, 1], no mean/std normalisation
    pre = Preprocess(resize=round(img * 272 / 224), crop=img, resample="bilinear", mean=(0.0,) * 3,
                     std=(1.0,) * 3)
    bos, eos, pad = ids
    return CoCaConfig(vision_type="clip", vision=vision, text_width=tw, text_heads=max(1, tw // 64) if tw >= 64 else 2,
                      text_mlp=4 * tw, unimodal_layers=tl, multimodal_layers=tl, vocab_size=vocab_size,
                      embed_dim=proj, bos_id=bos, eos_id=eos, pad_id=pad, max_length=max_length,
                      positions=max_length, gen_queries=gen_queries, pool_heads=2 if tw < 64 else tw // 64,
                      preprocess=asdict(pre), init=f"random:{size}")


def save_coca(model: CoCa, tokenizer, directory: str | Path, state: dict | None = None) -> Path:
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = model.state_dict() if state is None else state
    save_file({k: v.detach().float().contiguous() for k, v in state.items()}, str(directory / "model.safetensors"))
    tok = getattr(tokenizer, "tok", tokenizer)
    tok.save_pretrained(str(directory))
    meta = {"format": COCA_FORMAT, "version": 1, "config": asdict(model.config),
            "lowercase": isinstance(tokenizer, _Lowercase)}
    (directory / COCA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return directory


REFERENCE_FILE = "reference.safetensors"


def save_reference(directory: str | Path, pixels: torch.Tensor) -> Path:
    """Store uint8 (R, H, W, 3) preprocessed images with a CoCa: the
    reference set over which mutual-information decoding averages p(c)."""
    from safetensors.torch import save_file

    path = Path(directory) / REFERENCE_FILE
    save_file({"pixels": pixels.to(torch.uint8).contiguous()}, str(path))
    return path


def load_reference(directory: str | Path) -> torch.Tensor | None:
    from safetensors.torch import load_file

    path = Path(directory) / REFERENCE_FILE
    return load_file(str(path))["pixels"] if path.is_file() else None


def is_coca_dir(path: str | Path) -> bool:
    f = Path(path) / COCA_FILE
    try:
        return f.is_file() and json.loads(f.read_text()).get("format") == COCA_FORMAT
    except (OSError, ValueError):
        return False


def read_coca_config(directory: str | Path) -> tuple[CoCaConfig, dict]:
    directory = Path(directory)
    try:
        meta = json.loads((directory / COCA_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ModelNotAvailableError(f"{directory}: not a VILA-P/CoCa directory ({COCA_FILE}: {exc})") from None
    return CoCaConfig(**meta["config"]), meta


def load_coca(directory: str | Path, tuned: str | None = None) -> tuple[CoCa, object]:
    from safetensors.torch import load_file

    directory = Path(directory)
    config, meta = read_coca_config(directory)
    model = CoCa(config)
    model.load_state_dict(fit_tower_keys(load_file(str(directory / "model.safetensors")), model.state_dict()))
    if tuned:
        model.vision.load_state_dict(fit_tower_keys(load_file(tuned), model.vision.state_dict()))
    model.eval()
    return model, load_tokenizer(directory, meta)


def coca_identity(directory: str | Path, tuned: str | None = None) -> tuple[str, Preprocess]:
    from .hf import _fingerprint

    config, _ = read_coca_config(directory)
    return f"coca:{_fingerprint(str(directory))}" + tuned_suffix(tuned), preprocess_of(config)


class CoCaEncoder(WrappedModel):
    """Inference wrapper of a saved CoCa (capabilities: contrastive,
    text_tower, captioner). ``encode`` gives the contrastive image embedding
    as ``pooled``, the ViT's tokens and its pooled output (``prelogits``)."""

    capabilities = frozenset({"contrastive", "text_tower", "captioner"})

    def __init__(self, directory: str | Path, device: str = "cpu", tuned: str | None = None):
        self.name = str(directory)
        self.model, self.tokenizer = load_coca(directory, tuned)
        self.id, self.preprocess = coca_identity(directory, tuned)
        c = self.model.config
        self.dim = c.embed_dim
        self.prelogits_dim = c.vision_width
        self.device = torch.device(device)
        self.model.to(self.device)

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor) -> EncoderOutput:
        out = self.model.encode_image(pixels.to(self.device))
        return EncoderOutput(pooled=out["embedding"].float(), tokens=out["tokens"],
                             extras={"prelogits": out["prelogits"].float()})

    @torch.inference_mode()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        ids, mask = tokenize(self.tokenizer, texts, self.model.config)
        return self.model.encode_text(ids.to(self.device), mask.to(self.device)).float()

    @torch.inference_mode()
    def generate(self, pixels: torch.Tensor, max_tokens: int = 64, beams: int = 1,
                 use_cache: bool = True, prefix: str | None = None, pmi: dict | None = None) -> list[str]:
        """Critiques of a batch; with ``prefix``, each starts with that text
        (e.g. "the lighting", to ask about one attribute). ``pmi``: choose
        by mutual information instead (:meth:`CoCa.generate_pmi`; keys
        ``reference`` (from :meth:`reference_context`), ``samples``,
        ``weight``, ``seeds``, ``temperature``, ``top_p``)."""
        if pmi is not None:
            if prefix or beams > 1:
                raise ValueError("mutual-information decoding takes neither a prefix nor beams")
            seqs = self.model.generate_pmi(pixels.to(self.device), max_tokens=max_tokens, **pmi)
        else:
            ids = self.tokenizer([prefix], add_special_tokens=False)["input_ids"][0] if prefix else None
            seqs = self.model.generate(pixels.to(self.device), max_tokens=max_tokens, beams=beams,
                                       use_cache=use_cache, prefix=ids)
        return [" ".join(self.tokenizer.decode(s, skip_special_tokens=True).split()) for s in seqs]

    def reference_pixels(self) -> torch.Tensor | None:
        """The uint8 (R, H, W, 3) reference images saved with the model
        (:func:`save_reference`), or None; read from disk once."""
        if not hasattr(self, "_reference"):
            self._reference = load_reference(self.name)
        return self._reference

    @torch.inference_mode()
    def reference_context(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised reference images -> what :meth:`CoCa.generate_pmi`
        takes as ``reference`` (their generative pooler output)."""
        return self.model.encode_image(pixels.to(self.device))["generative"]

    def tower(self) -> nn.Module:
        from .hf import HFVisionTower

        return HFVisionTower(self.model.vision)


def preprocess_of(config: CoCaConfig) -> Preprocess:
    return Preprocess(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.preprocess.items()})
