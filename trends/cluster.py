"""Online clusters of the shared space, bounded and deterministic.

A leader-follower (online spherical k-means) clusterer: a vector joins its nearest
centroid when the cosine is at least ``threshold`` (the centroid moves toward it, its
weight grows by one), else it starts a new cluster. Weights decay with event time (half
life ``half_life_windows``), and at ``max_clusters`` the lightest cluster is replaced, so
memory is bounded and the space follows what is being posted. The same vectors in the
same order give the same clusters (ids are sequential from a seed-derived start, ties go
to the first row), so a seed reproduces a run exactly.

Several workers share one codebook through the tracker's store (Redis): a worker holds
the store's lock while it assigns a batch and writes back the clusters it changed, so
every worker and the API see one set of clusters with stable ids. See the README
("Trends") for why this over River's clusterers (measured there).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Cluster:
    id: int
    centroid: np.ndarray  # unit vector, float32
    weight: float  # decayed count of members
    window: int  # window of the last update (for decay)


@dataclass
class ClusterParams:
    threshold: float = 0.6
    max_clusters: int = 500
    half_life_windows: float = 720.0
    seed: int = 0


@dataclass
class Codebook:
    """The clusters and the next id; what the store persists."""

    clusters: dict[int, Cluster] = field(default_factory=dict)
    next_id: int = 0
    changed: set[int] = field(default_factory=set)  # written back by the store, then cleared
    removed: set[int] = field(default_factory=set)
    version: int = 0  # the store's version this copy was read at


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32).reshape(-1)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


class OnlineClusterer:
    def __init__(self, params: ClusterParams, codebook: Codebook | None = None) -> None:
        self.params = params
        self.codebook = codebook if codebook is not None else Codebook()
        self._ids: list[int] = []
        self._matrix = np.zeros((0, 0), dtype=np.float32)
        self._weight = np.zeros(0, dtype=np.float64)
        self._window = np.zeros(0, dtype=np.int64)
        self._dirty = True
        self._loaded: tuple[int, int] | None = None

    def load(self, codebook: Codebook) -> None:
        """Work on ``codebook`` (the store's copy); rebuild the arrays only if it moved."""
        key = (id(codebook), codebook.version)
        if codebook is not self.codebook or key != self._loaded:
            self._dirty = True
        self.codebook = codebook
        self._loaded = key

    def _rebuild(self) -> None:
        clusters = self.codebook.clusters
        self._ids = sorted(clusters)
        if self._ids:
            self._matrix = np.stack([clusters[i].centroid for i in self._ids])
        else:
            self._matrix = np.zeros((0, 0), dtype=np.float32)
        self._weight = np.array([clusters[i].weight for i in self._ids], dtype=np.float64)
        self._window = np.array([clusters[i].window for i in self._ids], dtype=np.int64)
        self._dirty = False

    def _decay(self, dt: np.ndarray | int) -> np.ndarray | float:
        return 0.5 ** (np.maximum(dt, 0) / self.params.half_life_windows)

    def _put(self, row: int, cluster: Cluster) -> None:
        self._matrix[row] = cluster.centroid
        self._weight[row] = cluster.weight
        self._window[row] = cluster.window

    def assign(self, vector: np.ndarray, window: int) -> int:
        """The cluster id of ``vector`` (updating the codebook)."""
        x = _unit(vector)
        if self._dirty:
            self._rebuild()
        book = self.codebook
        if self._ids:
            if self._matrix.shape[1] != x.shape[0]:
                raise ValueError(
                    f"vector of dimension {x.shape[0]}, clusters of {self._matrix.shape[1]}"
                )
            sims = self._matrix @ x
            row = int(np.argmax(sims))  # the first maximum: ties go to the first row
            if float(sims[row]) >= self.params.threshold:
                cid = self._ids[row]
                c = book.clusters[cid]
                w = c.weight * float(self._decay(window - c.window))
                c.centroid = _unit(c.centroid * w + x)
                c.weight = w + 1.0
                c.window = max(c.window, window)
                self._put(row, c)
                book.changed.add(cid)
                return cid
        if not book.clusters and book.next_id == 0:
            book.next_id = (self.params.seed % 1000) * 1_000_000
        cid = book.next_id
        book.next_id += 1
        new = Cluster(cid, x, 1.0, window)
        book.clusters[cid] = new
        book.changed.add(cid)
        if len(self._ids) >= self.params.max_clusters:
            # replace the lightest cluster (decayed weight), in place
            decayed = self._weight * self._decay(window - self._window)
            row = int(np.argmin(decayed))
            victim = self._ids[row]
            del book.clusters[victim]
            book.changed.discard(victim)
            book.removed.add(victim)
            self._ids[row] = cid
            self._put(row, new)
        elif self._ids:
            self._ids.append(cid)
            self._matrix = np.vstack([self._matrix, x[None, :]])
            self._weight = np.append(self._weight, 1.0)
            self._window = np.append(self._window, window)
        else:
            self._rebuild()
        return cid


def encode_cluster(c: Cluster) -> bytes:
    head = np.array([c.weight, float(c.window)], dtype=np.float64).tobytes()
    return head + c.centroid.astype(np.float32).tobytes()


def decode_cluster(cid: int, raw: bytes) -> Cluster:
    head = np.frombuffer(raw[:16], dtype=np.float64)
    vec = np.frombuffer(raw[16:], dtype=np.float32).copy()
    return Cluster(cid, vec, float(head[0]), int(head[1]))
