"""Policy adapters: one interface (`Policy`) over the offline speech policy, local HF models and
OpenAI-compatible speech endpoints."""

from pipelines.policy.base import GeneratedSample, Policy, SamplingParams

__all__ = ["GeneratedSample", "Policy", "SamplingParams"]
