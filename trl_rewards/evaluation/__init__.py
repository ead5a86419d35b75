"""Evaluation: pairwise and verifier metrics, bootstrap intervals, best-of-N, the score cache, plots, the categorized
runner and its report."""
