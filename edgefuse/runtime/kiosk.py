"""The museum kiosk pipeline: photo + question -> answer, caption, box, match score.

Runs over an artifact folder (model.onnx + manifest.json + tokenizer.json + answers.json, as
written by `edgefuse export` / `edgefuse quantize`) through any Runner, with the same
preprocessing and tokenizer code as training (edgefuse.data). Torch-free.
"""

from __future__ import annotations

import io
import logging
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgefuse.artifacts import read_json
from edgefuse.errors import ArtifactError, InputError, RunnerError

log = logging.getLogger(__name__)

ImageLike = Any  # bytes | path | PIL.Image | np.ndarray: whatever edgefuse.data.preprocess.load_image takes


@dataclass
class Answer:
    """A VQA answer with its softmax confidence and the top-k alternatives."""

    answer: str
    confidence: float
    top_k: list[tuple[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"answer": self.answer, "confidence": self.confidence, "top_k": [{"answer": a, "confidence": c} for a, c in self.top_k]}


@dataclass
class Grounding:
    """Where a referring phrase points: box (x, y, w, h) in [0, 1] (top-left origin), in pixels, and drawn."""

    phrase: str
    box: tuple[float, float, float, float]
    box_pixels: tuple[int, int, int, int]
    png: bytes = field(repr=False)
    attention: list[float] = field(default_factory=list, repr=False)

    def to_dict(self, with_png: bool = True) -> dict[str, Any]:
        import base64

        d = {"phrase": self.phrase, "box": list(self.box), "box_pixels": list(self.box_pixels)}
        if with_png:
            d["png_base64"] = base64.b64encode(self.png).decode("ascii")
        return d


@dataclass
class Caption:
    text: str
    score: float | None = None
    num_beams: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Limits:
    """Input limits a kiosk enforces before any model work (defaults: RuntimeConfig)."""

    max_image_pixels: int = 40_000_000
    max_question_chars: int = 200
    max_upload_bytes: int = 8 << 20

    @classmethod
    def from_runtime(cls, rc: Any) -> Limits:
        return cls(max_image_pixels=int(rc.max_image_pixels), max_question_chars=int(rc.max_question_chars),
                   max_upload_bytes=int(rc.max_upload_mb * (1 << 20)))


_WORD = re.compile(r"[A-Za-z0-9']+|[^\sA-Za-z0-9']")


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class KioskPipeline:
    """Question answering, grounding, matching and captioning over one artifact folder.

    `artifact` holds the fusion model (VQA / ITM / grounding outputs); `caption_artifact`
    optionally holds the captioning pair (image_encoder.onnx + decoder.onnx). Either alone is
    fine: a method whose task the artifacts lack raises a typed error. Thread-safe: one
    inference at a time per pipeline (the server batches requests instead).
    """

    def __init__(
        self,
        artifact: str | os.PathLike[str] | None,
        provider: str = "cpu",
        threads: int = 0,
        caption_artifact: str | os.PathLike[str] | None = None,
        limits: Limits | None = None,
        runner_options: dict[str, Any] | None = None,
    ) -> None:
        from edgefuse.artifacts import read_manifest
        from edgefuse.data.tokenizer import Tokenizer
        from edgefuse.runtime.runners import open_runner

        self.limits = limits or Limits()
        self.provider = provider
        self._lock = threading.Lock()
        opts = dict(runner_options or {})
        if provider == "cpu" and threads:
            opts.setdefault("threads", threads)
        self.runner = None
        self.manifest: dict[str, Any] = {}
        self.answers: list[str] = []
        self.tasks: list[str] = []
        self.tokenizer = None
        if artifact is None and caption_artifact is None:
            raise ArtifactError("no artifact given", "pass an artifact folder written by `edgefuse export`", code="EF606")
        if artifact is not None:
            self.artifact = Path(artifact)
            self.manifest = read_manifest(self.artifact)
            self.tasks = list(self.manifest.get("tasks") or [])
            if "captioning" in self.tasks and not (self.artifact / "model.onnx").exists():
                caption_artifact, self.artifact, self.manifest, self.tasks = self.artifact, None, {}, []
            else:
                self.tokenizer = Tokenizer.load(self.artifact / "tokenizer.json")
                if "vqa" in self.tasks:
                    self.answers = [str(a) for a in read_json(self.artifact / "answers.json", "answer vocabulary", "re-export the model with `edgefuse export`")]
                self.runner = open_runner(self.artifact, provider=provider, **opts).activate()
        else:
            self.artifact = None
        self.captioner = None
        if caption_artifact is not None:
            self.captioner = _Captioner(Path(caption_artifact), provider, opts)
            if self.tokenizer is None:
                self.tokenizer = self.captioner.tokenizer
            if not self.manifest:
                self.manifest = self.captioner.manifest
            self.tasks.append("captioning")
        from edgefuse.data.preprocess import PreprocessConfig

        self.image_size = int(self.manifest.get("image_size") or 64)
        self.max_text_length = int(self.manifest.get("max_text_length") or 32)
        # the preprocessing the artifact was exported with (mean/std/resample), else the defaults
        pre = dict(self.manifest.get("preprocess") or {})
        pre.update({"image_size": self.image_size, "max_text_length": self.max_text_length})
        self.preprocess = PreprocessConfig.from_dict(pre)

    # --- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        if self.runner is not None:
            self.runner.deactivate()
        if self.captioner is not None:
            self.captioner.close()

    def __enter__(self) -> KioskPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def info(self) -> dict[str, Any]:
        m = self.manifest
        return {"model": m.get("model"), "family": m.get("family"), "precision": m.get("precision"), "tasks": self.tasks,
                "image_size": self.image_size, "provider": self.provider, "num_answers": len(self.answers)}

    # --- inputs ----------------------------------------------------------------------------
    def load_images(self, images: Sequence[ImageLike]) -> list[Any]:
        """Decode images through the training code's loader; bad, truncated or huge ones are InputErrors.

        The byte size is checked first; the pixel limit is checked from the image header before
        any decoding (edgefuse.data.preprocess.load_image), so a decompression bomb costs nothing.
        """
        from edgefuse.data.preprocess import load_image
        from edgefuse.errors import DataError

        out = []
        for i, src in enumerate(images):
            if isinstance(src, (bytes, bytearray, memoryview)):
                src = bytes(src)
                if not src:
                    raise InputError("the image upload is empty", "take or choose a photo", code="EF730")
                if len(src) > self.limits.max_upload_bytes:
                    raise InputError(f"image is {len(src) / 1e6:.1f} MB, limit {self.limits.max_upload_bytes / 1e6:.1f} MB",
                                     "send a smaller photo", code="EF731")
            try:
                out.append(load_image(src, max_pixels=self.limits.max_image_pixels, name="the image" if len(images) == 1 else f"image {i}"))
            except DataError as e:
                raise InputError(e.message, e.hint or "send a JPEG or PNG photo", code=e.code) from e
        return out

    def pixel_values(self, pil_images: Sequence[Any]) -> np.ndarray:
        from edgefuse.data.preprocess import preprocess_images

        return np.ascontiguousarray(preprocess_images(list(pil_images), config=self.preprocess), dtype=np.float32)

    def check_text(self, text: str, what: str = "question") -> str:
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"the {what} is empty", f"type a {what}, e.g. 'what colour is the vase?'", code="EF740")
        text = " ".join(text.split())
        if len(text) > self.limits.max_question_chars:
            raise InputError(f"the {what} is {len(text)} characters, limit {self.limits.max_question_chars}",
                             f"ask a shorter {what}", code="EF741")
        return text

    def unknown_words(self, text: str) -> list[str]:
        """Words the vocabulary does not hold whole: [UNK], or split into word pieces.

        The museum tokenizer holds every word of its corpus as one token and spells anything
        else letter by letter, so a split word is one the model never saw: answering it would
        be a confident guess. Digits and punctuation are not checked.
        """
        words: list[list[str]] = []
        for piece in self.tokenizer.tokenize(text):
            if piece.startswith("##") and words:
                words[-1].append(piece)
            else:
                words.append([piece])
        unknown: list[str] = []
        for pieces in words:
            word = "".join(p.removeprefix("##") for p in pieces)
            if "[UNK]" not in pieces and len(pieces) > 1 and any(c.isalpha() for c in word) and word not in unknown:
                unknown.append(word)
        if any("[UNK]" in p for p in words):  # letters outside the vocabulary (punctuation may map to [UNK])
            for c in dict.fromkeys(text):
                if c.isalnum() and self.tokenizer.tokenize(c) == ["[UNK]"] and c not in unknown:
                    unknown.append(c)
        return unknown

    def encode(self, texts: Sequence[str], what: str = "question") -> tuple[np.ndarray, np.ndarray]:
        """Check and tokenize texts: empty, overlong and unknown-word texts are InputErrors."""
        clean = [self.check_text(t, what) for t in texts]
        for t in clean:
            unknown = self.unknown_words(t)
            if unknown:
                shown = ", ".join(f"'{w}'" for w in unknown[:5])
                raise InputError(f"unknown word{'s' if len(unknown) > 1 else ''} in the {what}: {shown}",
                                 "use words from the museum vocabulary (colours, shapes, objects)", code="EF742")
        ids, mask = self.tokenizer.encode_batch(clean, self.max_text_length)
        if ids.shape[1] >= self.max_text_length:
            lengths = [len(self.tokenizer.tokenize(t)) + 2 for t in clean]
            if max(lengths) > self.max_text_length:
                raise InputError(f"the {what} is {max(lengths)} tokens, the model reads at most {self.max_text_length}",
                                 f"ask a shorter {what}", code="EF743")
        return np.asarray(ids, dtype=np.int64), np.asarray(mask, dtype=np.int64)

    # --- model -----------------------------------------------------------------------------
    def _require(self, task: str) -> None:
        if task not in self.tasks or (task != "captioning" and self.runner is None):
            raise RunnerError(f"this artifact has no {task} head (tasks: {', '.join(self.tasks) or 'none'})",
                              "export a model with that task, e.g. museum-dual (vqa, itm, grounding)", code="EF750")

    def run(self, pixel_values: np.ndarray, texts: Sequence[str], what: str = "question") -> dict[str, np.ndarray]:
        """One model run over a batch of preprocessed images and raw texts."""
        ids, mask = self.encode(texts, what)
        with self._lock:
            return self.runner.infer({"pixel_values": pixel_values, "input_ids": ids, "attention_mask": mask})

    def prepare(self, image: ImageLike, text: str, what: str = "question") -> tuple[np.ndarray, str]:
        """Validate and preprocess one request: (pixel_values [1, 3, S, S], normalised text).

        Every input error surfaces here, so a server can refuse a request before it queues it
        and one bad request never fails a batch.
        """
        text = self.check_text(text, what)
        self.encode([text], what)
        return self.pixel_values(self.load_images([image])), text

    def answer_prepared(self, pixel_values: np.ndarray, questions: Sequence[str], top_k: int = 5) -> list[Answer]:
        """Answers for already prepared requests, in one model run (micro-batching)."""
        self._require("vqa")
        logits = self.run(pixel_values, questions)["vqa_logits"]
        probs = _softmax(logits)
        k = max(1, min(int(top_k), probs.shape[1]))
        out = []
        for p in probs:
            order = np.argsort(-p)[:k]
            top = [(self.answers[i], round(float(p[i]), 6)) for i in order]
            out.append(Answer(top[0][0], top[0][1], top))
        return out

    def ask_batch(self, images: Sequence[ImageLike], questions: Sequence[str], top_k: int = 5) -> list[Answer]:
        """Answer a batch of (photo, question) pairs in one model run."""
        self._require("vqa")
        if len(images) != len(questions):
            raise InputError(f"{len(images)} images but {len(questions)} questions", "send one question per image", code="EF744")
        pv = self.pixel_values(self.load_images(images))
        return self.answer_prepared(pv, questions, top_k)

    def ask(self, image: ImageLike, question: str, top_k: int = 5) -> Answer:
        """Answer one question about one photo."""
        return self.ask_batch([image], [question], top_k)[0]

    def match(self, image: ImageLike, caption: str) -> float:
        """Probability that `caption` describes the photo (ITM head, index 1 = match)."""
        self._require("itm")
        pv = self.pixel_values(self.load_images([image]))
        logits = self.run(pv, [caption], "caption")["itm_logits"]
        return float(_softmax(logits)[0, 1])

    def ground(self, image: ImageLike, phrase: str, color: str = "#ff2d55") -> Grounding:
        """Box for a referring phrase, mapped to the photo's pixels and drawn on it (PNG)."""
        from PIL import ImageDraw

        self._require("grounding")
        pil = self.load_images([image])[0]
        out = self.run(self.pixel_values([pil]), [phrase], "phrase")
        x, y, w, h = (float(np.clip(v, 0.0, 1.0)) for v in out["box"][0])
        W, H = pil.size
        x0, y0 = round(x * W), round(y * H)
        x1, y1 = round(min(1.0, x + w) * W), round(min(1.0, y + h) * H)
        drawn = pil.convert("RGB").copy()
        width = max(2, round(min(W, H) / 64))
        ImageDraw.Draw(drawn).rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=color, width=width)
        buf = io.BytesIO()
        drawn.save(buf, format="PNG")
        att = out.get("grounding_attention")
        return Grounding(phrase=" ".join(phrase.split()), box=(x, y, w, h), box_pixels=(x0, y0, x1 - x0, y1 - y0), png=buf.getvalue(),
                         attention=[float(a) for a in att[0]] if att is not None else [])

    def caption(self, image: ImageLike, num_beams: int = 1, max_length: int | None = None) -> Caption:
        """Describe the photo with the captioning artifact (greedy, or beam search with num_beams > 1)."""
        if self.captioner is None:
            raise RunnerError("no captioning artifact loaded", "pass --caption-artifact (an `edgefuse export museum-caption` folder)",
                              code="EF751")
        if not 1 <= int(num_beams) <= 8:
            raise InputError(f"num_beams must be 1..8, got {num_beams}", "use 1 (greedy) to 4", code="EF745")
        pil = self.load_images([image])
        pv = self.captioner.pixel_values(pil)
        with self._lock:
            return self.captioner.generate(pv, int(num_beams), max_length)

    def warm_up(self) -> dict[str, Any]:
        """One real inference per loaded head on a synthetic photo; returns what it answered."""
        from PIL import Image

        rng = np.random.default_rng(0)
        img = Image.fromarray(rng.integers(0, 255, (self.image_size, self.image_size, 3), dtype=np.uint8))
        result: dict[str, Any] = {}
        if self.runner is not None:
            vocab_word = self._known_word()
            pv = self.pixel_values([img])
            out = self.run(pv, [vocab_word], "question")
            result["outputs"] = sorted(out)
        if self.captioner is not None:
            result["caption"] = self.caption(img, max_length=4).text
        return result

    def _known_word(self) -> str:
        for w in ("what", "colour", "color", "is", "the"):
            if not self.unknown_words(w):
                return w
        return self.tokenizer.decode([self.tokenizer.cls_id]) or "a"


