"""What the rating page needs around a lease (issue 18): which campaigns have work for this rater,
progress that survives a reload, skips that really skip, and rater groups a campaign is assigned to.

A skip releases the lease and records (rater, item) in ``task_skips``: the claim never hands that
item to that rater again, so the slot goes to someone else. A campaign with rows in
``campaign_groups`` is served only to members of those groups (the claim checks the same rule).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from earmark.errors import InvalidInput, LeaseExpired, NotFound
from earmark.security import action
from earmark.services.context import Service
from earmark.services.tasks import LEASE_GONE
from earmark.store.models import Campaign, CampaignGroup, RaterGroup, RaterGroupMember, User

GROUP_NAME_MAX = 100


@dataclass(frozen=True)
class RaterProgress:
    campaign_id: int
    done_by_me: int
    left_for_me: int  # items with an open slot this rater may still judge (not judged, not skipped)
    left_in_campaign: int  # slots not done, for anyone
    last_saved_at: datetime | None
    last_saved_task: int | None


@dataclass(frozen=True)
class CampaignChoice:
    id: int
    name: str
    left_for_me: int


@dataclass(frozen=True)
class GroupInfo:
    id: int
    name: str
    members: list[str]
    campaigns: list[int]


# Campaigns open to this rater (group rule as in the claim) with the items still left for them.
_VISIBLE = """
SELECT k.id, k.name,
  (SELECT count(DISTINCT t.comparison_id) FROM tasks t
    WHERE t.campaign_id = k.id AND t.status <> 'done'
      AND NOT EXISTS (SELECT 1 FROM judgments j WHERE j.comparison_id = t.comparison_id AND j.rater_id = :r)
      AND NOT EXISTS (SELECT 1 FROM task_skips s WHERE s.comparison_id = t.comparison_id AND s.rater_id = :r)
  ) AS left_for_me
FROM campaigns k
WHERE k.status = 'open' {only}
  AND (NOT EXISTS (SELECT 1 FROM campaign_groups g WHERE g.campaign_id = k.id)
       OR EXISTS (SELECT 1 FROM campaign_groups g JOIN rater_group_members m ON m.group_id = g.group_id
                  WHERE g.campaign_id = k.id AND m.user_id = :r))
ORDER BY k.id DESC
"""
VISIBLE_SQL = text(_VISIBLE.replace("{only}", ""))
ONE_SQL = text(_VISIBLE.replace("{only}", "AND k.id = :c"))
PROGRESS_SQL = text("""
SELECT
  (SELECT count(*) FROM judgments j WHERE j.campaign_id = :c AND j.rater_id = :r) AS done_by_me,
  (SELECT count(*) FROM tasks t WHERE t.campaign_id = :c AND t.status <> 'done') AS left_in_campaign,
  j.created_at AS last_at, j.task_id AS last_task
FROM (SELECT 1) one
LEFT JOIN LATERAL (SELECT created_at, task_id FROM judgments
                   WHERE campaign_id = :c AND rater_id = :r ORDER BY id DESC LIMIT 1) j ON true
