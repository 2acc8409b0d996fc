"""The offline "hash" embedder: the provider conformance suite plus what feature hashing promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bigrag_mcp.default_plugins import hash_embedder
from bigrag_mcp.default_plugins.hash_embedder import HashEmbedder, create_hash_embedder, terms, words
from bigrag_mcp.errors import InvalidArgument
from bigrag_mcp.testing.embedders import EmbeddingProviderConformance, registered_embedding_providers
from bigrag_mcp.types import EmbeddingProvider


class TestHashConformance(EmbeddingProviderConformance):
    @pytest.fixture
    async def provider(self) -> EmbeddingProvider:
        return create_hash_embedder()


def cosine(left: str, right: str) -> float:
    a, b = HashEmbedder().embed_sync([left, right])
    return float(np.dot(a, b))


def test_defaults() -> None:
    embedder = create_hash_embedder()
    assert (embedder.name, embedder.model, embedder.dimension, embedder.max_batch) == ("hash", "hash-v1", 384, 1024)


def test_shared_words_score_higher_than_unrelated_text() -> None:
    query = "automatic indexing of library catalogues"
    related = "the library uses automatic indexing for its catalogues"
    assert cosine(query, related) > cosine(query, "quarterly stock market report") + 0.2


def test_word_order_matters_through_bigrams() -> None:
    assert cosine("new york city", "city york new") < 0.9
    assert cosine("new york city", "new york city") == pytest.approx(1.0)


def test_case_and_unicode_normalisation() -> None:
    assert cosine("Café AU LAIT", "cafe\u0301 au lait") == pytest.approx(1.0)


def test_tokens_cover_scripts_symbols_and_drop_punctuation() -> None:
    assert words("Hello, World! hello-world") == ["hello", "world", "hello", "world"]
    assert words("東京です") == ["東", "京", "で", "す"]
    assert words("हिन्दी भाषा") == ["हिन्दी", "भाषा"]
    assert words("launch 🚀!") == ["launch", "🚀"]


@pytest.mark.parametrize("text", ["", "   \n\t", "...!?", "\u200b"])
def test_text_without_tokens_embeds_to_the_uniform_unit_vector(text: str) -> None:
    (vector,) = HashEmbedder(dimension=16).embed_sync([text])
    assert vector == pytest.approx([0.25] * 16)  # a direction every backend accepts; a zero vector has none


def test_dimension_is_configurable() -> None:
    vectors = create_hash_embedder(dimension=64).embed_sync(["some text here"])
    assert len(vectors[0]) == 64
    assert np.linalg.norm(vectors[0]) == pytest.approx(1.0)


@pytest.mark.parametrize("dimension", [0, -3, 70_000])
def test_bad_dimension_is_rejected(dimension: int) -> None:
    with pytest.raises(InvalidArgument):
        create_hash_embedder(dimension=dimension)


def test_other_model_names_are_rejected() -> None:
    assert create_hash_embedder(model="hash-v1").model == "hash-v1"
    with pytest.raises(InvalidArgument, match="hash-v1"):
        create_hash_embedder(model="text-embedding-3-small")


def test_vectors_do_not_depend_on_the_process_hash_seed() -> None:
    script = "import json; from bigrag_mcp.default_plugins.hash_embedder import HashEmbedder; "
    script += "print(json.dumps(HashEmbedder(32).embed_sync(['stable across runs'])))"
    runs = [
        subprocess.run(
            [sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, check=True
        ).stdout
        for seed in ("1", "2")
    ]
    assert runs[0] == runs[1]
    assert json.loads(runs[0]) == HashEmbedder(32).embed_sync(["stable across runs"])


def test_registered_through_the_plugin_hook() -> None:
    assert registered_embedding_providers(hash_embedder) == {"hash": create_hash_embedder}


def test_terms_drop_stopwords_and_fold_plurals() -> None:
    assert terms("What are the uses of catalogs and indexes in libraries?") == ["use", "catalog", "indexe", "librarie"]
    assert terms("class glass") == ["class", "glass"]


def test_text_made_only_of_stopwords_still_embeds() -> None:
    assert cosine("to be or not to be", "to be or not to be") == pytest.approx(1.0)
    assert cosine("indexing the catalogs", "catalog indexing") == pytest.approx(1.0, abs=0.25)


def _hash_v1(text: str, dimension: int) -> list[float]:
    """hash-v1 as defined, one feature at a time: the reference the batched embedder must match bit for bit."""
    import hashlib
    import itertools
    import math
    from collections import Counter

    tokens = terms(text)
    weighted = [(g, 1.0 + math.log(c)) for g, c in Counter(tokens).items()]
    weighted += [(g, 0.5 * (1.0 + math.log(c))) for g, c in Counter(f"{a} {b}" for a, b in itertools.pairwise(tokens)).items()]
    vector = np.zeros((1, dimension))
    for gram, weight in weighted:
        digest = int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest(), "little")
        vector[0, digest % dimension] += (1.0 if digest >> 63 else -1.0) * weight
    if not vector.any():
        vector[:] = 1.0
    return list((vector / np.linalg.norm(vector, axis=1, keepdims=True))[0])


def test_batched_vectors_equal_the_feature_by_feature_definition() -> None:
    texts = [
        "Quarterly revenue forecast: the ledger, the ledgers and the audit.",
        "Ünïcödé naïve café ＡＢＣ ﬁle STRASSE straße",
        "東京です 한국어 हिन्दी भाषा launch 🚀 $5 + €3",
        "plum " * 300 + "cherry plum " * 90,  # counts beyond any lookup table
        "",
        "x\x1cy",
        "It is what it is.",  # stopwords only: they are kept
        "snake_case __dunder__ _ a_b ~tilde~ `tick` @at #hash",
    ]
    for dimension in (384, 7):
        got = HashEmbedder(dimension).embed_sync(texts)
        assert got == [_hash_v1(t, dimension) for t in texts]


def test_the_ascii_pattern_gives_the_tokens_of_the_unicode_definition() -> None:
    """ASCII text takes one shortened pattern; on every ASCII character, alone and in runs, it agrees with the
    general definition (NFKC, case folding, the token pattern, punctuation dropped)."""
    import random

    rnd = random.Random(3)
    alphabet = [chr(c) for c in range(128)]
    texts = [*alphabet, "".join(alphabet), *("".join(rnd.choices(alphabet, k=rnd.randint(1, 40))) for _ in range(2000))]
    texts += ["Snake_case and CamelCase, x_1 _ __ a_ 42nd $5 <=> ~x^2 `code` | pipe", "Mixed CASE 123abc"]
    for text in texts:
        assert words(text) == hash_embedder._unicode_words(text), repr(text)