class _Captioner:
    """The captioning pair (image_encoder + KV-cache decoder) driven by export's torch-free generation loop."""

    ENCODER = "image_encoder.onnx"
    DECODER = "decoder.onnx"

    def __init__(self, folder: Path, provider: str, opts: dict[str, Any]) -> None:
        from edgefuse.artifacts import read_manifest
        from edgefuse.data.preprocess import PreprocessConfig
        from edgefuse.data.tokenizer import Tokenizer
        from edgefuse.export.generation import CaptionGenerator, GenerationConfig
        from edgefuse.runtime.runners import open_runner

        self.folder = folder
        self.manifest = read_manifest(folder)
        if "generation" not in self.manifest:
            raise ArtifactError(f"{folder} has no generation settings in its manifest", "re-export it with `edgefuse export museum-caption`",
                                code="EF607")
        self.tokenizer = Tokenizer.load(folder / "tokenizer.json")
        self.image_size = int(self.manifest.get("image_size") or 64)
        pre = dict(self.manifest.get("preprocess") or {})
        pre["image_size"] = self.image_size
        self.preprocess = PreprocessConfig.from_dict(pre)
        self.config = GenerationConfig.from_dict(self.manifest["generation"])
        components = self.manifest.get("components") or {}
        runners = []
        for name in (self.ENCODER, self.DECODER):
            spec = {**self.manifest, "inputs": (components.get(name) or {}).get("inputs", [])}
            runners.append(open_runner(folder / name, provider=provider, manifest=spec, **opts).activate())
        self.encoder, self.decoder = runners
        self.generator = CaptionGenerator(self.encoder, self.decoder, self.config)

    def pixel_values(self, pil_images: Sequence[Any]) -> np.ndarray:
        from edgefuse.data.preprocess import preprocess_images

        return np.ascontiguousarray(preprocess_images(list(pil_images), config=self.preprocess), dtype=np.float32)

    def generate(self, pixel_values: np.ndarray, num_beams: int, max_length: int | None) -> Caption:
        from edgefuse.export.generation import strip_special

        ids = self.generator.generate(pixel_values, max_length=max_length, num_beams=num_beams)
        words = strip_special(ids, self.config)[0]
        return Caption(self.tokenizer.decode(words), None, num_beams)

    def close(self) -> None:
        self.encoder.deactivate()
        self.decoder.deactivate()
