"""The pgvector backend: one table per vector shape, keyed by (collection, tenant, id), on one Postgres server.

A partition row in `bigrag_pgvector_partitions` holds each (collection, tenant)'s dimension, so a partition's
records live in exactly one table (`bigrag_pgvector_cosine_<dimension>`) and a write with another dimension
is refused. Every statement binds its values; the SQL text holds only fixed fragments, the operator's schema
name and the integer dimension.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import math
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import URL, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from bigrag_mcp.errors import InvalidArgument, Unavailable
from bigrag_mcp.types import Hit, Partition, SearchRequest, VectorRecord
from bigrag_pgvector.settings import PgvectorSettings
from bigrag_pgvector.translate import Params, condition

MAX_DIMENSION = 16000  # pgvector's limit for the `vector` type
RRF_K = 60
HYBRID_MIN_DEPTH = 50
NO_TENANT = ""  # the tenant column of collections without tenants; real tenant names are never empty
_TOKEN = re.compile(r"\w+")
_SETUP_LOCK = 0x6269677261670001  # pg_advisory_xact_lock key serialising DDL across processes
HNSW_PREFIX = "bigrag_pgvector_hnsw_"

log = logging.getLogger(__name__)


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:16]


def hnsw_index_name(collection: str, tenant: str | None) -> str:
    """The name of a partition's HNSW index: digests of both names (only [0-9a-f_]; a collection's share a prefix)."""
    return f"{HNSW_PREFIX}{_digest(collection)}_{_digest(NO_TENANT if tenant is None else tenant)}"


def _tenant(where: Partition) -> str:
    return NO_TENANT if where.tenant is None else where.tenant


def _vector_literal(vector: Sequence[float]) -> str:
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


def _identity(url: URL) -> tuple[object, ...]:
    """Server, database and role: two URLs with the same identity reach one database as one role."""
    return (url.host or url.query.get("host"), url.port or 5432, url.database, url.username)


def _check_vector(vector: Sequence[float], label: str) -> None:
    try:
        values = [float(x) for x in vector]
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{label} must be a list of numbers") from exc
    if not values or not all(math.isfinite(x) for x in values) or not any(values):
        raise InvalidArgument(f"{label} must be finite and non-zero")


def _check_text(value: str, label: str) -> None:
    if "\x00" in value or "\\u0000" in value:
        raise InvalidArgument(f"{label} may not contain NUL characters")


def _tsquery(text_: str) -> str | None:
    """A tsquery matching any word of the text (as the memory backend's BM25 does), or None for no words."""
    words = sorted(set(_TOKEN.findall(text_.lower())))
    return " | ".join(f"'{w}'" for w in words) if words else None


class PgvectorBackend:
    """Vectors, texts and metadata in Postgres tables; exact or HNSW cosine search, full-text search, RRF hybrid."""

    name = "pgvector"
    persistent = True
    search_modes: frozenset[str] = frozenset({"semantic", "keyword", "hybrid"})

    def __init__(self, settings: PgvectorSettings | None = None) -> None:
        self.settings = settings or PgvectorSettings()
        # custom plans (parameters known) let the planner match a partition's partial HNSW index
        session = {"hnsw.ef_search": str(self.settings.hnsw_ef_search), "plan_cache_mode": "force_custom_plan"}
        self._engine = create_async_engine(
            self.settings.async_url(), pool_size=self.settings.pool_size, connect_args={"server_settings": session}
        )
        self._schema = f'"{self.settings.schema_name}"'
        self._partitions = f"{self._schema}.bigrag_pgvector_partitions"
        self._tables: set[int] = set()
        self._ready = False
        self._store: AsyncConnection | None = None  # set in a view that writes in the store's transaction
        self._builds: dict[tuple[str, str], asyncio.Task[None]] = {}  # HNSW builds this process runs, by partition
        self._building = asyncio.Semaphore(1)  # one build at a time: each is CPU-heavy and holds a connection
        self._sized: set[tuple[str, str]] = set()  # partitions whose size this process checked on a search

    def _table(self, dimension: int) -> str:
        return f"{self._schema}.bigrag_pgvector_cosine_{int(dimension)}"

    def joined(self, connection: AsyncConnection) -> PgvectorBackend | None:
        """This backend writing through the store's `connection` and its open transaction, when the store is this
        backend's database (same server, database and role); None otherwise. Tables are still created through the
        backend's own connections, before the first write to them."""
        if connection.dialect.name != "postgresql" or _identity(connection.engine.url) != _identity(self._engine.url):
            return None
        view = copy.copy(self)
        view._store = connection
        return view

    @asynccontextmanager
    async def _tx(self, dimension: int | None = None, *, read: bool = False) -> AsyncIterator[AsyncConnection]:
        """One transaction (the store's, when joined; none for a `read`: each statement commits at once, saving two
        round trips), after the schema (and the table of `dimension`) exist; lost connections -> unavailable."""
        try:
            if not self._ready or (dimension is not None and dimension not in self._tables):
                await self._setup(dimension)
            if self._store is not None:
                yield self._store
            elif read:
                async with self._autocommit() as conn:
                    yield conn
            else:
                async with self._engine.begin() as conn:
                    yield conn
        except (OperationalError, InterfaceError, OSError) as exc:
            raise Unavailable(f"the pgvector database cannot be reached: {type(exc).__name__}") from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise Unavailable("the pgvector database connection was lost") from exc
            raise

    async def _setup(self, dimension: int | None) -> None:
        """Create the extension, schema, partition table and the table of one dimension, in their own transaction."""
        async with self._engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SETUP_LOCK})
            await conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
            await conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {self._schema}"))
            await conn.execute(
                text(
                    f"CREATE TABLE IF NOT EXISTS {self._partitions} (collection text NOT NULL, tenant text NOT NULL, "
                    "dimension integer NOT NULL, hnsw boolean NOT NULL DEFAULT false, PRIMARY KEY (collection, tenant))"
                )
            )
            await conn.execute(text(f"ALTER TABLE {self._partitions} ADD COLUMN IF NOT EXISTS hnsw boolean NOT NULL DEFAULT false"))
            if dimension is not None:
                await conn.execute(
                    text(
                        f"CREATE TABLE IF NOT EXISTS {self._table(dimension)} (collection text NOT NULL, "
                        f"tenant text NOT NULL, id text NOT NULL, embedding vector({int(dimension)}) NOT NULL, "
                        "text text, metadata jsonb NOT NULL DEFAULT '{}', tsv tsvector GENERATED ALWAYS AS "
                        "(to_tsvector('simple', coalesce(text, ''))) STORED, PRIMARY KEY (collection, tenant, id))"
                    )
                )
        self._ready = True
        if dimension is not None:
            self._tables.add(dimension)

    # --- writes ----------------------------------------------------------------------------------------

    async def upsert(self, where: Partition, records: Sequence[VectorRecord]) -> None:
        if not records:
            return
        rows = [self._row(where, r) for r in records]
        dimensions = {len(r.vector) for r in records}
        if len(dimensions) > 1:
            raise InvalidArgument(f"every vector in one call must have the same dimension; got {sorted(dimensions)}")
        dimension = dimensions.pop()
        if not 1 <= dimension <= MAX_DIMENSION:
            raise InvalidArgument(f"vectors must have between 1 and {MAX_DIMENSION} dimensions; got {dimension}")
        async with self._tx(dimension) as conn:
            stored, indexed = (
                await conn.execute(
                    text(
                        f"INSERT INTO {self._partitions} AS p (collection, tenant, dimension) VALUES (:c, :t, :d) "
                        "ON CONFLICT (collection, tenant) DO UPDATE SET dimension = p.dimension "
                        "RETURNING p.dimension, p.hnsw"
                    ),
                    {"c": where.collection, "t": _tenant(where), "d": dimension},
                )
            ).one()
            if stored != dimension:
                raise InvalidArgument(f"vectors here must have dimension {stored}; got {dimension}")
            await conn.execute(
                text(
                    f"INSERT INTO {self._table(dimension)} (collection, tenant, id, embedding, text, metadata) "
                    "VALUES (:c, :t, :id, CAST(CAST(:v AS text) AS vector), :x, CAST(:m AS jsonb)) "
                    "ON CONFLICT (collection, tenant, id) DO UPDATE SET embedding = excluded.embedding, "
                    "text = excluded.text, metadata = excluded.metadata"
                ),
                rows,
            )
            if not indexed:
                await self._index_if_big(conn, dimension, where)

    def _row(self, where: Partition, record: VectorRecord) -> dict[str, Any]:
        if not isinstance(record.id, str) or not record.id:
            raise InvalidArgument("every record needs a non-empty string id")
        _check_vector(record.vector, f"vector of {record.id!r}")
        metadata = json.dumps(dict(record.metadata), allow_nan=False)
        for value, label in ((record.id, "record ids"), (record.text or "", "texts"), (metadata, "metadata")):
            _check_text(value, label)
        return {
            "c": where.collection,
            "t": _tenant(where),
            "id": record.id,
            "v": _vector_literal(record.vector),
            "x": record.text,
            "m": metadata,
        }

    async def _locked_dimension(self, conn: AsyncConnection, where: Partition) -> int | None:
        return await conn.scalar(
            text(f"SELECT dimension FROM {self._partitions} WHERE collection = :c AND tenant = :t FOR UPDATE"),
            {"c": where.collection, "t": _tenant(where)},
        )

    async def delete(self, where: Partition, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        async with self._tx() as conn:
            dimension = await self._locked_dimension(conn, where)
            if dimension is None:
                return 0
            key = {"c": where.collection, "t": _tenant(where)}
            result = await conn.execute(
                text(
                    f"DELETE FROM {self._table(dimension)} WHERE collection = :c AND tenant = :t "
                    "AND id = ANY(CAST(:ids AS text[]))"
                ),
                {**key, "ids": list(ids)},
            )
            await conn.execute(
                text(
                    f"DELETE FROM {self._partitions} WHERE collection = :c AND tenant = :t AND NOT EXISTS "
                    f"(SELECT 1 FROM {self._table(dimension)} WHERE collection = :c AND tenant = :t)"
                ),
                key,
            )
            return int(result.rowcount)

    async def drop(self, collection: str, tenant: str | None = None) -> None:
        """Delete the rows; then, unless joined to the store's transaction (the core drops again after its commit),
        drop the partitions' HNSW indexes."""
        match = "collection = :c" + ("" if tenant is None else " AND tenant = :t")
        key = {"c": collection} if tenant is None else {"c": collection, "t": tenant}
        for (c, t), build in list(self._builds.items()):
            if c == collection and (tenant is None or t == tenant):
                build.cancel()
        async with self._tx() as conn:
            found = await conn.execute(text(f"SELECT dimension FROM {self._partitions} WHERE {match} FOR UPDATE"), key)
            for dimension in sorted({row[0] for row in found}):
                await conn.execute(text(f"DELETE FROM {self._table(dimension)} WHERE {match}"), key)
            await conn.execute(text(f"DELETE FROM {self._partitions} WHERE {match}"), key)
        if self._store is None:
            await self._drop_indexes(collection, tenant)

    # --- HNSW indexes ----------------------------------------------------------------------------------

    async def _index_if_big(self, conn: AsyncConnection, dimension: int, where: Partition) -> None:
        """Start building the partition's HNSW index when it holds at least `hnsw_min_rows` rows (counted up to that)."""
        least = self.settings.hnsw_min_rows
        if not least:
            return
        rows = await conn.scalar(
            text(
                f"SELECT count(*) FROM (SELECT 1 FROM {self._table(dimension)} WHERE collection = :c AND tenant = :t "
                "LIMIT :n) s"
            ),
            {"c": where.collection, "t": _tenant(where), "n": least},
        )
        if rows is not None and rows >= least:
            key = (where.collection, _tenant(where))
            if key not in self._builds:
                self._builds[key] = asyncio.create_task(self._build(dimension, *key))

    @asynccontextmanager
    async def _autocommit(self) -> AsyncIterator[AsyncConnection]:
        async with self._engine.connect() as conn:
            yield await conn.execution_options(isolation_level="AUTOCOMMIT")

    async def _build(self, dimension: int, collection: str, tenant: str) -> None:
        """Create a partition's HNSW index concurrently (writes and searches go on meanwhile), then mark the partition
        so searches use it. One process builds it at a time, and a process one index at a time; an interrupted
        build's invalid index is replaced."""
        name = hnsw_index_name(collection, tenant)
        try:
            async with self._building, self._autocommit() as conn:
                if not await conn.scalar(text("SELECT pg_try_advisory_lock(hashtext(:i))"), {"i": name}):
                    return
                try:
                    valid = await conn.scalar(
                        text(
                            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :s AND c.relname = :i"
                        ),
                        {"s": self.settings.schema_name, "i": name},
                    )
                    if valid is False:
                        await conn.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {self._schema}.{name}")
                    if not valid:
                        # the partition's names enter the DDL quoted by the server (format %L), never by Python
                        ddl = await conn.scalar(
                            text(
                                "SELECT format('CREATE INDEX CONCURRENTLY IF NOT EXISTS %I ON %s USING hnsw "
                                "(embedding vector_cosine_ops) WHERE collection = %L AND tenant = %L', "
                                "CAST(:i AS text), CAST(:table AS text), CAST(:c AS text), CAST(:t AS text))"
                            ),
                            {"i": name, "table": self._table(dimension), "c": collection, "t": tenant},
                        )
                        await conn.exec_driver_sql(ddl)
                    await conn.execute(
                        text(f"UPDATE {self._partitions} SET hnsw = true WHERE collection = :c AND tenant = :t"),
                        {"c": collection, "t": tenant},
                    )
                finally:
                    await conn.execute(text("SELECT pg_advisory_unlock(hashtext(:i))"), {"i": name})
        except Exception:  # searches stay exact; the next write or process start tries again
            log.exception("could not build the HNSW index %s", name)
        finally:
            self._builds.pop((collection, tenant), None)

    async def _drop_indexes(self, collection: str, tenant: str | None) -> None:
        """Drop the HNSW indexes of a collection (or of one tenant of it), concurrently."""
        prefix = hnsw_index_name(collection, tenant) if tenant is not None else f"{HNSW_PREFIX}{_digest(collection)}_"
        try:
            async with self._autocommit() as conn:
                names = await conn.scalars(
                    text("SELECT indexname FROM pg_indexes WHERE schemaname = :s AND starts_with(indexname, :p)"),
                    {"s": self.settings.schema_name, "p": prefix},
                )
                for name in names.all():
                    if re.fullmatch(r"[0-9a-z_]+", name):
                        await conn.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {self._schema}.{name}")
        except (OperationalError, InterfaceError, OSError) as exc:
            raise Unavailable(f"the pgvector database cannot be reached: {type(exc).__name__}") from exc

    async def wait_for_indexes(self) -> None:
        """Wait until the HNSW builds this process started have finished (for tests, benchmarks and tools)."""
        while self._builds:
            await asyncio.gather(*self._builds.values(), return_exceptions=True)

    # --- reads -----------------------------------------------------------------------------------------

    async def search(self, where: Partition, request: SearchRequest) -> list[Hit]:
        request.check(self.search_modes)
        if request.vector is not None and request.mode != "keyword":
            _check_vector(request.vector, "query vector")
        params = Params()
        filter_sql = condition(request.filter, params)
        tsquery = _tsquery(request.text) if request.text is not None else None
        if request.mode == "keyword" and tsquery is None:
            return []
        async with self._tx(read=True) as conn:
            found = (
                await conn.execute(
                    text(f"SELECT dimension, hnsw FROM {self._partitions} WHERE collection = :c AND tenant = :t"),
                    {"c": where.collection, "t": _tenant(where)},
                )
            ).first()
            if found is None:
                return []
            dimension, indexed = found
            if request.vector is not None and request.mode != "keyword" and len(request.vector) != dimension:
                raise InvalidArgument(f"vectors here must have dimension {dimension}; got {len(request.vector)}")
            params.values.update(c=where.collection, t=_tenant(where), k=request.top_k)
            base = f"collection = :c AND tenant = :t AND {filter_sql}"
            rows: Sequence[Any] = []
            if indexed and request.mode == "semantic" and request.filter is None and request.top_k <= self.settings.hnsw_ef_search:
                rows = await self._ann(conn, self._table(dimension), base, params, request)
            if len(rows) < request.top_k:  # exact: no index, a filter or deep top_k, or the index found too few
                sql = self._query_sql(request.mode, self._table(dimension), base, params, request, tsquery)
                rows = (await conn.execute(text(sql), params.values)).all()
            if not indexed and (where.collection, _tenant(where)) not in self._sized:
                self._sized.add((where.collection, _tenant(where)))  # e.g. a partition filled by another process
                await self._index_if_big(conn, dimension, where)
        hits = [Hit(str(i), float(s)) for i, s in rows]
        if request.min_score is not None:
            hits = [h for h in hits if h.score >= request.min_score]
        return hits

    async def _ann(
        self, conn: AsyncConnection, table: str, base: str, params: Params, request: SearchRequest
    ) -> Sequence[Any]:
        """The top_k through the partition's HNSW index (`hnsw_ef_search` candidates deep). Filtered searches never
        come here: pgvector 0.6 filters what the index returns, which loses recall (measured: 0.87 at 100k rows for a
        filter passing 10%, ef_search 200) or returns fewer than top_k."""
        v = params.bind(_vector_literal(request.vector or []))
        distance = f"embedding <=> CAST(CAST({v} AS text) AS vector)"
        sql = f"SELECT id, 1 - ({distance}) AS score FROM {table} WHERE {base} ORDER BY {distance} LIMIT :k"
        return (await conn.execute(text(sql), params.values)).all()

    @staticmethod
    def _query_sql(
        mode: str, table: str, base: str, params: Params, request: SearchRequest, tsquery: str | None
    ) -> str:
        """The ranking statement of one search mode; binds the query vector and text into `params`.

        The query vector and tsquery are parsed once, in the one-row `q`, not once per scanned row.
        """
        vector = _vector_literal(request.vector) if request.vector is not None and mode != "keyword" else None
        q = (
            f"WITH q AS MATERIALIZED (SELECT CAST(CAST({params.bind(vector)} AS text) AS vector) AS v, "
            f"to_tsquery('simple', {params.bind(tsquery or '')}) AS tq)"
        )
        rank = "ts_rank_cd(tsv, q.tq, 1)"
        if mode == "semantic":
            return (
                f"{q} SELECT id, 1 - (embedding <=> q.v) AS score FROM {table}, q WHERE {base} "
                "ORDER BY embedding <=> q.v, id LIMIT :k"
            )
        if mode == "keyword":
            return f"{q} SELECT id, {rank} AS score FROM {table}, q WHERE {base} AND tsv @@ q.tq ORDER BY 2 DESC, id LIMIT :k"
        params.values["depth"] = max(request.top_k * 4, HYBRID_MIN_DEPTH)
        params.values["rrf"] = RRF_K
        return (
            f"{q}, sem AS (SELECT id, row_number() OVER (ORDER BY embedding <=> q.v, id) AS r FROM {table}, q "
            f"WHERE {base} ORDER BY embedding <=> q.v, id LIMIT :depth), "
            f"kw AS (SELECT id, row_number() OVER (ORDER BY {rank} DESC, id) AS r FROM {table}, q "
            f"WHERE {base} AND tsv @@ q.tq ORDER BY {rank} DESC, id LIMIT :depth) "
            "SELECT id, SUM(1.0 / (:rrf + r))::float8 AS score FROM (SELECT * FROM sem UNION ALL SELECT * FROM kw) u "
            "GROUP BY id ORDER BY score DESC, id LIMIT :k"
        )

    async def close(self) -> None:
        """Stop HNSW builds in progress (the next write or start builds them again) and close the connections."""
        for build in self._builds.values():
            build.cancel()
        await asyncio.gather(*self._builds.values(), return_exceptions=True)
        await self._engine.dispose()


