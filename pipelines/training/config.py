"""``DPOConfig``: the one documented configuration of a preference-optimisation run.

Every field is stored verbatim on the run's ``training_runs`` row, and ``earmark train dpo`` derives
its flags from these fields (``--beta``, ``--loss-type``, ``--use-peft``...), so this class is the
reference for both the Python API and the CLI.

Defaults follow TRL's ``DPOConfig`` (1.16) where the two overlap; the differences, on purpose:

==========================  =====================  ===================  ==========================================
field                       earmark                TRL                  why
==========================  =====================  ===================  ==========================================
lr / lr_scheduler_type      1e-6, linear decay     1e-6, linear decay   same
beta / loss_type            0.1, sigmoid           0.1, [sigmoid]       same; one loss type per run
max_length                  1024                   1024                 same (truncation_mode keep_start, as TRL)
max_prompt_length           None                   (removed in 1.x)     optional left-truncation of the prompt
precompute_ref_log_probs    True                   False                the reference pass runs once per snapshot
                                                                        and is cached as a sidecar (reused by
                                                                        every later run on the same data)
bf16                        False                  True                 CPUs without native bf16 run it ~15x
                                                                        slower; set it on GPUs
batch_size / epochs         16 / 1                 8 per device / 3     pairs per optimizer step over all workers
use_weights                 False                  (no weights)         a snapshot's evidence weights are used
                                                                        only when asked; exports do not carry them
==========================  =====================  ===================  ==========================================

LoRA learning rates are usually 5e-5..1e-4 (adapters start at zero and have few parameters); the
full-model default of 1e-6 moves a LoRA adapter almost nothing in a short run.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

LossType = Literal["sigmoid", "ipo", "hinge", "robust"]


class DPOConfig(BaseModel):
    """One preference-optimisation run; stored verbatim on its training run row.

    Batch arithmetic: ``batch_size`` pairs make one optimizer step over all workers; each worker
    takes batch_size / workers of them, in ``grad_accum`` micro-batches (so batch_size must be a
    multiple of workers x grad_accum). The loss is the mean over the step's pairs (weighted only
    with ``use_weights``) whatever the split, so changing workers or accumulation does not change
    the gradient. An epoch never repeats a pair: its last step is short when the pairs do not
    divide evenly.
    """

    # ---- what to train --------------------------------------------------------------------------
    model: str | None = Field(
        None,
        description="HF causal LM folder or hub id (read from the local cache, never downloaded) to train; "
        "default: the registered policy that generated the pairs",
    )
    ref_model: str | None = Field(
        None, description="HF causal LM folder or hub id of the DPO reference; default: the initial policy"
    )
    precompute_ref_log_probs: bool = Field(
        True, description="compute reference log-probs once before training (cached per snapshot) instead of per step"
    )
    # ---- loss -----------------------------------------------------------------------------------
    beta: float = Field(0.1, gt=0, description="KL strength: implicit reward = beta * log(pi/ref)")
    loss_type: LossType = Field(
        "sigmoid",
        description="sigmoid = DPO (cDPO with label_smoothing); ipo; hinge (SLiC); robust (rDPO, label_smoothing)",
    )
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="cDPO/robust: assumed label-flip rate")
    rpo_alpha: float | None = Field(
        None, ge=0, description="RPO: add rpo_alpha x the NLL of the chosen responses (token mean) to the loss"
    )
    margin_as_confidence: bool = Field(False, description="cDPO per pair: flip rate = max(label_smoothing, 1 - margin)")
    use_weights: bool = Field(False, description="weight each pair's loss by the rows' weight column (if present)")
    label_sources: list[str] | None = Field(
        None, description="train only on these label sources (human/adjudicated/ai)"
    )
    # ---- sequences ------------------------------------------------------------------------------
    max_length: int | None = Field(1024, ge=2, description="max prompt + response tokens (also capped by the model)")
    max_prompt_length: int | None = Field(None, ge=1, description="keep only the last N prompt tokens")
    truncation_mode: Literal["keep_start", "keep_end"] = Field(
        "keep_start",
        description="over max_length: keep_start cuts the end of the response, keep_end the start of the prompt",
    )
    append_end: bool = Field(True, description="train the end-of-turn token after each response")
    chunk_tokens: int = Field(4096, ge=64, description="padded tokens per forward chunk (memory bound)")
    # ---- optimisation ---------------------------------------------------------------------------
    lr: float = Field(1e-6, ge=0, description="AdamW peak learning rate (LoRA: 5e-5..1e-4 is usual)")
    lr_scheduler_type: Literal["linear", "constant", "cosine"] = Field(
        "linear", description="after warm-up: linear decay to 0 (TRL's default), constant, or cosine"
    )
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps")
    max_grad_norm: float = Field(1.0, gt=0)
    epochs: int = Field(1, ge=1, le=1000)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    batch_size: int = Field(16, ge=1, description="pairs per optimizer step, over all workers")
    grad_accum: int = Field(1, ge=1, description="micro-batches per step on each worker")
    bf16: bool = Field(False, description="bf16 autocast for forward passes (GPUs; slow on CPUs without bf16)")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward (less memory)")
    # ---- LoRA -----------------------------------------------------------------------------------
    use_peft: bool = Field(False, description="train LoRA adapters (peft) instead of all weights")
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_target_modules: str = Field("all-linear", description="comma-separated module names, or all-linear")
    merge_on_export: bool = Field(False, description="LoRA: register merged full weights instead of the adapter folder")
    # ---- modes, workers, bookkeeping ------------------------------------------------------------
    eval_only: bool = Field(False, description="no training: report TRL's metrics (rewards/*, logps/*, loss)")
    num_workers: int = Field(0, ge=0, le=512, description="Ray Train DDP workers; 0 = train in this process")
    use_gpu: bool = Field(False, description="one GPU per Ray Train worker (in-process: use CUDA if present)")
    cpus_per_worker: float = Field(1.0, gt=0)
    threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="torch threads per worker; default: all cores in-process, cpus_per_worker on Ray Train",
    )
    checkpoint_every: int = Field(50, ge=0, description="checkpoint every K steps (0: only the final one)")
    keep_checkpoints: int = Field(2, ge=1)
    max_failures: int = Field(2, ge=0, description="Ray Train restarts from the last checkpoint after a worker dies")
    eval_fraction: float = Field(0.0, ge=0, lt=1, description="share of prompts held out for the end-of-run evaluation")
    seed: int = 0
    output_name: str | None = Field(None, description="registered name of the result; default: the base policy's")
    storage_path: str | None = Field(
        None, description="Ray Train storage (shared FS or s3://); default EARMARK_HOME/training"
    )

    @model_validator(mode="after")
    def _check(self) -> DPOConfig:
        split = max(1, self.num_workers) * self.grad_accum
        if self.batch_size % split:
            raise ValueError(
                f"batch_size={self.batch_size} must be a multiple of workers x grad_accum = {split}; "
                f"use batch_size={-(-self.batch_size // split) * split}"
            )
        if self.lr <= 0 and not self.eval_only:
            raise ValueError("lr must be > 0 to train; set eval_only=true to only evaluate")
        if self.max_prompt_length and self.max_length and self.max_prompt_length >= self.max_length:
            raise ValueError(
                f"max_prompt_length={self.max_prompt_length} leaves no room for the response in "
                f"max_length={self.max_length}; lower max_prompt_length"
            )
        return self

    @property
    def algorithm(self) -> str:
        return "ipo" if self.loss_type == "ipo" else "dpo"

    def lora_targets(self) -> str | list[str]:
        names = [t.strip() for t in self.lora_target_modules.split(",") if t.strip()]
        return "all-linear" if names == ["all-linear"] else names
