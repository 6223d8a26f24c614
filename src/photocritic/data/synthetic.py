"""A synthetic aesthetic world with known ground truth, built from real photos.

No rated photo collection and no VLM weights reach the project's machines, so
methods are proven on data whose truth is known. Every generated image is a
real source photo (shipped by Debian wallpaper packages or scikit-image)
with controlled edits of recorded strength; its scores are documented
functions of those strengths plus a hidden appeal of the source photo.

Edits (strength ranges; 0 / 1 is the untouched photo):

* composition: ``tilt`` (degrees, -12..12), ``offset`` (0..1, how far the
  crop window moves from the centre), ``cut`` (0..1, zoom into a corner that
  cuts the subject off);
* ``dof`` (0..1): background blur outside a central ellipse (a shallow
  depth of field; it *raises* the score);
* ``defocus`` (0..1): whole-image Gaussian blur, radius up to 5 px;
* ``resolution`` (0..1): the image is shrunk to 1 - 0.75 r of its size and
  blown back up (lost detail, as an upscaled crop);
* ``jpeg`` (0..1): JPEG compression at quality round(90 - 87 j), 90..3;
* ``exposure`` (-3..3 stops, in linear light) and ``contrast``
  (factor 0.5..1.7 about the mean);
* ``saturation`` (factor 0..1.9) and ``cast`` (0..0.25 of full scale, towards
  a random hue);
* ``noise`` (0..1): Gaussian noise, sigma up to 40 grey levels.

Attribute qualities q in [0, 1] (the score of an attribute is 1 + 9 q), named
after the seven attributes of Huang et al. (TPAMI 2024):

* composition       = exp(-(tilt/8)^2) * (1 - 0.5 cut) * (1 - 0.3 offset)
* depth_of_field    = 0.4 + 0.6 dof
* lighting          = exp(-(exposure/1.2)^2) * exp(-(ln contrast / 0.4)^2)
* colour            = exp(-((saturation - 1.15)/0.55)^2) * exp(-(cast/0.12)^2)
* technical_quality = exp(-(defocus/0.45)^2) * exp(-(noise/0.5)^2)
                      * exp(-(resolution/0.5)^2) * exp(-(jpeg/0.6)^2)
* content           = the source photo's hidden appeal a (uniform 0.1..0.9, seeded)
* emotion           = 0.6 a + 0.4 m, m a hidden per-image mood (uniform 0..1)

True mean score mu = 1 + 9 * sum_k w_k q_k with the weights :data:`WEIGHTS`
(summing to 1). Votes: ``n`` raters (80..200); rater r gives
clip(round(mu + b_r + e_r), 1, 10) with bias b_r ~ N(0, 0.5) and noise
e_r ~ N(0, 1.2); the 10-bin histogram of those votes is the label.

Comments (1-5 per image) come from templates with a paraphrase lexicon.
Each names an attribute and praises it when its quality is above 0.6, else
criticises it, naming a cause the image has ("too dark" for an underexposed
image, "blown out highlights" for an overexposed one: the causes of the
attribute descriptions below, :data:`CRITICISM`), or in general terms where
no single edit is past its threshold; 15% state the opposite (wrong: praise
of a flawed attribute, or any criticism of a sound one), 10% say nothing
about the photo (noise). With probability 0.6 one comment speaks of the content or
the mood, which the pixels reveal only partly - so comments carry
information beyond the image.

Attribute descriptions (``attributes.json``, ``{id: {attribute: text |
[texts]}}``, the format :func:`photocritic.data.attributes.read_attributes`
reads), written as a person checking a multimodal LLM's output would: for
each of the seven attributes (each left out with probability 0.15, so that
some are missing) a grade of its quality q plus N(0, 0.05) noise (excellent
> 0.85 > good > 0.65 > fair > 0.45 > poor > 0.25 > very poor), in one of a
few paraphrases, naming what causes it (the edits above their thresholds:
"underexposed", "a tilted horizon", ...; the source photo's subject for
content; the mood for emotion); with probability 0.2 two paraphrases. They
are drawn from their own random stream, so adding them changed no other byte
of the world.

Splits are made by source photo (70% train, 10% val, 20% test of the
sources): no photo is in two splits. The same seed gives the same bytes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

N_BINS = 10

VERSION = 3  # 2: the resolution and jpeg edits; exposure -3..3 stops; 3: criticisms name a cause the image has
ATTRIBUTES = ("composition", "depth_of_field", "lighting", "colour", "technical_quality",
              "content", "emotion")
WEIGHTS = {"composition": 0.15, "depth_of_field": 0.10, "lighting": 0.20, "colour": 0.15,
           "technical_quality": 0.20, "content": 0.12, "emotion": 0.08}
EDITS = ("tilt", "offset", "cut", "dof", "defocus", "exposure", "contrast", "saturation", "cast",
         "noise", "resolution", "jpeg")
OUT_W, OUT_H = 320, 240
WORK_SIDE = 400  # short side of the working copy of each source
SPLIT_SHARES = (("train", 0.7), ("val", 0.1), ("test", 0.2))

#: Photographs among Debian's wallpaper packages (renders and patterns left
#: out); mate-backgrounds is reserved for independent evaluation and never used.
DEBIAN_PHOTOS = {
    "lomiri-wallpapers-16.04": [
        "/usr/share/backgrounds/Bridge_by_Sander_Klootwijk.jpg",
        "/usr/share/backgrounds/Dragonfly_by_Bolly.jpg",
        "/usr/share/backgrounds/Picture_0B_by_freespace.jpg",
        "/usr/share/backgrounds/Picture_1A_by_freespace.jpg",
        "/usr/share/backgrounds/Wine_by_Jakkub_Mede.jpg",
        "/usr/share/backgrounds/aitzgorri_by_Aitzol_Berasategi.jpg",
        "/usr/share/backgrounds/free_by_Peter_Nerlich.jpg",
        "/usr/share/backgrounds/friends_by_Aitzol_Berasategi.jpg",
        "/usr/share/backgrounds/greentock_by_Peter_Nerlich.jpg",
        "/usr/share/backgrounds/life_by_Aitzol_Berasategi.jpg",
        "/usr/share/backgrounds/picosdeeuropa_by_Aitzol_Berasategi.jpg",
        "/usr/share/backgrounds/seeding_by_Clements_Engelhardt.jpg",
        "/usr/share/backgrounds/sunset_by_Aitzol_Berasategi.jpg",
    ],
    "lomiri-wallpapers-20.04": [
        "/usr/share/backgrounds/Infinite-Sea_by_Aury88.jpg",
        "/usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg",
    ],
    "plasma-workspace-wallpapers": [
        f"/usr/share/wallpapers/{name}/contents/images/2560x1440.jpg"
        for name in ("BytheWater", "ColdRipple", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey",
                     "Kite", "OneStandsOut", "Path", "summer_1am")
    ] + ["/usr/share/wallpapers/Volna/contents/images/5120x2880.jpg"],
}
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "stereo_motorcycle", "hubble_deep_field",
                  "immunohistochemistry", "retina")
INSTALL_HINT = ("`make sources`, i.e. apt-get install " + " ".join(DEBIAN_PHOTOS)
                + " (or pass --sources DIR, a folder of your own photos)")


@dataclass(frozen=True)
class Source:
    name: str
    origin: str  # a file path, or "skimage:<name>"

    def load(self) -> Image.Image:
        if self.origin.startswith("skimage:"):
            import skimage.data

            arr = getattr(skimage.data, self.origin.split(":", 1)[1])()
            arr = arr[0] if isinstance(arr, tuple) else arr
            return Image.fromarray(np.asarray(arr)).convert("RGB")
        with Image.open(self.origin) as im:
            return im.convert("RGB")

    def digest(self) -> str:
        if self.origin.startswith("skimage:"):
            return hashlib.sha256(np.asarray(self.load()).tobytes()).hexdigest()[:16]
        return hashlib.sha256(Path(self.origin).read_bytes()).hexdigest()[:16]


def find_sources(folder: str | Path | None = None, skimage: bool = True,
                 debian: bool = True) -> list[Source]:
    """The source photos: every image in ``folder`` when given, else the
    Debian wallpaper photos that are installed plus scikit-image's photos."""
    if folder is not None:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"--sources {folder}: no such folder")
        files = sorted(p for p in folder.rglob("*")
                       if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff"))
        return [Source(f"{p.parent.name}-{p.stem}", str(p)) for p in files]
    out = []
    if debian:
        for paths in DEBIAN_PHOTOS.values():
            out += [Source(Path(p).stem if "/wallpapers/" not in p else p.split("/")[4], p)
                    for p in paths if os.path.isfile(p)]
    if skimage:
        try:
            import skimage.data  # noqa: F401

            out += [Source(f"skimage-{n}", f"skimage:{n}") for n in SKIMAGE_PHOTOS]
        except ImportError:
            pass
    return out


def working_copy(src: Source) -> np.ndarray:
    im = src.load()
    w, h = im.size
    s = WORK_SIDE / min(w, h)
    im = im.resize((max(WORK_SIDE, round(w * s)), max(WORK_SIDE, round(h * s))), Image.Resampling.LANCZOS)
    return np.asarray(im)


# -- ground truth ------------------------------------------------------------
def attribute_qualities(edits: dict, appeal: float, mood: float) -> dict:
    """Each attribute's quality in [0, 1] from the edit strengths (module docstring)."""
    e = edits
    return {
        "composition": float(np.exp(-(e["tilt"] / 8.0) ** 2) * (1 - 0.5 * e["cut"]) * (1 - 0.3 * e["offset"])),
        "depth_of_field": 0.4 + 0.6 * e["dof"],
        "lighting": float(np.exp(-(e["exposure"] / 1.2) ** 2) * np.exp(-(np.log(e["contrast"]) / 0.4) ** 2)),
        "colour": float(np.exp(-((e["saturation"] - 1.15) / 0.55) ** 2) * np.exp(-(e["cast"] / 0.12) ** 2)),
        "technical_quality": float(np.exp(-(e["defocus"] / 0.45) ** 2) * np.exp(-(e["noise"] / 0.5) ** 2)
                                   * np.exp(-(e["resolution"] / 0.5) ** 2) * np.exp(-(e["jpeg"] / 0.6) ** 2)),
        "content": appeal,
        "emotion": 0.6 * appeal + 0.4 * mood,
    }


def true_mean(qualities: dict) -> float:
    """mu = 1 + 9 * sum_k w_k q_k."""
    return 1.0 + 9.0 * sum(WEIGHTS[k] * qualities[k] for k in ATTRIBUTES)


def vote_histogram(mu: float, rng: np.random.Generator) -> np.ndarray:
    """Votes of 80..200 raters: clip(round(mu + N(0, 0.5) + N(0, 1.2)), 1, 10)."""
    n = int(rng.integers(80, 201))
    votes = np.clip(np.rint(mu + rng.normal(0, 0.5, n) + rng.normal(0, 1.2, n)), 1, N_BINS).astype(int)
    return np.bincount(votes - 1, minlength=N_BINS)


def sample_edits(rng: np.random.Generator) -> dict:
    """Each edit is applied with probability 0.5 at a uniform strength; else neutral."""
    def pick(lo, hi, neutral):
        return float(rng.uniform(lo, hi)) if rng.random() < 0.5 else neutral

    return {"tilt": pick(-12, 12, 0.0), "offset": pick(0, 1, 0.0), "cut": pick(0, 1, 0.0),
            "dof": pick(0, 1, 0.0), "defocus": pick(0, 1, 0.0), "exposure": pick(-3.0, 3.0, 0.0),
            "contrast": float(np.exp(rng.uniform(np.log(0.5), np.log(1.7)))) if rng.random() < 0.5 else 1.0,
            "saturation": pick(0, 1.9, 1.15), "cast": pick(0, 0.25, 0.0), "noise": pick(0, 1, 0.0),
            "resolution": pick(0, 1, 0.0), "jpeg": pick(0, 1, 0.0)}


# -- rendering ----------------------------------------------------------------
def render(work: np.ndarray, edits: dict, rng: np.random.Generator) -> Image.Image:
    """Apply ``edits`` to a working copy; returns an OUT_W x OUT_H image."""
    e = edits
    im = Image.fromarray(work)
    if e["tilt"]:
        im = im.rotate(e["tilt"], resample=Image.Resampling.BICUBIC, expand=False)
    W, H = im.size
    # crop window: 4:3, inside the borders a rotation leaves clean
    margin = abs(np.sin(np.radians(e["tilt"]))) * 0.5 + 0.02
    frac = (0.85 - margin) * (1 - 0.45 * e["cut"])
    ch = int(H * frac)
    cw = min(int(ch * OUT_W / OUT_H), int(W * (1 - 2 * margin)))
    ch = int(cw * OUT_H / OUT_W)
    angle = rng.uniform(0, 2 * np.pi)
    shift = 0.5 * e["offset"] + 0.5 * e["cut"]
    cx = W / 2 + np.cos(angle) * shift * (W * (1 - 2 * margin) - cw) / 2
    cy = H / 2 + np.sin(angle) * shift * (H * (1 - 2 * margin) - ch) / 2
    box = (int(cx - cw / 2), int(cy - ch / 2), int(cx - cw / 2) + cw, int(cy - ch / 2) + ch)
    im = im.crop(box).resize((OUT_W, OUT_H), Image.Resampling.LANCZOS)
    if e["resolution"]:
        f = 1 - 0.75 * e["resolution"]
        small = im.resize((max(8, round(OUT_W * f)), max(6, round(OUT_H * f))), Image.Resampling.BILINEAR)
        im = small.resize((OUT_W, OUT_H), Image.Resampling.BICUBIC)
    if e["dof"]:
        blurred = im.filter(ImageFilter.GaussianBlur(1.0 + 5.0 * e["dof"]))
        yy, xx = np.mgrid[0:OUT_H, 0:OUT_W]
        r = np.sqrt(((xx - OUT_W / 2) / (OUT_W * 0.3)) ** 2 + ((yy - OUT_H / 2) / (OUT_H * 0.3)) ** 2)
        mask = np.clip((r - 0.8) / 0.5, 0, 1)
        im = Image.fromarray((np.asarray(im) * (1 - mask[..., None])
                              + np.asarray(blurred) * mask[..., None]).astype(np.uint8))
    if e["defocus"]:
        im = im.filter(ImageFilter.GaussianBlur(5.0 * e["defocus"]))
    a = np.asarray(im, dtype=np.float32) / 255.0
    if e["exposure"]:
        a = np.clip((a ** 2.2) * 2.0 ** e["exposure"], 0, 1) ** (1 / 2.2)
    if e["contrast"] != 1.0:
        a = np.clip((a - a.mean()) * e["contrast"] + a.mean(), 0, 1)
    im = Image.fromarray((a * 255 + 0.5).astype(np.uint8))
    if e["saturation"] != 1.15:
        im = ImageEnhance.Color(im).enhance(e["saturation"] / 1.15)
    a = np.asarray(im, dtype=np.float32)
    if e["cast"]:
        hue = rng.uniform(0, 2 * np.pi)
        direction = np.array([np.cos(hue), np.cos(hue - 2.094), np.cos(hue + 2.094)], np.float32)
        a = a + 255.0 * e["cast"] * direction
    if e["noise"]:
        a = a + rng.normal(0, 40.0 * e["noise"], a.shape)
    im = Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8))
    if e["jpeg"]:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=int(round(90 - 87 * e["jpeg"])))
        im = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return im


