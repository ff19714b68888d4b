"""WordPiece tokenizer (the `tokenizers` library) for museum questions, captions and phrases.

The shipped vocabulary, `assets/tokenizer.json`, is rebuilt deterministically from the museum
corpus by `python -m edgefuse.data.tokenizer --rebuild`. `Tokenizer` also loads any BERT-style
tokenizer.json (e.g. a MiniLM one) as long as it has [PAD] [UNK] [CLS] [SEP] [MASK].
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import logging
import os
import string
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgefuse.artifacts import atomic_write_text
from edgefuse.errors import DataError

log = logging.getLogger(__name__)

ASSET_PATH = Path(__file__).parent / "assets" / "tokenizer.json"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # [PAD] = 0
DEFAULT_VOCAB_SIZE = 400
CORPUS_ITEMS = 1000  # train layouts used to build the shipped vocabulary (every word occurs by ~200)


class Tokenizer:
    """[CLS] text [SEP] encoding to int64 numpy arrays, padded with [PAD] and masked."""

    def __init__(self, backend) -> None:  # backend: tokenizers.Tokenizer
        self._tok = backend
        self._fingerprint: str | None = None
        self._tok.no_padding()
        self._tok.no_truncation()
        ids = {}
        for t in SPECIAL_TOKENS:
            i = backend.token_to_id(t)
            if i is None:
                raise DataError(
                    f"tokenizer has no {t} token",
                    f"use a BERT-style WordPiece tokenizer with {' '.join(SPECIAL_TOKENS)}",
                    code="EF241",
                )
            ids[t] = i
        self.pad_id, self.unk_id, self.cls_id = ids["[PAD]"], ids["[UNK]"], ids["[CLS]"]
        self.sep_id, self.mask_id = ids["[SEP]"], ids["[MASK]"]
        self.special_ids = frozenset(ids.values())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Tokenizer:
        from tokenizers import Tokenizer as _Backend

        p = Path(path)
        if p.is_dir():
            p = p / "tokenizer.json"
        if not p.is_file():
            raise DataError(f"tokenizer not found: {p}", "point at a tokenizer.json file", code="EF240")
        try:
            return cls(_Backend.from_file(str(p)))
        except DataError:
            raise
        except Exception as e:  # tokenizers raises a bare Exception on bad JSON
            raise DataError(f"{p} is not a valid tokenizer.json: {str(e).splitlines()[0]}", "rebuild or re-copy it", code="EF242") from e

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write tokenizer.json atomically (folder paths get tokenizer.json inside)."""
        p = Path(path)
        if p.is_dir():
            p = p / "tokenizer.json"
        return atomic_write_text(p, self.to_json())

    def to_json(self) -> str:
        return self._tok.to_str(pretty=True)

    def fingerprint(self) -> str:
        """Hash of the whole tokenizer.json (vocabulary, normaliser, ...): keys feed caches."""
        if self._fingerprint is None:
            self._fingerprint = hashlib.sha256(self._tok.to_str().encode()).hexdigest()[:16]
        return self._fingerprint

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def tokenize(self, text: str) -> list[str]:
        """Word pieces of one text, no specials (for showing and debugging)."""
        return self._tok.encode(text, add_special_tokens=False).tokens

    def encode_batch(
        self, texts: Sequence[str], max_length: int = 32, pad_to: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """texts -> (input_ids, attention_mask), int64 [B, L].

        Each row is [CLS] pieces [SEP], truncated to `max_length` (the [SEP] is kept), padded
        with [PAD] to the longest row, or to `pad_to` when given (fixed-shape engines).
        """
        if isinstance(texts, str):
            raise DataError("encode_batch takes a list of texts, not one string", "wrap it: [text]", code="EF243")
        if max_length < 2:
            raise DataError(f"max_length {max_length} leaves no room for [CLS] and [SEP]", "use max_length >= 3", code="EF243")
        limit = max_length if pad_to is None else min(max_length, pad_to)
        if limit < 2:
            raise DataError(f"pad_to {pad_to} leaves no room for [CLS] and [SEP]", "use pad_to >= 3", code="EF243")
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise DataError(
                f"text {bad[0]} is {type(texts[bad[0]]).__name__}, not a string", "pass a list of strings", code="EF243"
            )
        encs = self._tok.encode_batch(list(texts), add_special_tokens=False)
        rows = [[self.cls_id, *e.ids[: limit - 2], self.sep_id] for e in encs]
        width = pad_to if pad_to is not None else max((len(r) for r in rows), default=2)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
        return ids, mask

    def encode(self, text: str, max_length: int = 32) -> list[int]:
        ids, _ = self.encode_batch([text], max_length=max_length)
        return ids[0].tolist()

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """ids -> text, special tokens and padding skipped."""
        keep = [int(i) for i in np.asarray(ids).reshape(-1) if int(i) not in self.special_ids]
        return self._tok.decode(keep, skip_special_tokens=True)

    def decode_batch(self, ids: np.ndarray) -> list[str]:
        return [self.decode(row) for row in np.asarray(ids)]

    def normalise(self, text: str) -> str:
        """What decode(encode(text)) gives for in-vocabulary text: lower case, tidy spaces."""
        return self.decode(self.encode(text, max_length=10_000))

    def id_to_token(self, i: int) -> str | None:
        return self._tok.id_to_token(int(i))

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)


