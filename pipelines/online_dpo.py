"""Online DPO with fresh human labels: one round that asks people about its own rollouts.

    rollouts of policy v (Ray) -> reward-model scores (Ray) -> a campaign on those rollouts (pairs
    where the reward model is least sure) -> wait until the quota of judgments is in, or the timeout
    -> labels: the human judgments made up to that moment, AI labels from the reward model for the
    pairs nobody judged (marked "ai" in the snapshot) -> frozen snapshot -> DPO -> policy v+1.

    from pipelines.online_dpo import OnlineDPOConfig, run_online_dpo_round
    res = run_online_dpo_round(em, OnlineDPOConfig(policy="offline-speech", quota=40, timeout_s=3600))

The wait's cut-off (the store's clock when the round stops waiting) is recorded in the snapshot's
label filters: judgments that arrive later (a lease still open at the deadline) stay out of this
round's labels, and rebuilding the snapshot with the same filters later gives the same hash.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from earmark.config import Settings
from earmark.errors import InvalidInput
from pipelines.scoring_job import ScorerSpec

if TYPE_CHECKING:
    from earmark.api import Earmark

DEFAULT_INSTRUCTIONS = "Which reply sounds more like the persona described? Listen to both clips fully."


class NoLabels(InvalidInput):
    code = "no_labels"


class OnlineCampaign(BaseModel):
    """The campaign a round opens on its own rollouts (see earmark.services.campaigns)."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, description="campaign name; default online-dpo-<policy>-v<version>-r<round>-<time>")
    protocol: Literal["pairwise", "cmos"] = Field("pairwise", description="protocols that yield preference labels")
    overlap: int = Field(3, ge=1, le=50, description="raters per item (k)")
    gold_ratio: float = Field(0.1, ge=0, le=0.5, description="share of planted gold items")
    max_items: int | None = Field(None, ge=1, description="comparisons to ask about; default 2 per prompt")
    instructions: str = Field(DEFAULT_INSTRUCTIONS, max_length=4000)
    seed: int | None = Field(None, description="pair choice seed; default the round")


class OnlineDPOConfig(BaseModel):
    """One online DPO round. Stored nowhere by itself: the campaign, snapshot filters and training run
    record what they used."""

    model_config = ConfigDict(extra="forbid")
    policy: str = Field(description="registered policy name")
    policy_version: int | None = Field(None, description="its version; latest when unset")
    split: str | None = Field("train", description="prompts of this split (ignored when prompt_ids is given)")
    prompt_ids: list[str] | None = Field(None, description="prompt external ids")
    samples: int = Field(4, ge=2, le=64, description="K rollouts per prompt (pairs need at least 2)")
    round: int | None = Field(None, ge=0, description="loop round of the rollouts; default policy version + 1")
    actors: int = Field(2, ge=1, le=256, description="Ray actors for rollouts and scoring")
    keep_scoring_actors: bool = Field(
        False,
        description="keep the scoring actors (models loaded) for the next round "
        "of this process (idle, they still hold their Ray CPUs: leave room for the rollout "
        "actors); pipelines.scoring_job.release_actors() frees them",
    )
    temperature: float = Field(0.9, ge=0, le=5, description="rollout sampling temperature")
    max_new_tokens: int = Field(64, ge=1, le=4096)
    seed: int | None = Field(None, description="rollout seed; default the round")
    scorers: list[ScorerSpec] = Field(
        default_factory=lambda: [ScorerSpec(name="prosody")], description="scorers run on the rollouts"
    )
    ai_reward_model: str = Field("prosody", description="scorer whose scores choose the pairs and give AI labels")
    ai_dimensions: list[str] | None = Field(
        default_factory=lambda: ["prosody_match"], description="its dimensions averaged into AI labels; all when unset"
    )
    campaign: OnlineCampaign = Field(default_factory=OnlineCampaign)
    quota: int | None = Field(
        None,
        ge=1,
        description="judgments to wait for (gold items count); wins over "
        "quota_fraction; capped at the campaign's task count",
    )
    quota_fraction: float = Field(0.5, gt=0, le=1, description="share of the campaign's tasks to wait for")
    timeout_s: float = Field(600.0, ge=0, description="stop waiting after this long (0: do not wait)")
    poll_s: float = Field(2.0, ge=0.2, le=300, description="seconds between progress reads while waiting")
    ai_fill: bool = Field(True, description="AI labels for pairs nobody judged by the cut-off (marked 'ai')")
    close_campaign: Literal["always", "on_timeout", "never"] = Field(
        "always",
        description="close the campaign when the round stops waiting. Default always: the next round "
        "asks about v+1's rollouts, so judgments of v's pairs after the cut-off would spend rater time on data "
        "no round trains on; 'never' leaves it open for later snapshots (the demo does, to invite people in)",
    )
    screen_raters: bool = Field(
        False,
        description="exclude raters below the gold-accuracy bar before aggregating "
        "(needs a reviewer or admin principal)",
    )
    snapshot_name: str | None = Field(None, description="snapshot name; default online-dpo-<policy>-r<round>")
    dpo: dict[str, Any] = Field(default_factory=dict, description="DPOConfig fields over pipelines.loop.DEMO_DPO")

    @model_validator(mode="after")
    def _check(self) -> OnlineDPOConfig:
        from pipelines.loop import DEMO_DPO
        from pipelines.training.config import DPOConfig

        # Fail before any rollout is generated, not after the wait.
        try:
            DPOConfig(**{**DEMO_DPO, **self.dpo})
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(map(str, err["loc"]))
            raise ValueError(
                f"dpo overrides{' ' + where if where else ''}: {err['msg']} (fields of "
                "pipelines.training.config.DPOConfig)"
            ) from None
        if self.prompt_ids is not None and not self.prompt_ids:
            raise ValueError("prompt_ids is empty; give at least one prompt external id or leave it unset")
        return self