# -- comments -----------------------------------------------------------------
PRAISE = {
    "composition": ["nice composition", "well composed", "great framing", "the framing works well"],
    "depth_of_field": ["lovely bokeh", "the background blur isolates the subject", "nice shallow depth of field"],
    "lighting": ["beautiful light", "well exposed", "great use of light"],
    "colour": ["gorgeous colours", "the colours pop", "lovely natural tones"],
    "technical_quality": ["tack sharp", "very clean and crisp", "excellent detail"],
    "content": ["what a wonderful subject", "fascinating subject", "great choice of subject"],
    "emotion": ["this makes me feel peaceful", "very moving", "such a joyful mood"],
}
#: what commenters say of a flaw, per attribute and cause (the causes :func:`_causes` names)
CRITICISM = {
    "composition": {"a tilted horizon": ["the horizon is tilted", "crooked horizon"],
                    "the subject is cut off at the edge": ["the subject is cut off"],
                    "an off-centre, unbalanced crop": ["awkward crop"]},
    "depth_of_field": {"everything is in focus and the background competes": [
        "the background is distracting", "too much in focus, nothing stands out"]},
    "lighting": {"underexposed and dark": ["too dark", "the exposure is off"],
                 "overexposed with blown highlights": ["blown out highlights", "the exposure is off"],
                 "flat, low contrast": ["flat, lifeless light"],
                 "harsh, heavy contrast": ["harsh, contrasty light"]},
    "colour": {"muted, washed-out colours": ["the colours look washed out"],
               "garish, oversaturated colours": ["oversaturated colours"],
               "a strong colour cast": ["a strange colour cast"]},
    "technical_quality": {"blurry, out of focus": ["blurry", "out of focus"],
                          "visible noise and grain": ["too much noise", "grainy and soft"],
                          "lacking detail, as if upscaled": ["looks pixelated"],
                          "blocky compression artefacts": ["ugly compression artefacts"]},
}
#: criticisms that name no cause: of a visual attribute below par with no
#: single edit past its threshold, and of content and mood
GENERIC = {
    "composition": ["composition feels off"],
    "depth_of_field": ["nothing separates the subject"],
    "lighting": ["the light does not work"],
    "colour": ["the colours feel off"],
    "technical_quality": ["the image quality is poor"],
    "content": ["boring subject", "the subject does not interest me", "nothing to look at here"],
    "emotion": ["leaves me cold", "no feeling in this one", "a gloomy, dull mood"],
}