@functools.lru_cache(maxsize=1)
def default_tokenizer() -> Tokenizer:
    """The shipped museum tokenizer (loaded once per process)."""
    return Tokenizer.load(ASSET_PATH)


def build_tokenizer(texts: Sequence[str], vocab_size: int = DEFAULT_VOCAB_SIZE) -> Tokenizer:
    """Lower-case WordPiece tokenizer for `texts`, identical bytes for the same texts.

    The vocabulary is counted here instead of by `tokenizers`' WordPieceTrainer, whose order of
    equal-count pieces changes from run to run: specials, then every letter, digit and ASCII
    punctuation mark (alone and as a ##continuation, so unseen words still split into known
    pieces), then the `vocab_size` commonest corpus words in alphabetical order.
    """
    from collections import Counter

    from tokenizers import Tokenizer as _Backend
    from tokenizers import decoders, models, normalizers, pre_tokenizers

    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    alphabet = list(string.ascii_lowercase + string.digits + string.punctuation)
    chars = sorted({c for w in counts for c in w} | set(alphabet))
    vocab: dict[str, int] = {}
    for piece in [*SPECIAL_TOKENS, *chars, *(f"##{c}" for c in chars)]:
        vocab.setdefault(piece, len(vocab))
    room = max(vocab_size - len(vocab), 0)
    kept = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:room]]
    for word in sorted(kept):  # ids by spelling: a change in word frequencies keeps every id
        vocab.setdefault(word, len(vocab))
    tok = _Backend(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return Tokenizer(tok)


def build_museum_tokenizer(n: int = CORPUS_ITEMS, vocab_size: int = DEFAULT_VOCAB_SIZE) -> Tokenizer:
    """The shipped tokenizer: WordPiece on the texts of the first n train scenes + the answers."""
    from edgefuse.data.museum import corpus

    return build_tokenizer(corpus(n), vocab_size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build or check the shipped museum tokenizer.")
    parser.add_argument("--rebuild", action="store_true", help=f"rewrite {ASSET_PATH}")
    parser.add_argument("--check", action="store_true", help="exit 1 if a rebuild would differ from the asset")
    args = parser.parse_args(argv)
    tok = build_museum_tokenizer()
    if args.rebuild:
        tok.save(ASSET_PATH)
        print(f"wrote {ASSET_PATH} (vocab {tok.vocab_size})")
        return 0
    same = ASSET_PATH.is_file() and ASSET_PATH.read_text() == tok.to_json()
    print(f"vocab {tok.vocab_size}; asset {'up to date' if same else 'differs: run --rebuild'}")
    return 0 if same or not args.check else 1


if __name__ == "__main__":
    raise SystemExit(main())
