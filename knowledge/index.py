"""A FAISS vector index with stable int64 ids, persisted in one checksummed file.

Ids are chunk ids from the store (never reused), so the set of ids in the index says
exactly which texts it covers; comparing it with the store's live chunk ids is the whole
consistency check. The file is written to a temporary name, fsynced and renamed over the
old one, so a crash at any point leaves either the old index or the new one, never a torn
one; the checksum catches anything else (a truncated or bit-flipped file).

Kinds:
- ``flat``: exact inner-product search (IndexIDMap2 over IndexFlatIP). Removal is O(n).
- ``hnsw``: graph search, sub-millisecond at 1M vectors. FAISS cannot remove from HNSW,
  so removed ids become tombstones filtered at search time; callers rebuild when
  ``tombstone_ratio`` grows.
- ``ivf``: inverted lists over k-means cells (IndexIVFFlat, ids stored natively, removal
  supported); needs training data, so it is built from the full set of vectors.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Literal, cast

import faiss
import numpy as np

from botkit.errors import IndexCorrupt
from botkit.sqlite import translate_errors

IndexKind = Literal["flat", "hnsw", "ivf"]
MAGIC = b"BOTKIT-FAISS-1\n"


class VectorIndex:
    def __init__(self, dim: int, kind: IndexKind = "flat", *, hnsw_m: int = 32, ef_search: int = 64,
                 nprobe: int = 16, meta: dict[str, object] | None = None):
        self.dim = dim
        self.kind: IndexKind = kind
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self.nprobe = nprobe
        self.meta: dict[str, object] = dict(meta or {})
        self.tombstones: set[int] = set()
        self._index: faiss.Index | None = None
        if kind == "flat":
            self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        elif kind == "hnsw":
            self._index = faiss.IndexIDMap2(faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT))
        elif kind != "ivf":
            raise ValueError(f"unknown index kind {kind!r} (allowed: flat, hnsw, ivf)")

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def build(cls, vectors: np.ndarray, ids: np.ndarray, kind: IndexKind = "flat", *, dim: int,
              **kw: int) -> "VectorIndex":
        index = cls(dim, kind, **kw)  # type: ignore[arg-type]
        if kind == "ivf" and len(vectors):
            index._index = index._train_ivf(vectors)
        index.add(ids, vectors)
        return index

    def _train_ivf(self, vectors: np.ndarray) -> faiss.Index:
        n = len(vectors)
        nlist = int(max(1, min(4 * np.sqrt(max(n, 1)), max(1, n // 39))))
        quantizer = faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = vectors
        if n > 100_000:  # k-means on a sample: training cost grows with n, quality barely does
            sample = vectors[np.random.default_rng(0).choice(n, 100_000, replace=False)]
        if n:
            ivf.train(np.ascontiguousarray(sample, dtype=np.float32))
        self._quantizer = quantizer  # keep the Python wrapper alive as long as the index
        self.meta["trained_on"] = n
        return ivf

    @property
    def ntotal(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal) - len(self.tombstones)

    @property
    def needs_rebuild(self) -> bool:
        """HNSW full of tombstones, or IVF cells trained on far fewer vectors than it now holds."""
        if self.kind == "hnsw":
            return self.tombstone_ratio > 0.2
        if self.kind == "ivf":
            trained_on = int(self.meta.get("trained_on", 0) or 0)  # type: ignore[call-overload]
            return self.ntotal > max(4 * trained_on, 1000)
        return False

    @property
    def tombstone_ratio(self) -> float:
        total = 0 if self._index is None else self._index.ntotal
        return len(self.tombstones) / total if total else 0.0

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        if self._index is None:  # an IVF index created empty: train on what arrives first
            self._index = self._train_ivf(vectors)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"vectors have shape {vectors.shape}, expected ({len(ids)}, {self.dim})")
        revived = self.tombstones.intersection(ids.tolist())
        if revived:  # never expected (ids are not reused), but keep the index truthful if it happens
            raise ValueError(f"ids {sorted(revived)[:5]} were removed and cannot be re-added to an HNSW index")
        self._index.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray) -> None:
        if len(ids) == 0 or self._index is None:
            return
        if self.kind == "hnsw":
            self.tombstones.update(int(i) for i in ids)
        else:
            self._index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64)))

    def ids(self) -> np.ndarray:
        """The live ids, sorted."""
        if self._index is None or self._index.ntotal == 0:
            return np.zeros(0, dtype=np.int64)
        if self.kind == "ivf":  # the kind says which faiss class _index is (the stubs type it as Index)
            ivf = cast(faiss.IndexIVF, self._index)
            invlists = ivf.invlists
            assert invlists is not None  # an IVF index owns its inverted lists
            parts = []
            for list_no in range(ivf.nlist):
                size = invlists.list_size(list_no)
                if size:
                    parts.append(faiss.rev_swig_ptr(invlists.get_ids(list_no), size).copy())
            all_ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        else:
            all_ids = faiss.vector_to_array(cast(faiss.IndexIDMap2, self._index).id_map)
        if self.tombstones:
            all_ids = all_ids[~np.isin(all_ids, np.fromiter(self.tombstones, dtype=np.int64))]
        return np.sort(all_ids)

    # -- searching --------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of shape (n_queries, <=k); missing results have id -1."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if self._index is None or self.ntotal == 0 or k <= 0:
            return np.zeros((len(queries), 0), dtype=np.float32), np.zeros((len(queries), 0), dtype=np.int64)
        fetch = min(k + len(self.tombstones), int(self._index.ntotal))
        if self.kind == "hnsw":
            hnsw = cast(faiss.IndexHNSW, faiss.downcast_index(cast(faiss.IndexIDMap2, self._index).index))
            hnsw.hnsw.efSearch = max(self.ef_search, fetch)
        elif self.kind == "ivf":
            cast(faiss.IndexIVF, self._index).nprobe = self.nprobe
        # One OpenMP thread is faster for a single query (2 threads gave 8-32 ms outliers here);
        # batches keep the library default.
        threads = faiss.omp_get_max_threads()
        if len(queries) == 1:
            faiss.omp_set_num_threads(1)
        try:
            scores, ids = self._index.search(queries, fetch)
        finally:
            faiss.omp_set_num_threads(threads)
        if self.tombstones:
            keep = ~np.isin(ids, np.fromiter(self.tombstones, dtype=np.int64))
            out_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
            out_i = np.full((len(queries), k), -1, dtype=np.int64)
            for row in range(len(queries)):
                s, i = scores[row][keep[row]][:k], ids[row][keep[row]][:k]
                out_s[row, : len(s)], out_i[row, : len(i)] = s, i
            return out_s, out_i
        return scores[:, :k], ids[:, :k]

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write atomically: temp file, fsync, rename, fsync the directory."""
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = faiss.serialize_index(self._index) if self._index is not None else np.zeros(0, dtype=np.uint8)
        header = json.dumps({
            "dim": self.dim, "kind": self.kind, "hnsw_m": self.hnsw_m, "ef_search": self.ef_search,
            "nprobe": self.nprobe, "tombstones": sorted(self.tombstones), "meta": self.meta,
        }).encode()
        body = MAGIC + struct.pack("<Q", len(header)) + header + payload.tobytes()
        digest = hashlib.sha256(body).digest()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with translate_errors(path, "the vector index"), open(tmp, "wb") as fh:
                fh.write(body)
                fh.write(digest)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:  # a full disk: the old file stays, and so must its free space
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @classmethod
    def load(cls, path: Path) -> "VectorIndex":
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise IndexCorrupt(f"{path}: cannot read the index ({exc.strerror})") from exc
        if len(data) < len(MAGIC) + 8 + 32 or not data.startswith(MAGIC):
            raise IndexCorrupt(f"{path}: not a botkit index file")
        body, digest = data[:-32], data[-32:]
        if hashlib.sha256(body).digest() != digest:
            raise IndexCorrupt(f"{path}: checksum mismatch (truncated or damaged file)")
        (hlen,) = struct.unpack("<Q", body[len(MAGIC): len(MAGIC) + 8])
        start = len(MAGIC) + 8
        header = json.loads(body[start: start + hlen])
        payload = np.frombuffer(body[start + hlen:], dtype=np.uint8)
        index = cls.__new__(cls)
        index.dim, index.kind = header["dim"], header["kind"]
        index.hnsw_m, index.ef_search, index.nprobe = header["hnsw_m"], header["ef_search"], header["nprobe"]
        index.meta = header["meta"]
        index.tombstones = set(header["tombstones"])
        try:
            index._index = faiss.deserialize_index(payload.copy()) if payload.size else None
        except RuntimeError as exc:
            raise IndexCorrupt(f"{path}: FAISS could not read the index ({exc})") from exc
        return index