def criticisms(attr: str) -> list[str]:
    """Every criticism of an attribute: those of its causes, then its generic ones."""
    return list(dict.fromkeys([p for ps in CRITICISM.get(attr, {}).values() for p in ps] + GENERIC[attr]))


OPENERS = ["", "", "I think ", "Honestly, ", "To me, ", "Hmm, "]
CLOSERS = ["", "", ".", "!", ", good luck.", ", well done." , "; just my opinion."]
NOISE = ["first!", "thanks for sharing", "see my entry too", "what camera did you use?",
         "interesting challenge this week"]


#: the comment generator's rates: a quality above SOUND is praised; the first comment is about
#: content or mood with P_CONTENT_FIRST; a comment is noise with P_NOISE, else wrong with P_WRONG
SOUND, P_CONTENT_FIRST, P_NOISE, P_WRONG, MAX_COMMENTS = 0.6, 0.6, 0.10, 0.15, 5
VISUAL = ATTRIBUTES[:5]  # the attributes the edits act on


def _visual_choice(q: dict) -> np.ndarray:
    """Which visual attribute a comment that is not about content or mood speaks of: the further
    its quality from SOUND, the likelier."""
    extremeness = np.array([abs(q[a] - SOUND) + 0.05 for a in VISUAL])
    return extremeness / extremeness.sum()