""")
SKIP_SQL = text("""
WITH t AS (
  UPDATE tasks SET status = 'open', leased_by = NULL, lease_token = NULL, lease_expires_at = NULL
  WHERE id = :t AND leased_by = :r AND lease_token = :token AND status = 'leased'
  RETURNING comparison_id
), s AS (
  INSERT INTO task_skips (rater_id, comparison_id) SELECT :r, comparison_id FROM t ON CONFLICT DO NOTHING
), a AS (
  INSERT INTO audit_log (actor_id, action, entity, entity_id, details)
  SELECT :r, 'tasks.skip', 'task', :t_text, '{}'::jsonb FROM t
)
SELECT comparison_id FROM t
""")


class RatingService(Service):
    @action("tasks.rate")
    def campaigns(self) -> list[CampaignChoice]:
        """Open campaigns this rater may rate: those with work left for them first, newest first."""
        self.ctx.require("tasks.rate")
        r = self.ctx.principal.user_id
        rows = self.ctx.statement(lambda c: c.execute(VISIBLE_SQL, {"r": r}).all())
        out = [CampaignChoice(row.id, row.name, int(row.left_for_me)) for row in rows]
        return sorted(out, key=lambda x: (x.left_for_me == 0, -x.id))

    @action("tasks.rate")
    def progress(self, campaign_id: int) -> RaterProgress:
        self.ctx.require("tasks.rate")
        r = self.ctx.principal.user_id

        def read(c: Connection) -> RaterProgress:
            mine = c.execute(ONE_SQL, {"r": r, "c": campaign_id}).first()
            row = c.execute(PROGRESS_SQL, {"r": r, "c": campaign_id}).one()
            return RaterProgress(
                campaign_id,
                int(row.done_by_me),
                int(mine.left_for_me) if mine else 0,
                int(row.left_in_campaign),
                row.last_at,
                row.last_task,
            )

        return self.ctx.statement(read)

    @action("tasks.rate")
    def skip(self, task_id: int, lease_token: uuid.UUID) -> None:
        """Give the item back for other raters and never serve it to this rater again."""
        self.ctx.require("tasks.rate")
        r = self.ctx.principal.user_id
        row = self.ctx.connection_tx(
            lambda c: c.execute(SKIP_SQL, {"t": task_id, "r": r, "token": lease_token, "t_text": str(task_id)}).first()
        )
        if row is None:
            raise LeaseExpired(LEASE_GONE)

    # -- rater groups ------------------------------------------------------------------------------
    @action("users.manage")
    def groups(self) -> list[GroupInfo]:
        self.ctx.require("users.manage")

        def read(s: Session) -> list[GroupInfo]:
            groups = s.scalars(select(RaterGroup).order_by(RaterGroup.name)).all()
            members: dict[int, list[str]] = {}
            for gid, name in s.execute(
                select(RaterGroupMember.group_id, User.username)
                .join(User, User.id == RaterGroupMember.user_id)
                .order_by(User.username)
            ):
                members.setdefault(gid, []).append(name)
            camps: dict[int, list[int]] = {}
            for cid, gid in s.execute(select(CampaignGroup.campaign_id, CampaignGroup.group_id)):
                camps.setdefault(gid, []).append(cid)
            return [GroupInfo(g.id, g.name, members.get(g.id, []), sorted(camps.get(g.id, []))) for g in groups]

        return self.ctx.tx(read)

    @action("users.manage")
    def ensure_group(self, s: Session, name: str) -> int:
        name = (name or "").strip()
        if not name or len(name) > GROUP_NAME_MAX:
            raise InvalidInput(f"group name {name[:40]!r} is invalid: use 1-{GROUP_NAME_MAX} characters")
        gid = s.scalar(select(RaterGroup.id).where(RaterGroup.name == name))
        if gid is None:
            g = RaterGroup(name=name)
            s.add(g)
            s.flush()
            gid = g.id
            self.ctx.audit(s, "groups.create", "rater_group", gid, name=name)
        return gid

    @action("users.manage")
    def set_members(self, group: str, usernames: list[str]) -> int:
        """Create the group if needed and make exactly these users its members; returns its id."""
        self.ctx.require("users.manage")

        def write(s: Session) -> int:
            gid = self.ensure_group(s, group)
            ids = []
            for name in usernames:
                uid = s.scalar(select(User.id).where(User.username.ilike(name.strip())))
                if uid is None:
                    raise NotFound(f"user {name!r} does not exist; create it first (or import a CSV)")
                ids.append(uid)
            s.execute(delete(RaterGroupMember).where(RaterGroupMember.group_id == gid))
            if ids:
                s.execute(insert(RaterGroupMember).values([{"group_id": gid, "user_id": u} for u in set(ids)]))
            self.ctx.audit(s, "groups.members", "rater_group", gid, members=sorted(usernames))
            return gid

        return self.ctx.tx(write)

    @action("campaigns.manage")
    def assign_campaign(self, campaign_id: int, groups: list[str]) -> None:
        """Serve the campaign only to members of these groups (an empty list: to every rater)."""
        self.ctx.require("campaigns.manage")

        def write(s: Session) -> None:
            if s.get(Campaign, campaign_id) is None:
                raise NotFound(f"campaign {campaign_id} does not exist")
            gids = []
            for name in groups:
                gid = s.scalar(select(RaterGroup.id).where(RaterGroup.name == name))
                if gid is None:
                    raise NotFound(f"rater group {name!r} does not exist; create it on the Admin page first")
                gids.append(gid)
            s.execute(delete(CampaignGroup).where(CampaignGroup.campaign_id == campaign_id))
            if gids:
                s.execute(insert(CampaignGroup).values([{"campaign_id": campaign_id, "group_id": g} for g in gids]))
            self.ctx.audit(s, "campaigns.groups", "campaign", campaign_id, groups=sorted(groups))

        self.ctx.tx(write)

    @action("campaigns.manage")
    def campaign_groups(self, campaign_id: int) -> list[str]:
        self.ctx.require("campaigns.manage")
        q = (
            select(RaterGroup.name)
            .join(CampaignGroup, CampaignGroup.group_id == RaterGroup.id)
            .where(CampaignGroup.campaign_id == campaign_id)
            .order_by(RaterGroup.name)
        )
        return list(self.ctx.tx(lambda s: s.scalars(q).all()))


__all__ = ["CampaignChoice", "GroupInfo", "RaterProgress", "RatingService"]
