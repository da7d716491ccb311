"""earmark: RLHF reward and preference data platform for audio-language models."""
__version__ = "0.1.0"
