"""Ray-side edge of earmark: policy adapters, rollout actors, scoring jobs, trainers."""
