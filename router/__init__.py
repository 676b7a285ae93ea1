"""inference-router."""
