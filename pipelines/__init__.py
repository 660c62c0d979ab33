"""Pipelines that run after a search: retrain the best config, evaluate it with MC dropout."""
