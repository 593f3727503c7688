"""A round's stored updates as the stream the strategies fold (:class:`flcore.shared.aggregation.Updates`).

Each update is read from GridFS when the strategy asks for it and released when
it asks for the next, so the aggregating process holds one update at a time
however many the round has; the robust rules read the same updates block by
block of tensors, by byte range, without reading any update whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from flcore.shared import weights as wcodec
from flcore.shared.aggregation import Update
from flcore.shared.weights import Weights
from flcore.storage.store import Store

Transform = Callable[[dict, Weights], Weights]  # (update document, its weights) -> what the strategy gets


class StoredUpdates:
    """The updates named by ``docs``, read lazily; ``transform`` turns each into what the rule folds."""

    def __init__(self, store: Store, docs: list[dict], transform: Transform | None = None):
        self.store = store
        self.docs = docs
        self.transform = transform

    def __len__(self) -> int:
        return len(self.docs)

    def __iter__(self) -> Iterator[Update]:
        for doc in self.docs:
            weights = wcodec.decode(self.store.update_weights(doc))
            if self.transform is not None:
                weights = self.transform(doc, weights)
            yield weights, int(doc["num_examples"])
            weights.clear()  # the caller is done with it: its bytes can go before the next is read

    def blocks(self, budget: int) -> Iterator[list[Weights]]:
        """Groups of tensors from every update, each group at most ``budget`` bytes over all updates
        (at least one tensor per group), read by byte range."""
        if self.transform is not None:
            raise ValueError("blockwise reading takes updates as stored")
        sources = [self.store.blobs.source(d["blob"], d["size"]) for d in self.docs]
        layouts = [wcodec.layout(src) for src in sources]
        group: list[str] = []
        size = 0
        for name, (begin, end, _, _) in layouts[0].items():
            cost = (end - begin) * len(sources)
            if group and size + cost > budget:
                yield self._read(sources, layouts, group)
                group, size = [], 0
            group.append(name)
            size += cost
        if group:
            yield self._read(sources, layouts, group)

    @staticmethod
    def _read(sources, layouts, names: list[str]) -> list[Weights]:
        out = []
        for src, lay in zip(sources, layouts):
            # float16 updates (update_encoding) are widened here; int8 ones never come this way
            out.append({name: wcodec.read_tensor(src, *lay[name]).astype("<f4", copy=False) for name in names})
        return out