def _cause_phrases(attr: str, edits: dict) -> list[str]:
    """What commenters say of a flawed attribute: the phrases of the causes the image has, else the
    attribute's generic criticisms."""
    named = CRITICISM.get(attr, {})
    return list(dict.fromkeys(p for c in _causes(attr, edits, 0.5) for p in named.get(c, []))) or GENERIC[attr]


def make_comments(q: dict, edits: dict, rng: np.random.Generator) -> list[str]:
    """1-5 template comments (module docstring: 15% wrong, 10% noise, 60% one
    about content/mood; a criticism names a cause the image has)."""
    n = int(rng.integers(1, MAX_COMMENTS + 1))
    out = []
    if rng.random() < P_CONTENT_FIRST:
        out.append(str(rng.choice(["content", "emotion"])))
    while len(out) < n:
        out.append(str(rng.choice(VISUAL, p=_visual_choice(q))))
    comments = []
    for attr in out:
        if rng.random() < P_NOISE:
            comments.append(str(rng.choice(NOISE)))
            continue
        good = q[attr] > SOUND
        wrong = rng.random() < P_WRONG
        if good != wrong:
            phrases = PRAISE[attr]
        elif wrong:  # a criticism of a sound attribute: any of its criticisms
            phrases = criticisms(attr)
        else:  # what is wrong with it, where an edit is past its threshold
            phrases = _cause_phrases(attr, edits)
        phrase = str(rng.choice(phrases))
        text = str(rng.choice(OPENERS)) + phrase + str(rng.choice(CLOSERS))
        comments.append(text[0].upper() + text[1:])
    return comments


