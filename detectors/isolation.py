"""Isolation forests fitted by scikit-learn, scored as flat arrays.

scikit-learn's ``IsolationForest.score_samples`` walks its trees one by one through joblib:
~1.7 ms a call whatever the number of samples, which a stream scoring a few samples per category
and batch pays again and again. ``CompiledForest`` copies the fitted trees into flat numpy
arrays once per fit and walks all trees for all samples together, level by level: every sample
reaches the leaf scikit-learn's trees send it to, and scores are scikit-learn's to float32's
precision (tests hold both). ``fit_forest`` is a plain function of arrays, so
it can run in another process. scikit-learn is imported by the fit alone: a worker whose fits run
in a process pool never loads it (~100 MB of its memory).

A fit costs ~3 ms plus ~0.6 ms a tree, nearly all of it scikit-learn's per-estimator overhead,
whatever the data. A refit therefore grows only a generation of new trees on the current
reference and drops as many of the oldest: the forest keeps its size and follows its window at a
fraction of the cost of growing it anew.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sklearn.ensemble import IsolationForest

_EULER_GAMMA = 0.5772156649015329


def average_path_length(n: np.ndarray) -> np.ndarray:
    """c(n): the mean depth of an unsuccessful search in a binary search tree of n points
    (Liu, Ting and Zhou 2008); what a leaf holding n training points adds to the depth."""
    n = np.asarray(n, dtype=float)
    safe = np.maximum(n, 3.0)
    deep = 2.0 * (np.log(safe - 1.0) + _EULER_GAMMA) - 2.0 * (safe - 1.0) / safe
    return np.where(n <= 1, 0.0, np.where(n == 2, 1.0, deep))


def _float32_at_most(values: np.ndarray) -> np.ndarray:
    """The largest float32 not above each value: for a float32 x, x <= v exactly when x <= it."""
    rounded = values.astype(np.float32)
    return np.where(rounded > values, np.nextafter(rounded, np.float32(-np.inf)), rounded)


@dataclass(frozen=True, slots=True)
class CompiledForest:
    """Trees as flat arrays, 8 bytes a node (a worker holds a forest per category).

    scikit-learn grows trees depth first, so an inner node's left child is the next node; its
    right child is stored as an offset from it, which holds in 16 bits (a tree of the default
    256 samples has at most 511 nodes) and needs no rebasing when trees are dropped or joined.
    """

    feature: np.ndarray  # int16 per node: the column of X it splits on (-1 at leaves)
    # float32 per node. Inner node: the largest float32 not above scikit-learn's threshold, so
    # float32 X goes left exactly when scikit-learn sends it left. Leaf: its depth plus c(its
    # training points), as scikit-learn counts it, over c(the tree's subsample size), so that
    # trees grown on references of different sizes can share one forest
    split: np.ndarray
    right: np.ndarray  # uint16 per inner node: how far after it its right child is (0 at leaves)
    roots: np.ndarray  # index of each tree's root, in order: tree i's nodes run from roots[i] to roots[i + 1]

    @property
    def trees(self) -> int:
        return int(self.roots.size)

    @classmethod
    def of(cls, model: IsolationForest) -> CompiledForest:
        features, splits, rights, roots = [], [], [], []
        offset = 0
        subsample = float(average_path_length(np.array([model.max_samples_]))[0])
        for tree, columns in zip(model.estimators_, model.estimators_features_, strict=True):
            t = tree.tree_
            leaf = t.children_left < 0
            nodes = np.arange(t.node_count)
            if not np.array_equal(t.children_left[~leaf], nodes[~leaf] + 1):
                raise ValueError("expected a tree grown depth first (each left child right after its parent)")
            if t.node_count > np.iinfo(np.uint16).max:
                raise ValueError(f"a tree of {t.node_count} nodes: right children would not fit 16-bit offsets (max_samples too large)")
            roots.append(offset)
            features.append(np.where(leaf, -1, np.asarray(columns)[np.maximum(t.feature, 0)]))
            depths = (t.compute_node_depths() - 1.0 + average_path_length(t.n_node_samples)) / subsample
            splits.append(np.where(leaf, depths.astype(np.float32), _float32_at_most(t.threshold)))
            rights.append(np.where(leaf, 0, t.children_right - nodes))
            offset += t.node_count
        return cls(
            feature=np.concatenate(features).astype(np.int16),
            split=np.concatenate(splits).astype(np.float32),
            right=np.concatenate(rights).astype(np.uint16),
            roots=np.asarray(roots, dtype=np.int32),
        )

    def newest(self, trees: int) -> CompiledForest:
        """The forest without its oldest trees, ``trees`` of them left."""
        if trees >= self.trees:
            return self
        first = int(self.roots[self.trees - trees]) if trees else self.feature.size
        roots = (self.roots[self.trees - trees :] - first).astype(np.int32)
        return CompiledForest(self.feature[first:].copy(), self.split[first:].copy(), self.right[first:].copy(), roots)

    def joined(self, newer: CompiledForest) -> CompiledForest:
        """One forest of this one's trees followed by ``newer``'s."""
        return CompiledForest(
            np.concatenate([self.feature, newer.feature]),
            np.concatenate([self.split, newer.split]),
            np.concatenate([self.right, newer.right]),
            np.concatenate([self.roots, newer.roots + self.feature.size]).astype(np.int32),
        )

    def leaves(self, X: np.ndarray) -> np.ndarray:
        """The leaf each row reaches in each tree (rows × trees, node indices)."""
        X = np.asarray(X, dtype=np.float32)  # trees compare in float32, as scikit-learn fits them
        rows = np.arange(X.shape[0])[:, None]
        node = np.broadcast_to(self.roots.astype(np.intp), (X.shape[0], self.roots.size))
        while True:  # one level of every tree per step; trees are at most log2(max_samples) deep
            column = self.feature[node]
            inner = column >= 0
            if not inner.any():
                return node
            goes_left = X[rows, np.maximum(column, 0)] <= self.split[node]  # meaningless at leaves, where inner is False
            node = np.where(inner, np.where(goes_left, node + 1, node + self.right[node]), node)

    def isolation(self, X: np.ndarray) -> np.ndarray:
        """Anomaly score per row, higher is more isolated: ``-IsolationForest.score_samples`` (to float32's precision)."""
        depths = self.split[self.leaves(X)].sum(axis=1, dtype=np.float64)  # every node a leaf: the normalised depths
        return 2.0 ** (-depths / self.trees)


@dataclass(frozen=True, slots=True)
class FittedForest:
    forest: CompiledForest
    reference_isolation: float  # the reference's isolation at the chosen quantile


def load_fitting() -> None:
    """Import what a fit needs: a fit process readied with it does not pay the import (and its own
    start) inside the first fit, which a batch waits for."""
    from sklearn.ensemble import IsolationForest  # noqa: F401


def fit_forest(
    matrix: np.ndarray, quantile: float, n_estimators: int = 50, seed: int = 0, kept: CompiledForest | None = None
) -> FittedForest:
    """Grow ``n_estimators`` trees on a reference window, after the ``kept`` trees of an earlier fit
    if given, and say how isolated the window's ``quantile`` most isolated rows are by them all."""
    from sklearn.ensemble import IsolationForest  # here, not at the top: see the module's docstring

    forest = CompiledForest.of(IsolationForest(n_estimators=n_estimators, random_state=seed).fit(matrix))
    if kept is not None and kept.trees:
        forest = kept.joined(forest)
    return FittedForest(forest, float(np.quantile(forest.isolation(matrix), quantile)))
