"""What one target looks like to the network: a running mean of its descriptors and a few exemplars.

The descriptors are the segmenter's own (pipeline/embeddings.py: its P3 map pooled under each
instance's mask). A running mean alone (BoT-SORT's "smooth feature", momentum 0.9) drifts towards
whatever the target last overlapped with: after a player has been half hidden by a look-alike for a
second, the mean looks like both. So the gallery also keeps a few exemplars, taken only when the
target is seen whole, confident and apart from other instances, and always the first one (the view
the user prompted on). An instance's similarity to the target is its best match in the gallery:
a target that turns around can still be recognised by a view it showed earlier.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MOMENTUM = 0.9  # share of the old mean kept at each update (BoT-SORT's smoothing)
EXEMPLARS = 4  # the most exemplars kept: the first, and the latest EXEMPLARS - 1 distinct views
DISTINCT = 0.97  # a new exemplar this similar to one already kept adds nothing: it replaces nothing either


@dataclass
class Gallery:
    """One target's appearance: a running mean and up to EXEMPLARS exemplars, all unit vectors.

    Attributes:
        mean: The running mean (None until the first update).
        exemplars: Clean views, the first one (the prompt's) always kept.
        updates: How many descriptors the mean has seen.
        usual: The running mean of the target's own views' similarity to the gallery before
            each was added (None until the second view): what "looks like itself" means for this
            target in this descriptor. Look-alikes sit 0.03 under it, other objects 0.1-0.3.
    """

    mean: np.ndarray | None = None
    exemplars: list[np.ndarray] = field(default_factory=list)
    updates: int = 0
    usual: float | None = None

    def add(self, embedding: np.ndarray, exemplar: bool) -> None:
        """Blend one view into the mean, and keep it as an exemplar when it is a clean, new view.

        Args:
            embedding: A unit descriptor of the target this frame (zeros: nothing seen, ignored).
            exemplar: The view is clean (whole, confident, apart from other instances).
        """
        norm = float(np.linalg.norm(embedding))
        if norm == 0:
            return
        embedding = embedding / norm
        if self.mean is not None:
            own = float(self.similarity(embedding[None])[0])
            self.usual = own if self.usual is None else MOMENTUM * self.usual + (1 - MOMENTUM) * own
        if self.mean is None:
            self.mean = embedding.copy()
        else:
            blended = MOMENTUM * self.mean + (1 - MOMENTUM) * embedding
            self.mean = blended / max(float(np.linalg.norm(blended)), 1e-12)
        self.updates += 1
        if exemplar or not self.exemplars:
            self._keep(embedding)

    def _keep(self, embedding: np.ndarray) -> None:
        if self.exemplars and max(float(e @ embedding) for e in self.exemplars) >= DISTINCT:
            return
        self.exemplars.append(embedding)
        if len(self.exemplars) > EXEMPLARS:
            del self.exemplars[1]  # the oldest but the first

    def similarity(self, embeddings: np.ndarray) -> np.ndarray:
        """Each descriptor's cosine similarity to the target: its best match among the mean and the exemplars.

        Args:
            embeddings: K×D unit descriptors.

        Returns:
            K similarities in [-1, 1]; all -1 while the gallery is empty.
        """
        if self.mean is None or len(embeddings) == 0:
            return np.full(len(embeddings), -1.0)
        views = np.stack([self.mean, *self.exemplars])
        return (np.asarray(embeddings, np.float32) @ views.T.astype(np.float32)).max(axis=1)
