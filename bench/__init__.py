"""Benchmarks. Figures are printed as tables of ratios against a baseline run in the same process."""
