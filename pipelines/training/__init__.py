"""Policy training: preference losses (DPO/IPO/cDPO), online RL (PPO/GRPO), their workers on Ray.

Public entry points (each records a ``training_runs`` row and registers the result as the next
version of the base policy, with parent, training run and dataset):

    from pipelines.training.config import DPOConfig             # the one documented DPO config (CLI flags too)
    from pipelines.training.dpo_job import run_dpo             # snapshot -> DPO/IPO/hinge/robust (+RPO, LoRA)
    from pipelines.training.ppo import PPOConfig                # online rounds: rollouts -> scores -> PPO/GRPO update
    from pipelines.training.rl_job import run_rl

``losses`` (torch only) holds the maths with paper references; ``sequences`` the padding-free
log-prob computation; ``reference`` the once-per-snapshot reference log-probs; ``worker`` and
``driver`` what the in-process and Ray Train paths share. Nothing here is imported by ``earmark``
itself, so the store and the UI never pull in torch.
"""