def comment_phrase_probabilities(q: dict, edits: dict, good: dict | None = None) -> dict[str, float]:
    """The exact distribution of the phrase of one comment drawn at random
    from an image's :func:`make_comments` (openers and closers aside):
    phrase -> probability. ``good`` overrides, per attribute, the probability
    that its quality is above 0.6 (else 0 or 1 from ``q``): an observer who
    does not know the hidden appeal and mood passes theirs for content and
    emotion."""
    share_first = float(np.mean([1 / n for n in range(1, MAX_COMMENTS + 1)]))  # P(a random comment is the first)
    p_attr = {a: (1 - P_CONTENT_FIRST * share_first) * float(w) for a, w in zip(VISUAL, _visual_choice(q))}
    p_attr.update({a: P_CONTENT_FIRST / 2 * share_first for a in ("content", "emotion")})
    out: dict[str, float] = {}

    def add(phrases: list[str], mass: float) -> None:
        for p in phrases:
            out[p] = out.get(p, 0.0) + mass / len(phrases)

    for attr, pa in p_attr.items():
        add(NOISE, pa * P_NOISE)
        said = pa * (1 - P_NOISE)
        p_good = (good or {}).get(attr, float(q[attr] > SOUND))
        add(PRAISE[attr], said * (p_good * (1 - P_WRONG) + (1 - p_good) * P_WRONG))
        add(criticisms(attr), said * p_good * P_WRONG)
        add(_cause_phrases(attr, edits), said * (1 - p_good) * (1 - P_WRONG))
    return out


