"""Leaderboard-rule scorers over strings and manifests. Imports nothing from ``steermoe``.

``evaluators.tasks.TASKS`` is the one table of tasks: which manifest fields feed which
scorer, its primary metric and whether higher is better.
"""
