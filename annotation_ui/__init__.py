"""Streamlit annotation app: rater, reviewer, admin and dashboard pages (pages call services, never SQL)."""
