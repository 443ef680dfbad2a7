"""Isolation forests fitted by scikit-learn, scored as flat arrays.

scikit-learn's ``IsolationForest.score_samples`` walks its trees one by one through joblib:
~1.7 ms a call whatever the number of samples, which a stream scoring a few samples per category
and batch pays again and again. ``CompiledForest`` copies the fitted trees into flat numpy
arrays once per fit and walks all trees for all samples together, level by level: every sample
reaches the leaf scikit-learn's trees send it to, and scores are scikit-learn's to float32's
precision (tests hold both). ``fit_forest`` is a plain function of arrays, so
it can run in another process. scikit-learn is imported by the fit alone: a worker whose fits run
in a process pool never loads it (~100 MB of its memory).

``IsolationForest.fit`` spends ~0.6 ms a tree on per-estimator overhead (cloning the tree, three
``RandomState``s, parameter and input checks), where growing it takes ~0.07 ms. ``grow_trees`` grows
the very same trees (the same subsamples, seeds and splits: tests compare every node) with
scikit-learn's own tree builder, drawing the seeds as the ensemble does, without that overhead.
A refit still grows only a generation of new trees on the current reference and drops as many
of the oldest: the forest keeps its size and follows its window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sklearn.ensemble import IsolationForest
    from sklearn.tree._tree import Tree

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
        return cls.of_trees([tree.tree_ for tree in model.estimators_], model.estimators_features_, model.max_samples_)

    @classmethod
    def of_trees(cls, trees: list[Tree], columns_used: list[np.ndarray], subsample_size: int) -> CompiledForest:
        """Trees grown on subsamples of ``subsample_size`` rows, tree i on the columns ``columns_used[i]``."""
        features, splits, rights, roots = [], [], [], []
        offset = 0
        subsample = float(average_path_length(np.array([subsample_size]))[0])
        for t, columns in zip(trees, columns_used, strict=True):
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
        X = np.ascontiguousarray(X, dtype=np.float32)  # trees compare in float32, as scikit-learn fits them
        values = X.ravel()  # read by flat index: a quarter less time than indexing rows and columns
        row_starts = (np.arange(X.shape[0], dtype=np.intp) * X.shape[1])[:, None]
        node = np.broadcast_to(self.roots.astype(np.intp), (X.shape[0], self.roots.size))
        while True:  # one level of every tree per step; trees are at most log2(max_samples) deep (``take``: ~10 % less than [])
            right = self.right.take(node)  # 0 at a leaf, where the walk stays
            if not right.any():
                return node
            goes_left = values.take(row_starts + self.feature.take(node)) <= self.split.take(node)  # at leaves (column -1) unused
            node = node + np.where(goes_left, right != 0, right)  # an inner node's left child is the next node

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
    from sklearn.ensemble import _bagging  # noqa: F401 - what grow_trees imports (the tree modules with it)


_MAX_INT = np.iinfo(np.int32).max


def grow_trees(matrix: np.ndarray, n_estimators: int, seed: int) -> CompiledForest:
    """The forest ``IsolationForest(n_estimators=n_estimators, random_state=seed).fit(matrix)`` grows.

    The steps of ``IsolationForest.fit`` and of the bagging and tree fits under it, in their order
    and with their random draws, minus what they check and copy for each tree. One ``RandomState``
    is reseeded where scikit-learn makes a new one from the same seed: the same numbers. Its private
    tree modules move between releases, so scikit-learn's version is pinned and a test compares
    these trees with ``IsolationForest``'s node for node.
    """
    from sklearn.ensemble._bagging import _generate_bagging_indices  # here, not at the top: see the module's docstring
    from sklearn.tree._criterion import MSE
    from sklearn.tree._splitter import RandomSplitter
    from sklearn.tree._tree import DepthFirstTreeBuilder, Tree

    X = np.ascontiguousarray(matrix, dtype=np.float32)
    rows, columns = X.shape
    random = np.random.RandomState(seed)
    y = random.uniform(size=rows).reshape(-1, 1)  # the regression target its trees split at random on
    subsample = min(256, rows)  # max_samples="auto"
    depth = math.ceil(math.log2(max(subsample, 2)))
    random.seed(seed)  # the bagging's own RandomState(seed)
    one_output = np.ones(1, dtype=np.intp)
    trees, columns_used = [], []
    for tree_seed in random.randint(_MAX_INT, size=n_estimators):
        random.seed(tree_seed)
        splitter_seed = random.randint(_MAX_INT)  # the random_state the bagging gives the tree
        random.seed(tree_seed)
        used, sample = _generate_bagging_indices(random, False, False, columns, rows, columns, subsample, None)
        random.seed(splitter_seed)
        splitter = RandomSplitter(MSE(1, rows), 1, 1, 0.0, random, None)  # max_features=1, min_samples_leaf=1
        tree = Tree(columns, one_output, 1)
        in_subsample = np.bincount(sample, minlength=rows).astype(np.float64)  # rows outside it weigh 0, as in the bagging
        DepthFirstTreeBuilder(splitter, 2, 1, 0.0, depth, 0.0).build(tree, X, y, in_subsample, None)
        trees.append(tree)
        columns_used.append(used)
    return CompiledForest.of_trees(trees, columns_used, subsample)


def fit_forest(
    matrix: np.ndarray, quantile: float, n_estimators: int = 50, seed: int = 0, kept: CompiledForest | None = None
) -> FittedForest:
    """Grow ``n_estimators`` trees on a reference window, after the ``kept`` trees of an earlier fit
    if given, and say how isolated the window's ``quantile`` most isolated rows are by them all."""
    forest = grow_trees(matrix, n_estimators, seed)
    if kept is not None and kept.trees:
        forest = kept.joined(forest)
    return FittedForest(forest, float(np.quantile(forest.isolation(matrix), quantile)))
