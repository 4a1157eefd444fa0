"""Leaderboard-rule scorers over strings and manifests. Imports nothing from ``steermoe``."""