# -- attribute descriptions -----------------------------------------------------
GRADES = ((0.85, ("excellent", "superb", "outstanding")), (0.65, ("good", "pleasing", "solid")),
          (0.45, ("fair", "average", "acceptable")), (0.25, ("poor", "weak", "disappointing")),
          (-1.0, ("very poor", "terrible", "awful")))
NOUNS = {"composition": ("composition", "framing"), "depth_of_field": ("depth of field", "subject isolation"),
         "lighting": ("lighting", "exposure"), "colour": ("colour", "colour rendition"),
         "technical_quality": ("technical quality", "image quality"), "content": ("subject", "content"),
         "emotion": ("mood", "emotional impact")}


def subject_of(source_name: str) -> str:
    """A readable subject from a source photo's name ("Infinite-Sea_by_Aury88" -> "infinite sea")."""
    name = source_name.removeprefix("skimage-").split("_by_")[0]
    name = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)
    return " ".join(re.split(r"[_\-\s]+", name)).lower().strip()


def _causes(attr: str, e: dict, mood: float) -> list[str]:
    """What makes an attribute what it is, from the edit strengths."""
    out = []
    if attr == "composition":
        out += ["a tilted horizon"] if abs(e["tilt"]) > 4 else []
        out += ["the subject is cut off at the edge"] if e["cut"] > 0.3 else []
        out += ["an off-centre, unbalanced crop"] if e["offset"] > 0.5 else []
        return out or ["level and well balanced"]
    if attr == "depth_of_field":
        return ["a soft, blurred background isolates the subject"] if e["dof"] > 0.3 else \
            ["everything is in focus and the background competes"]
    if attr == "lighting":
        out += ["underexposed and dark"] if e["exposure"] < -0.6 else []
        out += ["overexposed with blown highlights"] if e["exposure"] > 0.6 else []
        out += ["flat, low contrast"] if np.log(e["contrast"]) < -0.2 else []
        out += ["harsh, heavy contrast"] if np.log(e["contrast"]) > 0.2 else []
        return out or ["balanced, natural exposure"]
    if attr == "colour":
        out += ["muted, washed-out colours"] if e["saturation"] < 0.7 else []
        out += ["garish, oversaturated colours"] if e["saturation"] > 1.6 else []
        out += ["a strong colour cast"] if e["cast"] > 0.06 else []
        return out or ["natural, well balanced colours"]
    if attr == "technical_quality":
        out += ["blurry, out of focus"] if e["defocus"] > 0.3 else []
        out += ["visible noise and grain"] if e["noise"] > 0.3 else []
        out += ["lacking detail, as if upscaled"] if e["resolution"] > 0.3 else []
        out += ["blocky compression artefacts"] if e["jpeg"] > 0.4 else []
        return out or ["sharp and clean"]
    if attr == "emotion":
        return ["a calm, uplifting feeling"] if mood > 0.5 else ["a sombre, heavy feeling"]
    return []


