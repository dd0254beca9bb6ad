"""Self-supervised encoder pretraining (BEST-RQ, BiRQ) whose layers give acoustic units."""
