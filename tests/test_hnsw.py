"""HNSW graphs of big memory-backend partitions, forced on tiny partitions: recall against exact, filters,
deletes, writes during a batch, saved graphs after a restart (also stale and damaged ones), and the shared
conformance suite. Graph work runs inline (`background=run_now`), so no test waits for a thread."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

from bigrag_mcp.default_plugins import hnsw
from bigrag_mcp.default_plugins.memory_backend import MemoryBackend
from bigrag_mcp.filters import parse_filter
from bigrag_mcp.services import collections, index, search, vectors
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.settings import Settings
from bigrag_mcp.testing.backends import VectorBackendConformance
from bigrag_mcp.types import Partition, PartitionRows, SearchRequest, VectorBackend, VectorRecord

pytestmark = pytest.mark.anyio
WHERE = Partition("docs.0123abcd", "acme")
DIM = 16


def run_now(job: Callable[[], None]) -> None:
    job()


def hnsw_backend(folder: Path | None = None, min_rows: int = 1) -> MemoryBackend:
    return MemoryBackend(ann_min_rows=min_rows, ann_folder=folder, background=run_now)


class TestMemoryBackendHnswConformance(VectorBackendConformance):
    @pytest.fixture
    async def backend(self) -> AsyncIterator[VectorBackend]:
        b = hnsw_backend()
        yield b
        await b.close()


def clustered(rng: np.random.Generator, n: int) -> np.ndarray:
    centres = rng.standard_normal((20, DIM))
    return centres[rng.integers(0, 20, n)] + 0.5 * rng.standard_normal((n, DIM))


def records(vectors: np.ndarray, start: int = 0) -> list[VectorRecord]:
    return [
        VectorRecord(f"r{start + i}", v.tolist(), None, {"group": (start + i) % 20, "even": (start + i) % 2 == 0})
        for i, v in enumerate(vectors)
    ]


def semantic(vector: Any, top_k: int = 10, **kw: Any) -> SearchRequest:
    return SearchRequest(top_k=top_k, mode="semantic", vector=list(map(float, vector)), **kw)


async def filled(backend: MemoryBackend, vectors: np.ndarray) -> None:
    for start in range(0, len(vectors), 500):
        await backend.upsert(WHERE, records(vectors[start : start + 500], start))


def settle(backend: MemoryBackend) -> None:
    """Wait until the graph thread has done the work queued so far (it does one job at a time, in order)."""
    done = threading.Event()
    backend._submit(done.set)
    assert done.wait(120)


def graph_of(backend: MemoryBackend) -> hnsw.Graph:
    graph = backend._partitions[WHERE].graph
    assert graph is not None and backend._partitions[WHERE].building is None
    return graph


async def recall(ann: MemoryBackend, exact: MemoryBackend, queries: np.ndarray, **kw: Any) -> float:
    found = wanted = 0
    for q in queries:
        want = await exact.search(WHERE, semantic(q, **kw))
        got = await ann.search(WHERE, semantic(q, **kw))
        scores = {h.id: h.score for h in want}
        assert all(h.score == pytest.approx(scores[h.id], abs=1e-6) for h in got if h.id in scores)  # scored exactly
        found += len({h.id for h in got} & set(scores))
        wanted += len(want)
        assert len(got) == len(want)
    return found / wanted


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


async def test_recall_at_10_against_exact(rng: np.random.Generator) -> None:
    vectors, queries = clustered(rng, 2000), clustered(rng, 50)
    ann, exact = hnsw_backend(), MemoryBackend()
    await filled(ann, vectors)
    await filled(exact, vectors)
    graph = graph_of(ann)
    assert graph.index.ntotal == 2000 and not len(graph.uncovered(2000))
    assert await recall(ann, exact, queries) >= 0.98


async def test_filters_min_score_and_selective_filters(rng: np.random.Generator) -> None:
    vectors, queries = clustered(rng, 1500), clustered(rng, 30)
    ann, exact = hnsw_backend(), MemoryBackend()
    await filled(ann, vectors)
    await filled(exact, vectors)
    half = parse_filter({"even": True})
    assert await recall(ann, exact, queries, filter=half) >= 0.98
    for q in queries[:10]:
        hits = await ann.search(WHERE, semantic(q, filter=half, min_score=0.5))
        assert all(int(h.id[1:]) % 2 == 0 and h.score >= 0.5 for h in hits)
        # 5 % of the rows: below FILTERED_EXACT_BELOW, answered exactly
        rare = parse_filter({"group": 3, "even": False})
        assert await ann.search(WHERE, semantic(q, filter=rare)) == await exact.search(WHERE, semantic(q, filter=rare))


async def test_deleted_and_rewritten_records_are_never_returned_stale(rng: np.random.Generator) -> None:
    vectors = clustered(rng, 1200)
    ann = hnsw_backend()
    await filled(ann, vectors)
    deleted = [f"r{i}" for i in range(70, 1200, 7)]
    await ann.delete(WHERE, deleted)
    moved = clustered(rng, 50)
    await ann.upsert(WHERE, records(moved, 1))  # r1..r50 get new vectors
    exact = MemoryBackend()
    await filled(exact, vectors)
    await exact.delete(WHERE, deleted)
    await exact.upsert(WHERE, records(moved, 1))
    for q in np.concatenate([vectors[::97], moved[::5]]):
        got = await ann.search(WHERE, semantic(q, top_k=20))
        assert not {h.id for h in got} & set(deleted)
        scores = {h.id: h.score for h in await exact.search(WHERE, semantic(q, top_k=1200))}
        assert all(h.score == pytest.approx(scores[h.id], abs=1e-6) for h in got)
    assert await recall(ann, exact, moved) >= 0.98


async def test_a_worn_graph_is_rebuilt(rng: np.random.Generator) -> None:
    ann = hnsw_backend()
    await filled(ann, clustered(rng, 1000))
    first = graph_of(ann)
    await ann.delete(WHERE, [f"r{i}" for i in range(300)])
    rebuilt = graph_of(ann)
    assert rebuilt is not first and rebuilt.index.ntotal == 700 and rebuilt.dead == 0


async def test_writes_during_a_batch_are_not_lost(rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    """A record rewritten or deleted between copying a batch and installing it keeps no stale label."""
    vectors = clustered(rng, 600)
    ann = hnsw_backend(min_rows=600)
    await filled(ann, vectors[:599])  # below the threshold: no graph yet
    assert ann._partitions[WHERE].graphs() == []
    add = hnsw.Graph.add
    fresh = clustered(rng, 1)

    def add_while_writing(graph: hnsw.Graph, batch: Any) -> int:
        monkeypatch.setattr(hnsw.Graph, "add", add)  # only the first batch meets writes
        ann._write(ann._upsert, WHERE, records(fresh, 5))
        ann._write(ann._delete, WHERE, ["r6"])
        return add(graph, batch)

    monkeypatch.setattr(hnsw.Graph, "add", add_while_writing)
    await ann.upsert(WHERE, records(vectors[599:], 599))
    graph = graph_of(ann)
    part = ann._partitions[WHERE]
    assert "r6" not in graph.label_ids and len(part) == 599
    hit = (await ann.search(WHERE, semantic(fresh[0], top_k=1)))[0]
    assert hit.id == "r5" and hit.score == pytest.approx(1.0)


def rows_of(vectors: np.ndarray) -> PartitionRows:
    return PartitionRows(
        ids=[f"r{i}" for i in range(len(vectors))],
        vectors=vectors.astype(np.float32),
        texts=[None] * len(vectors),
        metadata=[{"group": i % 10} for i in range(len(vectors))],
    )


async def restarted(folder: Path, vectors: np.ndarray) -> MemoryBackend:
    backend = hnsw_backend(folder)
    await backend.replace(WHERE, rows_of(vectors))
    return backend


async def test_a_restart_maps_the_saved_graph_with_identical_results(
    rng: np.random.Generator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vectors, queries = clustered(rng, 1500), clustered(rng, 20)
    before = await restarted(tmp_path, vectors)
    assert len(list(tmp_path.glob("*.hnsw.faiss"))) == 1
    want = [await before.search(WHERE, semantic(q)) for q in queries]
    monkeypatch.setattr(hnsw.Graph, "add", lambda *a: pytest.fail("a saved graph was rebuilt"))
    after = await restarted(tmp_path, vectors)
    assert graph_of(after).index.ntotal == 1500
    assert [await after.search(WHERE, semantic(q)) for q in queries] == want


async def test_a_stale_saved_graph_keeps_only_unchanged_records(rng: np.random.Generator, tmp_path: Path) -> None:
    vectors = clustered(rng, 1500)
    await restarted(tmp_path, vectors)
    changed = vectors.copy()
    changed[:40] = clustered(rng, 40)  # rewritten since the graph was saved
    after = await restarted(tmp_path, changed[:1400])  # and the last 100 deleted
    graph = graph_of(after)
    assert graph.index.ntotal == 1540  # 1500 loaded, 40 re-added
    assert sum(i is not None for i in graph.label_ids) == 1400
    exact = MemoryBackend()
    await exact.replace(WHERE, rows_of(changed[:1400]))
    assert await recall(after, exact, changed[:40]) >= 0.98


async def test_a_damaged_saved_graph_is_removed_and_rebuilt(rng: np.random.Generator, tmp_path: Path) -> None:
    vectors = clustered(rng, 800)
    await restarted(tmp_path, vectors)
    (path,) = tmp_path.glob("*.hnsw.faiss")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    after = await restarted(tmp_path, vectors)
    assert graph_of(after).index.ntotal == 800
    header = path.with_suffix(".json")
    assert path.exists() and header.exists()  # saved anew, and checks out
    assert hnsw.Graph.load(path, DIM) is not None


async def test_dropping_a_partition_removes_its_saved_graph(rng: np.random.Generator, tmp_path: Path) -> None:
    backend = await restarted(tmp_path, clustered(rng, 500))
    assert list(tmp_path.glob("*.hnsw.*"))
    await backend.drop(WHERE.collection, WHERE.tenant)
    assert not list(tmp_path.glob("*.hnsw.*"))


async def test_the_default_background_thread_builds_the_graph(rng: np.random.Generator) -> None:
    backend = MemoryBackend(ann_min_rows=100)
    vectors = clustered(rng, 300)
    await backend.upsert(WHERE, records(vectors))
    settle(backend)
    assert graph_of(backend).index.ntotal == 300
    hits = await backend.search(WHERE, semantic(vectors[3], top_k=1))
    assert hits[0].id == "r3"
    await backend.close()


def test_graphs_grow_on_one_thread() -> None:
    """A background build must leave the other cores to searches: faiss runs on one OpenMP thread."""
    assert hnsw.available()
    assert hnsw.faiss.omp_get_max_threads() == 1


async def test_closing_waits_for_the_batch_being_added_then_stops_the_graph_thread(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process must not exit while faiss is mid-batch (its threads' teardown can abort it): `close` lets the
    batch in flight finish, adds no further batch and returns once the graph thread has ended."""
    backend = MemoryBackend(ann_min_rows=100)
    adding, release = threading.Event(), threading.Event()
    add = hnsw.Graph.add

    def held_add(graph: hnsw.Graph, batch: Any) -> int:
        adding.set()
        assert release.wait(60)
        return add(graph, batch)

    monkeypatch.setattr(hnsw.Graph, "add", held_add)
    await backend.upsert(WHERE, records(clustered(rng, hnsw.ADD_BATCH + 200)))
    assert adding.wait(60)
    worker, building = backend._worker, backend._partitions[WHERE].building
    assert worker is not None and building is not None
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(backend.close)
        await anyio.wait_all_tasks_blocked()
        assert worker.is_alive()  # close is waiting for the batch in flight
        release.set()
    assert not worker.is_alive()
    assert building.index.ntotal == hnsw.ADD_BATCH  # the batch in flight, and no other after it


