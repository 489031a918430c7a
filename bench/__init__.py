"""Benchmarks: voxadapt against re-implementations of the seed's scripts, reported as ratios."""
