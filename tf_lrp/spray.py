"""Spectral Relevance Analysis (SpRAy; Lapuschkin et al., Nature Communications 2019): find
the strategies a model uses for one class across a data set, Clever-Hans ones included.

Per sample, a relevance map is summed over channels, pooled to a small grid and divided by its
total ``|R|`` (:func:`pool`); or a concept-relevance vector of Concept Relevance Propagation
is scaled alike (:func:`concept_features`: prototypes of concept use). :func:`spray` then
builds a symmetric k-nearest-neighbour graph of these features (scikit-learn, sparse), takes
the spectrum of its normalised Laplacian (SciPy's sparse eigensolver): the number of
eigenvalues near zero, read off the largest gap among the first ones (the eigengap), suggests
the number of strategies; spectral clustering (scikit-learn) groups the samples; t-SNE (or
the spectral embedding for more than :data:`TSNE_LIMIT` samples) places them on a 2-D map.

:func:`read_run` streams the maps of one class from an explain run's shards (``tf-lrp explain
--format shards``): only the pooled features are kept, so memory grows with the grid, not the
maps (100,000 samples of a 64x64 map pooled to 8x8: 25 MB). :func:`tf_lrp.visualize.spray.report`
writes the page people look at; ``tf-lrp spray`` does both. Above :data:`TSNE_LIMIT` samples
the eigenvectors come from LOBPCG (ARPACK's shift-invert factorises the Laplacian): 100,000
samples of 64 features cluster in 28 s at 365 MB peak (``scripts/spray_scale.py``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tf_lrp.errors import InputError

__all__ = ["Spray", "TSNE_LIMIT", "concept_features", "pool", "read_run", "spray"]

#: above this many samples the 2-D map is the spectral embedding (t-SNE is quadratic in time)
TSNE_LIMIT = 5000


def pool(relevance: np.ndarray, grid: int = 8) -> np.ndarray:
    """``(n, grid * grid)`` features of relevance maps ``(n, h, w[, c])``: channels summed,
    averaged over ``grid x grid`` blocks (``h`` and ``w`` cropped to multiples of ``grid``),
    each sample divided by its total ``|R|`` (sign kept): where the relevance lies, as shares.

    Shares, not maps scaled to their maximum: on the shipped Clever-Hans model the tagged
    samples' maps differ from the others' by where the mass lies, and the 2-cluster adjusted
    Rand index against the truth is 0.68 with shares, 0.28 with max-scaled maps (one draw,
    EpsilonPlus, 8x8, 10 neighbours)."""
    r = np.asarray(relevance, np.float64)
    if r.ndim == 4:
        r = r.sum(-1)
    if r.ndim != 3:
        raise InputError(f"relevance maps must be (n, h, w) or (n, h, w, c); got {r.shape}")
    n, h, w = r.shape
    if h < grid or w < grid:
        raise InputError(f"maps of {h}x{w} cannot be pooled to a {grid}x{grid} grid")
    bh, bw = h // grid, w // grid
    r = r[:, :bh * grid, :bw * grid].reshape(n, grid, bh, grid, bw).mean(axis=(2, 4))
    return _shares(r.reshape(n, -1))


def _shares(f: np.ndarray) -> np.ndarray:
    """Each row divided by its total ``|value|`` (float32; an all-zero row stays zero)."""
    total = np.abs(f).sum(axis=1, keepdims=True)
    return np.divide(f, total, out=np.zeros_like(f), where=total > 0).astype(np.float32)


def concept_features(analyzer, x, layer: str, target=None, batch_size: int = 64) -> np.ndarray:
    """``(n, channels)`` concept-relevance vectors of ``layer`` (CRP), each divided by its
    total ``|R|`` (shares, as :func:`pool`): SpRAy over these finds prototypes of concept
    use."""
    x = np.asarray(x)
    parts = []
    for lo in range(0, len(x), batch_size):
        t = None if target is None else np.broadcast_to(np.asarray(target), (len(x),))[
            lo:lo + batch_size]
        parts.append(analyzer.concept_relevance(x[lo:lo + batch_size], t, layer=layer))
    return _shares(np.concatenate(parts).astype(np.float64))


@dataclass
class Spray:
    """The outcome of :func:`spray`.

    Attributes
    ----------
    labels
        ``(n,)`` cluster of each sample.
    eigenvalues
        The smallest eigenvalues of the graph's normalised Laplacian, ascending.
    suggested
        The number of clusters the largest eigengap suggests.
    embedding
        ``(n, 2)`` coordinates for the map.
    embedding_method
        ``"tsne"`` or ``"spectral"``.
    features
        The features clustered.
    """

    labels: np.ndarray
    eigenvalues: np.ndarray
    suggested: int
    embedding: np.ndarray
    embedding_method: str
    features: np.ndarray

    @property
    def n_clusters(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0


def _graph(features: np.ndarray, n_neighbors: int):
    from sklearn.neighbors import kneighbors_graph

    a = kneighbors_graph(features, n_neighbors=n_neighbors, mode="connectivity",
                         include_self=False)
    return ((a + a.T) > 0).astype(np.float64)


def _spectrum(affinity, count: int) -> np.ndarray:
    """The ``count`` smallest eigenvalues of the normalised Laplacian ``I - D^-1/2 A D^-1/2``,
    as ``1 -`` the largest of the normalised adjacency (better conditioned for ARPACK)."""
    from scipy.sparse import diags
    from scipy.sparse.linalg import eigsh

    degree = np.asarray(affinity.sum(axis=1)).ravel()
    scale = diags(1.0 / np.sqrt(np.maximum(degree, 1e-12)))
    normalised = scale @ affinity @ scale
    n = affinity.shape[0]
    count = min(count, n - 1)
    if n <= 500:
        values = np.linalg.eigvalsh(normalised.toarray())[::-1][:count]
    else:
        values = eigsh(normalised, k=count, which="LA", return_eigenvectors=False,
                       v0=np.ones(n) / np.sqrt(n))[::-1]
    return np.sort(np.clip(1.0 - values, 0.0, 2.0))


def spray(features: np.ndarray, n_neighbors: int = 10, n_clusters: int | None = None,
          max_clusters: int = 8, embedding: str = "auto", seed: int = 0) -> Spray:
    """Cluster the samples' features spectrally (module docstring).

    Parameters
    ----------
    features
        ``(n, d)``: :func:`pool` or :func:`concept_features` (any per-sample vectors).
    n_neighbors
        Neighbours per sample in the affinity graph.
    n_clusters
        Clusters to form; ``None``: the eigengap's suggestion.
    max_clusters
        The eigengap is looked for among the first ``max_clusters + 1`` eigenvalues.
    embedding
        ``"tsne"``, ``"spectral"`` or ``"auto"`` (t-SNE up to :data:`TSNE_LIMIT` samples).
    seed
        Random state of the clustering and the embedding.
    """
    from sklearn.cluster import SpectralClustering
    from sklearn.manifold import TSNE, spectral_embedding

    f = np.asarray(features, np.float64)
    n = len(f)
    if f.ndim != 2 or n < 3:
        raise InputError(f"spray needs (n >= 3, d) features; got shape {f.shape}")
    k = max(1, min(n_neighbors, n - 1))
    affinity = _graph(f, k)
    values = _spectrum(affinity, max_clusters + 1)
    gaps = np.diff(values)
    suggested = int(np.argmax(gaps[:max_clusters]) + 1) if len(gaps) else 1
    clusters = n_clusters or suggested
    # ARPACK's shift-invert factorises the Laplacian: fine for thousands of samples, hours
    # for 100,000; LOBPCG needs only products with it
    solver = "arpack" if n <= TSNE_LIMIT else "lobpcg"
    if clusters > 1:
        labels = SpectralClustering(n_clusters=clusters, affinity="precomputed",
                                    random_state=seed, assign_labels="cluster_qr",
                                    eigen_solver=solver).fit_predict(affinity)
    else:
        labels = np.zeros(n, int)
    method = ("tsne" if n <= TSNE_LIMIT else "spectral") if embedding == "auto" else embedding
    if method == "tsne":
        coords = TSNE(2, init="pca", random_state=seed,
                      perplexity=float(min(30, max(2, (n - 1) // 3)))).fit_transform(f)
    elif method == "spectral":
        coords = spectral_embedding(affinity, n_components=2, random_state=seed,
                                    drop_first=True, eigen_solver=solver)
    else:
        raise InputError(f"embedding must be 'tsne', 'spectral' or 'auto', got {embedding!r}")
    # clusters numbered by size, largest first
    order = np.argsort(-np.bincount(labels, minlength=clusters), kind="stable")
    labels = np.argsort(order)[labels]
    return Spray(labels.astype(int), values, suggested, coords.astype(np.float32), method,
                 f.astype(np.float32))


def read_run(run_dir, class_index: int, grid: int = 8, column: str = "explained_class",
             limit: int | None = None) -> tuple[list[str], np.ndarray, list[tuple[Path, int]]]:
    """The pooled maps of one class from an explain run's shards, streamed shard by shard.

    Returns ``(inputs, features, where)``: the input names, :func:`pool` of their maps, and
    ``(shard file, row)`` of each (to draw the maps for a report).
    """
    run = Path(run_dir)
    index = run / "index.csv"
    if not index.is_file():
        raise InputError(f"{run} has no index.csv: run tf-lrp explain ... --format shards "
                         f"--out {run} first")
    by_shard: dict[str, list[tuple[str, int]]] = {}
    with index.open(newline="") as stream:
        for row in csv.DictReader(stream):
            if int(row[column]) == class_index:
                by_shard.setdefault(row["shard"], []).append((row["input"], int(row["row"])))
    names, feats, where = [], [], []
    for shard, rows in by_shard.items():
        data = np.load(run / shard, mmap_mode="r")
        for lo in range(0, len(rows), 1024):
            part = rows[lo:lo + 1024]
            feats.append(pool(np.asarray(data[[r for _, r in part]]), grid))
            names += [name for name, _ in part]
            where += [(run / shard, r) for _, r in part]
        if limit is not None and len(names) >= limit:
            break
    if not names:
        raise InputError(f"no samples of class {class_index} ({column}) in {index}")
    f = np.concatenate(feats)
    return names[:limit], f[:limit], where[:limit]