def make_descriptions(q: dict, edits: dict, mood: float, subject: str, rng: np.random.Generator) -> dict:
    """Attribute descriptions of one image (module docstring)."""
    out = {}
    for attr in ATTRIBUTES:
        if rng.random() < 0.15:
            continue
        noisy = q[attr] + rng.normal(0, 0.05)
        words = next(w for cut, w in GRADES if noisy > cut)
        texts = []
        for _ in range(2 if rng.random() < 0.2 else 1):
            grade, noun = str(rng.choice(words)), str(rng.choice(NOUNS[attr]))
            causes = _causes(attr, edits, mood)
            if attr == "content":
                texts.append(f"{grade} {noun}: the {subject}" if rng.random() < 0.5
                             else f"the {subject} makes {'an' if grade[0] in 'aeiou' else 'a'} {grade} {noun}")
            elif rng.random() < 0.5:
                texts.append(f"{grade} {noun}, " + " and ".join(causes))
            else:
                texts.append(" and ".join(causes).capitalize() + f"; {grade} {noun} overall")
        out[attr] = texts[0] if len(texts) == 1 else texts
    return out


# -- the world ------------------------------------------------------------------
def split_sources(names: list[str], seed: int) -> dict[str, str]:
    """Source name -> split (70/10/20 of the sources, at least one each when there are 3+)."""
    order = [names[i] for i in np.random.default_rng([seed, 7]).permutation(len(names))]
    n = len(order)
    n_val = max(1, round(0.1 * n)) if n >= 3 else 0
    n_test = max(1, round(0.2 * n)) if n >= 2 else 0
    split = {}
    for k, name in enumerate(order):
        split[name] = "test" if k < n_test else "val" if k < n_test + n_val else "train"
    return split


_WORK: dict[str, np.ndarray] = {}


def _init_worker(sources: list[Source]) -> None:
    for s in sources:
        _WORK[s.name] = working_copy(s)


