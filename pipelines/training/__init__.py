"""Policy training: preference losses (DPO/IPO/cDPO), online RL (PPO/GRPO), their workers on Ray.

``losses`` depends on torch only and is the place to read the maths; ``dpo`` and ``ppo`` hold the
configs and the drivers that record runs in the store and register the trained policy version.
Nothing here is imported by ``earmark`` itself, so the store and the UI never pull in torch.
"""