async def test_through_the_service_a_restart_maps_the_saved_graph(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BIGRAG_ANN_MIN_ROWS with snapshots on: the graph is built after the load, saved, and mapped after a restart."""
    monkeypatch.setattr(index, "SNAPSHOT_MIN_ROWS", 5)
    on = settings.model_copy(update={"index_snapshots": True, "ann_min_rows": 20, "ann_ef": 200})
    rt = await Runtime.open(on)
    await collections.create(rt, name="notes", tenant_field="tenant_id", dimension=4)
    points = np.random.default_rng(3).standard_normal((40, 4))  # no two scores tie
    await vectors.upsert(rt, "notes", [
        {"id": f"v{i}", "vector": p.tolist(), "text": f"alpha v{i}", "metadata": {"tenant_id": "acme", "n": i}}
        for i, p in enumerate(points)
    ])
    await rt.close()

    async def answers(rt: Runtime) -> list[list[tuple[str, float]]]:
        """Ids and scores (to 5 places: the graph path sums in another order) of a semantic and a hybrid query."""
        found = []
        for query, extra, mode in [("alpha", None, "semantic"), ("alpha v3", {"n": {"$gte": 2}}, "hybrid")]:
            filters = {"tenant_id": "acme", **(extra or {})}
            result = await search.search(rt, "notes", query, top_k=8, filters=filters, search_mode=mode)
            found.append([(r.id, round(r.score, 5)) for r in result.results])
        return found

    def built(rt: Runtime) -> hnsw.Graph:
        assert isinstance(rt.backend, MemoryBackend)
        settle(rt.backend)
        (part,) = rt.backend._partitions.values()
        assert part.graph is not None
        return part.graph

    rt = await Runtime.open(on)
    exact = await answers(rt)  # loads the partition (exactly), which queues its graph
    assert built(rt).index.ntotal == 40 and built(rt).ef == 200
    assert len(list(on.data_dir.glob("index-snapshots/*.hnsw.faiss"))) == 1
    assert await answers(rt) == exact
    await rt.close()

    monkeypatch.setattr(hnsw.Graph, "add", lambda *a: pytest.fail("the saved graph was rebuilt"))
    rt = await Runtime.open(on)
    try:
        assert await answers(rt) == exact
        assert built(rt).index.ntotal == 40
        assert await answers(rt) == exact
    finally:
        await rt.close()


async def test_a_mostly_stale_saved_graph_is_built_anew(rng: np.random.Generator, tmp_path: Path) -> None:
    vectors = clustered(rng, 600)
    await restarted(tmp_path, vectors)
    changed = vectors.copy()
    changed[:300] = clustered(rng, 300)
    after = await restarted(tmp_path, changed)
    graph = graph_of(after)
    assert graph.index.ntotal == 600 and graph.dead == 0  # not 600 loaded + 300 re-added


async def test_without_faiss_a_big_partition_stays_exact(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hnsw, "available", lambda: False)
    backend = hnsw_backend()
    vectors = clustered(rng, 50)
    await backend.upsert(WHERE, records(vectors))
    assert backend._partitions[WHERE].graphs() == [] and backend.ann_min_rows == 0
    assert (await backend.search(WHERE, semantic(vectors[7], top_k=1)))[0].id == "r7"


async def test_a_search_between_a_batch_and_its_install_skips_the_new_labels(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    ann = hnsw_backend()
    vectors = clustered(rng, 300)
    await ann.upsert(WHERE, records(vectors[:200]))
    add = hnsw.Graph.add
    seen = []

    def add_then_search(graph: hnsw.Graph, batch: Any) -> int:
        first = add(graph, batch)  # the graph now holds labels the partition has not mapped yet
        seen.append(ann._read(ann._search, WHERE, semantic(vectors[250], top_k=5)))
        return first

    monkeypatch.setattr(hnsw.Graph, "add", add_then_search)
    await ann.upsert(WHERE, records(vectors[200:], 200))
    assert seen and seen[0][0].id == "r250" and seen[0][0].score == pytest.approx(1.0)
