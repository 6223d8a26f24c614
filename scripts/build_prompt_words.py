"""Build the adjective lists for prompt search from WordNet (Hentschel et al.,
2022, searched "all positive x negative" adjective pairs built from WordNet
synonyms of "great" and "ugly" plus "beautiful" and "pretty"; the full lists
were not published, so this script records ours).

Positive: the members of every adjective synset of "great", "beautiful" and
"pretty" (plus those three words). Negative: the members of every adjective
synset of "ugly" and "horrible", and "atrocious" (the paper's best binary
negative). Multi-word entries are kept with spaces. Reads the WordNet
database of Debian's `wordnet-base` package (/usr/share/wordnet).

Usage: python scripts/build_prompt_words.py > src/photocritic/prompts/adjectives.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

WORDNET = Path("/usr/share/wordnet")


def adjective_synsets(word: str) -> list[list[str]]:
    offsets = []
    for line in open(WORDNET / "index.adj", encoding="latin-1"):
        if line.startswith(word + " "):
            parts = line.split()
            n_synsets = int(parts[2])
            offsets = parts[-n_synsets:]
            break
    synsets = []
    with open(WORDNET / "data.adj", "rb") as fh:
        for off in offsets:
            fh.seek(int(off))
            parts = fh.readline().decode("latin-1").split()
            n_words = int(parts[3], 16)
            words = [parts[4 + 2 * i] for i in range(n_words)]
            synsets.append([w.split("(")[0].replace("_", " ") for w in words])
    return synsets


def collect(words: list[str], extra: list[str]) -> list[str]:
    out = list(extra)
    for w in words:
        for syn in adjective_synsets(w):
            out.extend(syn)
    seen, uniq = set(), []
    for w in out:
        if w.lower() not in seen:
            seen.add(w.lower())
            uniq.append(w.lower())
    return uniq


def main() -> int:
    if not (WORDNET / "index.adj").exists():
        print("WordNet not found: apt-get install wordnet-base", file=sys.stderr)
        return 1
    positive = collect(["great", "beautiful", "pretty"], ["great", "beautiful", "pretty"])
    negative = collect(["ugly", "horrible"], ["ugly", "horrible", "atrocious"])
    json.dump({"source": "WordNet 3.0 (Debian wordnet-base) adjective synsets; see "
                         "scripts/build_prompt_words.py",
               "positive": positive, "negative": negative}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
