"""Torch-free readers of results.json files: compare, the verdict rule, the matrix, history."""
