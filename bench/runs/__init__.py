"""Saved runs: storing them whole and never overwritten, loading them, and the verdict rule."""