def _make_one(job):
    i, seed, source_name, appeal = job
    rng = np.random.default_rng([seed, i])
    edits = sample_edits(rng)
    mood = float(rng.uniform(0, 1))
    im = render(_WORK[source_name], edits, rng)
    q = attribute_qualities(edits, appeal, mood)
    mu = true_mean(q)
    votes = vote_histogram(mu, rng)
    comments = make_comments(q, edits, rng)
    descriptions = make_descriptions(q, edits, mood, subject_of(source_name), np.random.default_rng([seed, i, 17]))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=92)
    return i, buf.getvalue(), edits, mood, q, mu, votes, comments, descriptions


def synthesize(output: str | Path, n: int, seed: int = 0, sources: list[Source] | None = None,
               min_sources: int = 30, workers: int | None = None, progress=None) -> dict:
    """Write ``n`` images with labels, attributes and comments to ``output``:
    ``images/<id>.jpg``, ``labels.csv`` (path, score1..score10, split,
    true_mean, the seven attribute scores, source, edit strengths),
    ``comments.json`` (DPC style), ``attributes.json`` (attribute
    descriptions) and ``world.json`` (the recipe). Returns a summary."""
    sources = find_sources() if sources is None else sources
    if len(sources) < min_sources:
        raise ValueError(f"the synthetic world needs at least {min_sources} source photos; found "
                         f"{len(sources)}. Install more: {INSTALL_HINT}")
    if n < 1:
        raise ValueError("--n must be at least 1")
    output = Path(output)
    (output / "images").mkdir(parents=True, exist_ok=True)
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError("two source photos share a name: " + ", ".join(sorted({x for x in names if names.count(x) > 1})))
    split = split_sources(names, seed)
    appeal_rng = np.random.default_rng([seed, 11])
    appeal = {name: float(v) for name, v in zip(names, appeal_rng.uniform(0.1, 0.9, len(names)))}
    order = np.random.default_rng([seed, 13]).permutation(n) % len(sources)
    jobs = [(i, seed, names[int(order[i])], appeal[names[int(order[i])]]) for i in range(n)]
    workers = workers or min(4, os.cpu_count() or 1)
    results = [None] * n
    if workers > 1 and n > 50:
        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(sources,)) as pool:
            for res in pool.map(_make_one, jobs, chunksize=16):
                results[res[0]] = res
                if progress:
                    progress(1)
    else:
        _init_worker(sources)
        for job in jobs:
            res = _make_one(job)
            results[res[0]] = res
            if progress:
                progress(1)
    header = (["path"] + [f"score{k}" for k in range(1, N_BINS + 1)] + ["split", "true_mean"]
              + list(ATTRIBUTES) + ["mood", "source"] + list(EDITS))
    comments, described = {}, {}
    with open(output / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        for i, data, edits, mood, q, mu, votes, texts, descriptions in results:
            name = f"{i:06d}.jpg"
            (output / "images" / name).write_bytes(data)
            src = jobs[i][2]
            w.writerow([f"images/{name}", *map(int, votes), split[src], f"{mu:.6f}",
                        *(f"{1 + 9 * q[a]:.6f}" for a in ATTRIBUTES), f"{mood:.6f}", src,
                        *(f"{edits[k]:.6f}" for k in EDITS)])
            comments[name] = texts
            described[name] = descriptions
    (output / "comments.json").write_text(json.dumps(comments, indent=1, ensure_ascii=False) + "\n")
    (output / "attributes.json").write_text(json.dumps(described, indent=1, ensure_ascii=False) + "\n")
    counts = {s: sum(1 for j in jobs if split[j[2]] == s) for s, _ in SPLIT_SHARES}
    world = {"format": "photocritic-synthetic-world", "version": VERSION, "seed": seed, "n": n,
             "weights": WEIGHTS, "attributes": list(ATTRIBUTES), "edits": list(EDITS),
             "sources": [{"name": s.name, "origin": s.origin, "sha256_16": s.digest(),
                          "split": split[s.name], "appeal": appeal[s.name]} for s in sources],
             "images_per_split": counts}
    (output / "world.json").write_text(json.dumps(world, indent=1) + "\n")
    return {"output": str(output), "images": n, "sources": len(sources), "splits": counts, "version": VERSION}
