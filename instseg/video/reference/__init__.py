"""Published statistics of the real video benchmarks, shown beside OccludedShapes-VIS's own (as data, with sources)."""
