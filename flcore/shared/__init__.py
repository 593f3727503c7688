"""What clients import too, without torch or MongoDB: data-set facts, partitions, models, tensors, strategies."""