@dataclass
class RoundEvent:
    """What ``on_progress`` receives: a stage name and its figures."""

    stage: str  # rollouts | scored | campaign | waiting | waited | snapshot | trained
    message: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class OnlineRoundResult:
    round: int
    base_policy_id: int
    base_policy_version: int
    campaign_id: int
    campaign_name: str
    campaign_status: str
    tasks: int
    quota: int
    judgments: int  # made up to the cut-off (gold items included)
    quota_met: bool
    timed_out: bool
    waited_s: float
    cutoff: datetime
    label_counts: dict[str, int]
    dataset_id: int
    dataset_name: str
    dataset_version: int
    snapshot_sha256: str
    training_run_id: int
    policy: Any  # the registered v+1
    train_metrics: dict[str, float] = field(default_factory=dict)
    flagged_raters: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def new_policy_version(self) -> int:
        return int(self.policy.version)


@dataclass
class WaitOutcome:
    judgments: int
    quota_met: bool
    waited_s: float
    cutoff: datetime


def wait_for_quota(
    em: Earmark,
    campaign_id: int,
    quota: int,
    timeout_s: float,
    poll_s: float,
    *,
    show: bool = True,
    on_progress: Callable[[RoundEvent], Any] | None = None,
) -> WaitOutcome:
    """Poll the campaign every ``poll_s`` until ``quota`` judgments exist or ``timeout_s`` passes.

    Sleeps between reads (one cheap count per poll), so a long wait costs the store nothing."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    t0 = time.monotonic()
    deadline = t0 + timeout_s
    bar = Progress(
        TextColumn("[bold]waiting for judgments"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[left]}"),
        transient=True,
        disable=not show,
    )
    with bar:
        task = bar.add_task("wait", total=quota, left="")
        while True:
            cutoff, done = em.campaigns.judgment_count(campaign_id)
            now = time.monotonic()
            bar.update(task, completed=min(done, quota), left=f"timeout in {max(0.0, deadline - now):.0f}s")
            if on_progress:
                on_progress(
                    RoundEvent(
                        "waiting",
                        f"{done}/{quota} judgments",
                        {
                            "judgments": done,
                            "quota": quota,
                            "elapsed_s": now - t0,
                            "remaining_s": max(0.0, deadline - now),
                        },
                    )
                )
            if done >= quota or now >= deadline:
                return WaitOutcome(done, done >= quota, now - t0, cutoff)
            time.sleep(max(0.0, min(poll_s, deadline - now)))


def _emit(on_progress: Callable[[RoundEvent], Any] | None, stage: str, message: str, **data: Any) -> None:
    if on_progress:
        on_progress(RoundEvent(stage, message, data))


def run_online_dpo_round(
    em: Earmark,
    cfg: OnlineDPOConfig,
    settings: Settings | None = None,
    *,
    on_progress: Callable[[RoundEvent], Any] | None = None,
    on_campaign: Callable[[Any, int], Any] | None = None,
    show: bool = True,
) -> OnlineRoundResult:
    """One round; see the module docstring. ``on_campaign(campaign, quota)`` runs once the campaign is
    open and before the wait (simulated raters, or a thread of them; a notice to people).

    Raises ``NoLabels`` (and trains nothing) when nobody judged by the cut-off and ai_fill is off."""
    from earmark.domain.enums import CampaignStatus
    from earmark.services.campaigns import CampaignCreate
    from earmark.services.datasets import SnapshotFilters
    from earmark.services.labels import LabelConfig
    from pipelines.loop import train_dpo_round
    from pipelines.rollout_job import RolloutJobConfig, run_rollout_job
    from pipelines.scoring_job import ScoringJobConfig, run_scoring_job

    settings = settings or em.settings
    # Permissions up front: a refusal after the rollouts and the wait would waste both.
    for perm in ("rollouts.write", "scores.write", "campaigns.manage", "training.run"):
        em.require(perm)
    if cfg.screen_raters:
        em.require("judgments.review")
    t_all = time.monotonic()
    seconds: dict[str, float] = {}
    base = em.catalog.policy(cfg.policy, cfg.policy_version)
    rnd = cfg.round if cfg.round is not None else base.version + 1
    seed = cfg.seed if cfg.seed is not None else rnd

    t0 = time.monotonic()
    ro = run_rollout_job(
        em,
        RolloutJobConfig(
            policy=base.name,
            policy_version=base.version,
            split=None if cfg.prompt_ids else cfg.split,
            prompt_ids=cfg.prompt_ids,
            samples=cfg.samples,
            round=rnd,
            actors=cfg.actors,
            seed=seed,
            temperature=cfg.temperature,
            max_new_tokens=cfg.max_new_tokens,
        ),
        progress=show,
    )
    _emit(on_progress, "rollouts", f"{ro.written} rollouts written", written=ro.written, planned=ro.planned)
    run_scoring_job(
        em,
        ScoringJobConfig(
            scorers=cfg.scorers, policy_id=base.id, rounds=[rnd], actors=cfg.actors, keep_actors=cfg.keep_scoring_actors
        ),
        progress=show,
    )
    seconds["rollouts_and_scores"] = time.monotonic() - t0
    rm_id = em.scores.reward_model_id(cfg.ai_reward_model)
    _emit(on_progress, "scored", f"scored with {[s.name for s in cfg.scorers]}", reward_model_id=rm_id)

    c = cfg.campaign
    n_prompts = len(cfg.prompt_ids) if cfg.prompt_ids else len(em.catalog.prompts(split=cfg.split))
    camp = em.campaigns.create(
        CampaignCreate(
            name=c.name or f"online-dpo-{base.name}-v{base.version}-r{rnd}-{int(time.time())}",
            protocol=c.protocol,
            overlap=c.overlap,
            gold_ratio=c.gold_ratio,
            policy_ids=[base.id],
            rounds=[rnd],
            max_items=c.max_items or max(1, 2 * n_prompts),
            reward_model_id=rm_id,
            seed=c.seed if c.seed is not None else rnd,
            instructions=c.instructions,
        )
    )
    tasks = em.campaigns.progress(camp.id).tasks
    want = cfg.quota if cfg.quota is not None else int(tasks * cfg.quota_fraction)
    quota = max(1, min(want, tasks))  # more than the tasks could never be met
    _emit(
        on_progress,
        "campaign",
        f"campaign {camp.name} (id {camp.id}): {tasks} tasks, quota {quota}",
        campaign_id=camp.id,
        campaign_name=camp.name,
        tasks=tasks,
        quota=quota,
    )
    if on_campaign:
        on_campaign(camp, quota)

    t0 = time.monotonic()
    waited = wait_for_quota(em, camp.id, quota, cfg.timeout_s, cfg.poll_s, show=show, on_progress=on_progress)
    timed_out = not waited.quota_met
    status = camp.status
    if cfg.close_campaign == "always" or (cfg.close_campaign == "on_timeout" and timed_out):
        em.campaigns.set_status(camp.id, CampaignStatus.closed)
        status = CampaignStatus.closed.value
    # Recount up to the cut-off now that submits in flight at the cut-off have committed: this is
    # exactly the set of judgments the labels below may use.
    _, judgments = em.campaigns.judgment_count(camp.id, until=waited.cutoff)
    seconds["wait"] = time.monotonic() - t0
    _emit(
        on_progress,
        "waited",
        f"{judgments} judgments by the cut-off" + (" (timed out)" if timed_out else ""),
        judgments=judgments,
        quota=quota,
        timed_out=timed_out,
        waited_s=waited.waited_s,
        campaign_status=status,
    )
    if judgments == 0 and not cfg.ai_fill:
        raise NoLabels(
            f"nobody judged campaign {camp.name!r} (id {camp.id}) within timeout_s={cfg.timeout_s:g} "
            "and ai_fill is off, so there is nothing to train on; nothing was trained. Give people "
            "more time (raise timeout_s / --timeout), or allow AI labels for unjudged pairs "
            "(ai_fill=True; drop --no-ai-fill)"
        )
    flagged = [q.username for q in em.quality.apply_gold_flags()] if cfg.screen_raters else []

    filters = SnapshotFilters(
        campaign_ids=[camp.id],
        policy_ids=[base.id],
        rounds=[rnd],
        labels=LabelConfig(
            ai_fill=cfg.ai_fill,
            ai_reward_model_ids=[rm_id],
            ai_dimensions=cfg.ai_dimensions,
            judged_before=waited.cutoff,
        ),
    )
    name = cfg.snapshot_name or f"online-dpo-{base.name}-r{rnd}"
    try:
        ds = em.datasets.build(name, filters)
    except InvalidInput as exc:
        raise NoLabels(
            f"round {rnd}: {judgments} judgment(s) by the cut-off gave no usable pair ({exc.message}); "
            "nothing was trained"
        ) from None
    label_counts = dict(ds.manifest["label_counts"])
    _emit(
        on_progress,
        "snapshot",
        f"snapshot {ds.name} v{ds.version}: {ds.row_count} pairs {label_counts}",
        dataset=ds,
        label_counts=label_counts,
    )

    t0 = time.monotonic()
    new_policy, metrics = train_dpo_round(em, base, ds, settings, **cfg.dpo)
    seconds["train"] = time.monotonic() - t0
    seconds["total"] = time.monotonic() - t_all
    _emit(
        on_progress,
        "trained",
        f"registered {new_policy.name} v{new_policy.version}",
        policy=new_policy,
        metrics=metrics,
    )
    return OnlineRoundResult(
        round=rnd,
        base_policy_id=base.id,
        base_policy_version=base.version,
        campaign_id=camp.id,
        campaign_name=camp.name,
        campaign_status=status,
        tasks=tasks,
        quota=quota,
        judgments=judgments,
        quota_met=waited.quota_met,
        timed_out=timed_out,
        waited_s=waited.waited_s,
        cutoff=waited.cutoff,
        label_counts=label_counts,
        dataset_id=ds.id,
        dataset_name=ds.name,
        dataset_version=ds.version,
        snapshot_sha256=ds.content_sha256,
        training_run_id=new_policy.training_run_id,
        policy=new_policy,
        train_metrics=metrics,
        flagged_raters=[str(f) for f in flagged],
        seconds=seconds,
    )
