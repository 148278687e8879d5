"""Checkpoints shipped with diffsolve, one Hugging Face layout folder each."""
