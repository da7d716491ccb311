"""Reward drift across policy versions, reward-hacking signals, the verifiable-reward trap, the
Bradley-Terry policy leaderboard and rater drift.

Layout: ``sql`` (score aggregates in PostgreSQL) and ``metrics`` (PSI, KS, JS, Wasserstein from
them) make ``report.summarize``; ``hacking``, ``trap``, ``leaderboard`` and ``raters`` each hold
their SQL and their decision; ``charts`` (Altair), ``images`` (matplotlib PNG) and ``html`` draw
a report. ``earmark.services.drift.DriftService`` is the entry point with role checks.
"""
