"""Helpers that the benchmark scripts share; the scripts themselves are the files one level up."""
