"""Grafana dashboards as code: four dashboards over the PoA ClickHouse tables.

Contracts:

- Panels are data (:class:`PanelSpec`): a title, a visualization kind, one SQL query
  for the ``grafana-clickhouse-datasource`` plugin (uid :data:`DATASOURCE_UID`, the one
  provisioned in deploy/grafana/provisioning/datasources/clickhouse.yaml), and the
  columns that query returns. Tables are unqualified: the datasource's
  ``defaultDatabase`` (``poa``) resolves them. ReplacingMergeTree tables
  (``contributions``, ``models``) are always read with ``FINAL``.
- Time-series SQL (``format`` 0) returns ``time`` first, in ascending order, then one
  numeric column per series, or (long format) one string label column and one value
  column, which the plugin pivots. Table SQL (``format`` 1) returns the columns as named.
  Every query uses the plugin's backend macros (``$__timeFilter(col)``,
  ``$__timeInterval(col)``, ``$__interval_s``) and no Grafana template variables.
- The four watch points of the seed each have a panel whose title starts with the
  watch point's name (:data:`WATCH_POINTS`).
- :func:`dashboard_json` builds each dashboard with grafana-foundation-sdk (imported
  lazily: ``pip install 'poa-stream[grafana]'``; the rest of ``poa`` never needs it),
  drops null members and serializes with sorted keys, so :func:`generate_all` writes
  the same bytes for the same code (tests/test_grafana.py checks the committed files).
- :func:`push` creates the folder "PoA Stream" if needed and creates or overwrites
  each dashboard through Grafana's HTTP API (grafana-client), authenticated by a token
  that the caller passes in (never stored in code).
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from textwrap import dedent, indent

DATASOURCE_TYPE = "grafana-clickhouse-datasource"
DATASOURCE_UID = "poa-clickhouse"
PLUGIN_VERSION = "4.11.2"  # the plugin version whose query model the targets follow
FOLDER_TITLE = "PoA Stream"
FOLDER_UID = "poa-stream"
FORMAT_TIME_SERIES, FORMAT_TABLE = 0, 1
DEFAULT_OUT_DIR = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "dashboards"

WATCH_POINTS: dict[str, str] = {
    "demand": "Demand vs incentive activity",
    "lineage": "Attribution across derived and fine-tuned models",
    "validators": "Validator effectiveness against spam",
    "funding": "Rewards from usage vs emissions",
}

# Statuses that mean "spam": the contribution earns nothing. Flags whose reason starts
# with validator_ are about validators (contribution_id empty), not contributions.
SPAM_STATUSES = "('duplicate', 'spam', 'rejected')"
CLUSTER_REASONS = "(f.reason IN ('exact_duplicate', 'near_duplicate') OR f.reason LIKE '%farm%')"
NO_EVIDENCE = "('pool', 'none')"


class GrafanaExtraMissing(RuntimeError):
    """grafana-foundation-sdk / grafana-client are not installed."""


@dataclass(frozen=True)
class PanelSpec:
    """One panel: ``kind`` is timeseries, table, barchart, stat or piechart; ``columns``
    are the column names the SQL returns, in order; ``from_worker`` marks panels over
    ``pipeline_metrics`` (written only by the Kafka worker, empty after a replay)."""

    title: str
    kind: str
    sql: str
    columns: tuple[str, ...]
    description: str = ""
    unit: str | None = None
    w: int = 12
    h: int = 8
    from_worker: bool = False
    options: tuple[tuple[str, object], ...] = ()

    @property
    def format(self) -> int:
        return FORMAT_TIME_SERIES if self.kind == "timeseries" else FORMAT_TABLE


@dataclass(frozen=True)
class DashboardSpec:
    uid: str
    title: str
    description: str
    panels: tuple[PanelSpec, ...]
    time_from: str = "now-1y"
    refresh: str = "1m"

    @property
    def file_name(self) -> str:
        return f"{self.uid}.json"


def _sql(text: str) -> str:
    return dedent(text).strip()


def _attributed_share_sql(col: str) -> str:
    """Attribution weight (requests accounted for), fee tokens and share, by ``col``."""
    return f"""
            SELECT a.{col} AS {col},
                   round(sum(a.weight), 3) AS attributed_requests,
                   round(sum(a.weight * toFloat64(u.fee)) / 1e6, 6) AS attributed_fee_tokens,
                   round(sum(a.weight) / sum(sum(a.weight)) OVER (), 4) AS share
            FROM attributions AS a
            INNER JOIN usage AS u ON a.event_id = u.event_id
            WHERE $__timeFilter(a.ts)
            GROUP BY a.{col}
            ORDER BY attributed_requests DESC, {col}"""


def _p(title: str, kind: str, sql: str, columns: str, **kw) -> PanelSpec:
    return PanelSpec(title=title, kind=kind, sql=_sql(sql), columns=tuple(columns.split()), **kw)


# Concentration measures over an ascending array ``xs`` of per-account totals.
_CONCENTRATION = indent(dedent("""\
    length(xs) AS earners,
    round(2 * arraySum(arrayMap((x, i) -> x * i, xs, arrayEnumerate(xs))) / (length(xs) * arraySum(xs))
          - (length(xs) + 1) / length(xs), 4) AS gini,
    round(arraySum(arrayMap(x -> pow(x / arraySum(xs), 2), xs)), 4) AS hhi,
    round(arraySum(arraySlice(arrayReverseSort(xs), 1, 10)) / arraySum(xs), 4) AS top10_share"""), " " * 16)

ECONOMICS = DashboardSpec(
    uid="poa-economics",
    title="PoA Stream — Network economics",
    description="Who is paid, from what: usage fees (real demand) against token emissions "
                "(incentives), by role and account, and how concentrated rewards are.",
    panels=(
        _p(f"{WATCH_POINTS['demand']}: fee-funded vs emission-funded rewards", "timeseries", """
            SELECT $__timeInterval(ts) AS time,
                   sumIf(amount, source = 'fee') / 1e6 AS fee_funded_tokens,
                   sumIf(amount, source = 'emission') / 1e6 AS emission_funded_tokens
            FROM reward_ledger
            WHERE $__timeFilter(ts)
            GROUP BY time
            ORDER BY time""", "time fee_funded_tokens emission_funded_tokens", w=16,
           description="Credits paid from usage fees (someone paid for inference: real demand) "
                       "against credits paid from the epoch emission budget (incentive-driven "
                       "activity). Emission credits are booked when an epoch closes.",
           unit="short", options=(("fill_opacity", 20),)),
        _p(f"{WATCH_POINTS['funding']}: usage-funded share", "stat", """
            SELECT sumIf(amount, source = 'fee') / 1e6 AS fee_funded_tokens,
                   sumIf(amount, source = 'emission') / 1e6 AS emission_funded_tokens,
                   round(sumIf(amount, source = 'fee') / nullIf(sum(amount), 0), 4) AS usage_funded_share
            FROM reward_ledger
            WHERE $__timeFilter(ts)""", "fee_funded_tokens emission_funded_tokens usage_funded_share",
           w=8, description="Share of all credits in the time range that usage fees paid for."),
        _p(f"{WATCH_POINTS['funding']} per epoch", "barchart", """
            SELECT formatDateTime(argMax(start, seq), '%Y-%m-%d %H:%i') AS epoch_start,
                   argMax(fee_rewards, seq) / 1e6 AS fee_funded_tokens,
                   argMax(emission_rewards, seq) / 1e6 AS emission_funded_tokens
            FROM epochs
            WHERE $__timeFilter(start)
            GROUP BY epoch
            ORDER BY epoch""", "epoch_start fee_funded_tokens emission_funded_tokens", w=12,
           description="Per event-time epoch: credits from usage fees and from the emission budget.",
           unit="short", options=(("x_field", "epoch_start"), ("stacking", "normal"))),
        _p("Demand integrity per epoch: who funds contributors", "table", """
            SELECT epoch,
                   sumIf(amount, role = 'contributor' AND source IN ('fee', 'pool', 'escrow')) / 1e6 AS contributor_fee_tokens,
                   sumIf(amount, role = 'contributor' AND source = 'emission') / 1e6 AS contributor_emission_tokens,
                   round(contributor_fee_tokens / nullIf(contributor_fee_tokens + contributor_emission_tokens, 0), 4)
                       AS contributor_fee_share,
                   round(least(1, sumIf(amount, source = 'fee') / nullIf(sumIf(amount, source = 'emission'), 0)), 4)
                       AS emission_backed_by_fees
            FROM reward_ledger
            WHERE $__timeFilter(ts)
            GROUP BY epoch
            ORDER BY epoch""",
           "epoch contributor_fee_tokens contributor_emission_tokens contributor_fee_share emission_backed_by_fees",
           w=12, description="Per epoch: contributor rewards paid by usage fees (directly or through "
                             "datanet pools or released from escrow) against emissions, and how much of the emission paid "
                             "demand matches (fees / emission, capped at 1). Emissions follow "
                             "validated supply, never usage (README: Economics)."),
        _p("Demand integrity per epoch: usage concentration", "table", """
            SELECT o.epoch AS epoch, o.operators, o.operator_hhi, o.top_operator_share,
                   p.pairs, p.pair_hhi, p.top_pair_share
            FROM (
                SELECT epoch, count() AS operators, round(sum(pow(n / total, 2)), 4) AS operator_hhi,
                       round(max(n) / any(total), 4) AS top_operator_share
                FROM (SELECT epoch, account, count() AS n, sum(count()) OVER (PARTITION BY epoch) AS total
                      FROM reward_ledger
                      WHERE role = 'operator' AND source = 'fee' AND $__timeFilter(ts)
                      GROUP BY epoch, account)
                GROUP BY epoch) AS o
            LEFT JOIN (
                SELECT epoch, count() AS pairs, round(sum(pow(amount / total, 2)), 4) AS pair_hhi,
                       round(max(amount) / any(total), 4) AS top_pair_share
                FROM (SELECT epoch, operator, contributor, amount,
                             sum(amount) OVER (PARTITION BY epoch) AS total
                      FROM (SELECT op.epoch AS epoch, op.account AS operator, c.account AS contributor,
                                   toFloat64(sum(c.amount)) AS amount
                            FROM reward_ledger AS op
                            INNER JOIN reward_ledger AS c ON c.ref_event_id = op.ref_event_id
                            WHERE op.role = 'operator' AND op.source = 'fee' AND c.role = 'contributor'
                                  AND c.source = 'fee' AND $__timeFilter(op.ts)
                            GROUP BY epoch, operator, contributor))
                GROUP BY epoch) AS p ON p.epoch = o.epoch
            ORDER BY epoch""",
           "epoch operators operator_hhi top_operator_share pairs pair_hhi top_pair_share", w=12,
           description="Per epoch: paid usage per operator, and contributor credits per (operator, "
                       "contributor) pair: Herfindahl index and the largest share. One operator "
                       "paying mostly one contributor is the shape of wash usage."),
        _p("Demand integrity per epoch: suspected wash usage", "table", """
            SELECT toUInt64OrZero(extract(detail, '^epoch ([0-9]+):')) AS epoch, contributor AS operator,
                   toString(reason) AS reason, round(score, 3) AS score, detail
            FROM flags
            WHERE reason LIKE 'wash_%' AND $__timeFilter(ts)
            ORDER BY epoch DESC, score DESC, operator, reason
            LIMIT 200""", "epoch operator reason score detail", w=24, h=7,
           description="Operators whose usage in an epoch looks incentive-driven (processors/wash.py): "
                       "wash_self_dealing (credits go to the operator's own account or one with its "
                       "signing key), wash_low_fee_burst (fee-0 or near-0 usage in a burst), "
                       "wash_closed_loop (credits go mostly to a few accounts no other operator's "
                       "usage credits). Watch points: a flag moves no money."),
        _p("Demand vs incentive activity: paid inference vs contributions and votes", "timeseries", """
            SELECT time, activity, events FROM (
                SELECT $__timeInterval(ts) AS time, 'paid inference (demand)' AS activity, count() AS events
                FROM usage WHERE $__timeFilter(ts) AND fee > 0 GROUP BY time
                UNION ALL
                SELECT $__timeInterval(ts) AS time, 'contributions (incentive)' AS activity, count() AS events
                FROM contributions FINAL WHERE $__timeFilter(ts) GROUP BY time
                UNION ALL
                SELECT $__timeInterval(ts) AS time, 'validations (incentive)' AS activity, count() AS events
                FROM validations WHERE $__timeFilter(ts) GROUP BY time
            )
            ORDER BY time, activity""", "time activity events", w=12,
           description="Events per interval: paid usage requests against uploads and votes."),
        _p("Rewards by role and source", "barchart", """
            SELECT role,
                   sumIf(amount, source = 'fee') / 1e6 AS fee_funded_tokens,
                   sumIf(amount, source = 'pool') / 1e6 AS pool_settled_tokens,
                   sumIf(amount, source = 'escrow') / 1e6 AS escrow_resolved_tokens,
                   sumIf(amount, source = 'emission') / 1e6 AS emission_funded_tokens
            FROM reward_ledger
            WHERE $__timeFilter(ts)
            GROUP BY role
            ORDER BY role""",
           "role fee_funded_tokens pool_settled_tokens escrow_resolved_tokens emission_funded_tokens", w=12,
           unit="short", options=(("x_field", "role"), ("stacking", "normal")),
           description="pool_settled: usage fees with no evidence, paid out of the datanet pools at "
                       "epoch close (the pool role's own column is the settlement debit). "
                       "escrow: credit held for contributions not yet accepted (role escrow), "
                       "released to contributors or forfeited to pools (source escrow)."),
        _p("Escrow per epoch: held, released, forfeited", "table", """
            SELECT epoch,
                   sumIf(amount, role = 'escrow' AND source = 'fee') / 1e6 AS held_tokens,
                   sumIf(amount, source = 'escrow' AND role = 'contributor') / 1e6 AS released_tokens,
                   sumIf(amount, source = 'escrow' AND role = 'pool') / 1e6 AS forfeited_tokens,
                   sum(sumIf(amount, role = 'escrow')) OVER (ORDER BY epoch) / 1e6 AS open_escrow_tokens
            FROM reward_ledger
            WHERE $__timeFilter(ts)
            GROUP BY epoch
            ORDER BY epoch""", "epoch held_tokens released_tokens forfeited_tokens open_escrow_tokens", w=12,
           description="Usage credit to contributions validators have not accepted yet is held "
                       "(escrow:<contribution>), released to the contributor on acceptance, or "
                       "forfeited to the datanet's pool on rejection, duplicate or spam. Open: "
                       "still held at the end of the epoch (within the time range)."),
        _p("Datanet pools per epoch", "table", """
            SELECT epoch, toString(start) AS epoch_start, pool_settled / 1e6 AS settled_tokens,
                   pool_carried / 1e6 AS carried_tokens, fee_rewards / 1e6 AS fee_tokens
            FROM epochs
            WHERE $__timeFilter(start)
            ORDER BY epoch""", "epoch epoch_start settled_tokens carried_tokens fee_tokens", w=12,
           description="Pool balances settled over each datanet's eligible contributions at close "
                       "(by distinct token windows), and what stayed for the next epoch."),
        _p("Rewards by role over time", "timeseries", """
            SELECT $__timeInterval(ts) AS time, toString(role) AS role, sum(amount) / 1e6 AS tokens
            FROM reward_ledger
            WHERE $__timeFilter(ts)
            GROUP BY time, role
            ORDER BY time, role""", "time role tokens", w=12, unit="short"),
        _p("Top earners", "table", """
            SELECT account,
                   arrayStringConcat(arraySort(groupUniqArray(toString(role))), ', ') AS roles,
                   sumIf(amount, source = 'fee') / 1e6 AS fee_funded_tokens,
                   sumIf(amount, source = 'pool') / 1e6 AS pool_settled_tokens,
                   sumIf(amount, source = 'escrow') / 1e6 AS escrow_released_tokens,
                   sumIf(amount, source = 'emission') / 1e6 AS emission_funded_tokens,
                   sum(amount) / 1e6 AS total_tokens
            FROM reward_ledger
            WHERE $__timeFilter(ts) AND role NOT IN ('pool', 'escrow')
            GROUP BY account
            ORDER BY total_tokens DESC, account
            LIMIT 20""", "account roles fee_funded_tokens pool_settled_tokens escrow_released_tokens emission_funded_tokens "
           "total_tokens",
           w=12, h=10),
        _p("Concentration of contributor rewards (Gini, HHI, top-10 share)", "stat", f"""
            SELECT
{_CONCENTRATION}
            FROM (
                SELECT arraySort(groupArray(toFloat64(total))) AS xs
                FROM (SELECT account, sum(amount) AS total FROM reward_ledger
                      WHERE $__timeFilter(ts) AND role = 'contributor'
                      GROUP BY account HAVING total > 0)
            )""", "earners gini hhi top10_share", w=12, h=5,
           description="Over contributor accounts' total credits: Gini (0 equal .. 1 one account "
                       "takes all), Herfindahl-Hirschman index (sum of squared shares), and the "
                       "share of the ten largest earners."),
        _p("Concentration of contributor rewards by epoch", "table", f"""
            SELECT epoch,
{_CONCENTRATION}
            FROM (
                SELECT epoch, arraySort(groupArray(toFloat64(total))) AS xs
                FROM (SELECT epoch, account, sum(amount) AS total FROM reward_ledger
                      WHERE $__timeFilter(ts) AND role = 'contributor'
                      GROUP BY epoch, account HAVING total > 0)
                GROUP BY epoch
            )
            ORDER BY epoch""", "epoch earners gini hhi top10_share", w=12, h=5),
    ),
)

ATTRIBUTION = DashboardSpec(
    uid="poa-attribution",
    title="PoA Stream — Attribution",
    description="Which data shaped which inference: attributed share by datanet and model, "
                "credit passed up model lineage, and the evidence behind it.",
    panels=(
        _p(f"{WATCH_POINTS['lineage']}: share passed up the lineage", "timeseries", """
            SELECT $__timeInterval(ts) AS time, model_id, avg(lineage_share) AS passed_up_share
            FROM usage
            WHERE $__timeFilter(ts)
              AND model_id IN (SELECT model_id FROM models FINAL WHERE notEmpty(base_models))
            GROUP BY time, model_id
            ORDER BY time, model_id""", "time model_id passed_up_share", w=16,
           description="For derived models (finetune, lora, distill, merge): the share of each "
                       "request's attribution credited through an ancestor model "
                       "(usage.lineage_share).", unit="percentunit"),
        _p(f"{WATCH_POINTS['lineage']}: by model", "table", """
            SELECT m.model_id AS model_id, m.method AS method,
                   arrayStringConcat(m.base_models, ', ') AS base_models, m.inherit AS inherit,
                   count() AS requests, round(avg(u.lineage_share), 4) AS passed_up_share,
                   sum(u.fee) / 1e6 AS fee_tokens
            FROM usage AS u
            INNER JOIN (SELECT model_id, method, base_models, inherit FROM models FINAL) AS m
                ON u.model_id = m.model_id
            WHERE $__timeFilter(u.ts)
            GROUP BY m.model_id, m.method, m.base_models, m.inherit
            ORDER BY model_id""",
           "model_id method base_models inherit requests passed_up_share fee_tokens", w=8),
        _p("Credit flowing to ancestor models", "table", """
            SELECT via_model AS ancestor, model_id AS used_model,
                   round(sum(weight), 3) AS attributed_requests,
                   uniqExact(contribution_id) AS contributions
            FROM attributions
            WHERE $__timeFilter(ts) AND via_model != model_id
            GROUP BY via_model, model_id
            ORDER BY attributed_requests DESC, ancestor, used_model""",
           "ancestor used_model attributed_requests contributions", w=12,
           description="Attribution weight credited to contributions through an ancestor's "
                       "datanets (attributions.via_model differs from the model used)."),
        _p("Attributed share by datanet", "piechart", _attributed_share_sql("datanet"),
           "datanet attributed_requests attributed_fee_tokens share", w=12,
           description="Each request's attribution weights sum to 1: the sum per datanet is the "
                       "number of requests it accounts for; fee tokens weight them by the fee."),
        _p("Attributed share by model", "barchart", _attributed_share_sql("model_id"),
           "model_id attributed_requests attributed_fee_tokens share", w=12,
           options=(("x_field", "model_id"),)),
        _p("Evidence mix over time", "timeseries", """
            SELECT $__timeInterval(ts) AS time, toString(evidence) AS evidence, count() AS requests
            FROM usage
            WHERE $__timeFilter(ts)
            GROUP BY time, evidence
            ORDER BY time, evidence""", "time evidence requests", w=12,
           description="span: output text matched contributed text; influence: the operator's own "
                       "scores; pool: no evidence, to the lineage's datanet pools (settled at "
                       "epoch close); mixed: "
                       "different evidence through different lineage models; none: nothing eligible."),
        _p("Evidence mix by model", "table", """
            SELECT model_id, count() AS requests,
                   countIf(evidence = 'span') AS span,
                   countIf(evidence = 'span+influence') AS span_and_influence,
                   countIf(evidence = 'influence') AS influence,
                   countIf(evidence = 'mixed') AS mixed,
                   countIf(evidence = 'pool') AS pool,
                   countIf(evidence = 'none') AS none
            FROM usage
            WHERE $__timeFilter(ts)
            GROUP BY model_id
            ORDER BY model_id""",
           "model_id requests span span_and_influence influence mixed pool none", w=12),
        _p("Usage with no evidence", "stat", f"""
            SELECT countIf(evidence IN {NO_EVIDENCE}) AS requests_without_evidence,
                   round(countIf(evidence IN {NO_EVIDENCE}) / nullIf(count(), 0), 4) AS share_without_evidence,
                   sumIf(fee, evidence IN {NO_EVIDENCE}) / 1e6 AS fee_tokens_without_evidence
            FROM usage
            WHERE $__timeFilter(ts)""",
           "requests_without_evidence share_without_evidence fee_tokens_without_evidence", w=8, h=5,
           description="Requests whose output matched no contributed span and carried no influence "
                       "scores: their contributor and validator share went to the datanet pools, "
                       "settled at epoch close (or to the treasury when nothing was eligible)."),
        _p("Usage with no evidence over time", "timeseries", f"""
            SELECT $__timeInterval(ts) AS time,
                   countIf(evidence NOT IN {NO_EVIDENCE}) AS with_evidence,
                   countIf(evidence IN {NO_EVIDENCE}) AS without_evidence
            FROM usage
            WHERE $__timeFilter(ts)
            GROUP BY time
            ORDER BY time""", "time with_evidence without_evidence", w=16, h=5),
    ),
)

SPAM = DashboardSpec(
    uid="poa-spam-validators",
    title="PoA Stream — Spam and validators",
    description="Duplicates, farms and spam flagged by the pipeline, and how well validators "
                "kept them out.",
    panels=(
        _p(f"{WATCH_POINTS['validators']}: spam approved by each validator", "table", f"""
            SELECT v.validator AS validator,
                   count() AS votes_on_spam,
                   countIf(v.verdict = 'accept') AS spam_approved,
                   countIf(v.verdict = 'reject') AS spam_rejected,
                   round(countIf(v.verdict = 'accept') / count(), 4) AS approval_rate
            FROM validations AS v
            INNER JOIN (
                SELECT contribution_id FROM contributions FINAL WHERE status IN {SPAM_STATUSES}
                UNION DISTINCT
                SELECT contribution_id FROM flags WHERE reason NOT LIKE 'validator_%'
            ) AS s ON v.contribution_id = s.contribution_id
            WHERE $__timeFilter(v.ts)
            GROUP BY validator
            ORDER BY spam_approved DESC, validator""",
           "validator votes_on_spam spam_approved spam_rejected approval_rate", w=12, h=10,
           description="Votes on contributions that turned out duplicate, spam or rejected, or "
                       "that the pipeline flagged: an 'accept' there is spam a validator approved."),
        _p(f"{WATCH_POINTS['validators']}: approvals of spam over time", "timeseries", f"""
            SELECT $__timeInterval(v.ts) AS time,
                   countIf(v.verdict = 'accept') AS spam_approved,
                   countIf(v.verdict = 'reject') AS spam_rejected
            FROM validations AS v
            INNER JOIN (
                SELECT contribution_id FROM contributions FINAL WHERE status IN {SPAM_STATUSES}
                UNION DISTINCT
                SELECT contribution_id FROM flags WHERE reason NOT LIKE 'validator_%'
            ) AS s ON v.contribution_id = s.contribution_id
            WHERE $__timeFilter(v.ts)
            GROUP BY time
            ORDER BY time""", "time spam_approved spam_rejected", w=12, h=10),
        _p("Validator reliability over time", "timeseries", """
            SELECT $__timeInterval(ts) AS time, validator, argMax(reliability, ts) AS reliability
            FROM validator_scores
            WHERE $__timeFilter(ts)
            GROUP BY time, validator
            ORDER BY time, validator""", "time validator reliability", w=16, h=9,
           description="Each validator's agreement-based reliability (validator_scores), last "
                       "value per interval.", unit="percentunit"),
        _p("Validator reliability ranking", "table", """
            SELECT validator, round(argMax(reliability, ts), 4) AS reliability,
                   argMax(votes, ts) AS votes
            FROM validator_scores
            WHERE $__timeFilter(ts)
            GROUP BY validator
            ORDER BY reliability DESC, validator""", "validator reliability votes", w=8, h=9),
        _p("Validator fee weights paid by (epoch snapshots)", "table", """
            SELECT validator, max(epoch) AS last_epoch, round(argMax(fee_weight, epoch), 4) AS weight,
                   round(argMax(fee_weight, epoch) - argMin(fee_weight, epoch), 4) AS weight_change,
                   max(votes) AS judged_votes
            FROM validator_weights
            WHERE $__timeFilter(ts)
            GROUP BY validator
            ORDER BY weight DESC, validator""", "validator last_epoch weight weight_change judged_votes",
           w=24, h=8, description="The weights usage fees, pool settlements and emissions pay "
                                  "validators by: the snapshot each epoch close publishes "
                                  "(validator_weights); the next epoch's fees use it. Change: "
                                  "from the first to the last snapshot in the time range."),
        _p("Flags by reason", "timeseries", """
            SELECT $__timeInterval(ts) AS time, toString(reason) AS reason, count() AS flags
            FROM flags
            WHERE $__timeFilter(ts)
            GROUP BY time, reason
            ORDER BY time, reason""", "time reason flags", w=12,
           description="exact_duplicate, near_duplicate and every other reason the pipeline flags "
                       "(farms, spam) as it appears."),
        _p("Flags by reason (totals)", "table", """
            SELECT reason, count() AS flags, uniqExact(contributor) AS accounts,
                   round(avg(score), 4) AS avg_score
            FROM flags
            WHERE $__timeFilter(ts)
            GROUP BY reason
            ORDER BY flags DESC, reason""", "reason flags accounts avg_score", w=12),
        _p("Duplicate and farm clusters", "table", f"""
            SELECT f.reason AS reason,
                   if(c.duplicate_of != '', c.duplicate_of, f.contribution_id) AS cluster_root,
                   any(c.datanet) AS datanet,
                   count() AS members,
                   uniqExact(f.contributor) AS accounts,
                   min(f.ts) AS first_seen,
                   dateDiff('second', min(f.ts), max(f.ts)) AS spread_s
            FROM flags AS f
            LEFT JOIN (SELECT contribution_id, duplicate_of, datanet FROM contributions FINAL) AS c
                ON f.contribution_id = c.contribution_id
            WHERE $__timeFilter(f.ts) AND {CLUSTER_REASONS}
            GROUP BY reason, cluster_root
            ORDER BY members DESC, accounts DESC, cluster_root
            LIMIT 50""", "reason cluster_root datanet members accounts first_seen spread_s", w=24, h=10,
           description="Duplicate and farm flags grouped by the earliest contribution they copy "
                       "(contributions.duplicate_of): many accounts and a short spread point "
                       "to a farm."),
        _p("Flagged validators", "table", """
            SELECT contributor AS validator, reason, count() AS flags,
                   argMax(detail, ts) AS latest_detail, max(ts) AS last_flagged
            FROM flags
            WHERE $__timeFilter(ts) AND reason LIKE 'validator_%'
            GROUP BY validator, reason
            ORDER BY flags DESC, validator, reason""",
           "validator reason flags latest_detail last_flagged", w=24, h=7,
           description="Flags the pipeline raises about validators (reasons validator_*), e.g. "
                       "voting against consensus or accepting spam."),
    ),
)

PIPELINE = DashboardSpec(
    uid="poa-pipeline",
    title="PoA Stream — Pipeline health",
    description="The Faust worker's per-batch health (pipeline_metrics, wall-clock time) and "
                "the dead letters.",
    time_from="now-6h",
    refresh="30s",
    panels=(
        _p("Events per second by topic", "timeseries", """
            SELECT $__timeInterval(ts) AS time, toString(topic) AS topic,
                   sum(messages) / $__interval_s AS events_per_s
            FROM pipeline_metrics
            WHERE $__timeFilter(ts)
            GROUP BY time, topic
            ORDER BY time, topic""", "time topic events_per_s", w=12, unit="short", from_worker=True),
        _p("Consumer lag by topic", "timeseries", """
            SELECT $__timeInterval(ts) AS time, toString(topic) AS topic, max(lag) AS lag
            FROM pipeline_metrics
            WHERE $__timeFilter(ts)
            GROUP BY time, topic
            ORDER BY time, topic""", "time topic lag", w=12, unit="short", from_worker=True,
           description="Messages behind the partitions' high-water marks, summed over partitions."),
        _p("Dead-letter rate", "timeseries", """
            SELECT $__timeInterval(ts) AS time,
                   sum(deadlettered) / nullIf(sum(messages), 0) AS dead_letter_share
            FROM pipeline_metrics
            WHERE $__timeFilter(ts)
            GROUP BY time
            ORDER BY time""", "time dead_letter_share", w=12, unit="percentunit", from_worker=True),
        _p("Event-to-ledger latency p50 / p99", "timeseries", """
            SELECT $__timeInterval(ts) AS time,
                   avg(e2l_p50_ms) AS p50_ms,
                   max(e2l_p99_ms) AS p99_ms
            FROM pipeline_metrics
            WHERE $__timeFilter(ts)
            GROUP BY time
            ORDER BY time""", "time p50_ms p99_ms", w=12, unit="ms", from_worker=True,
           description="From a message's arrival at the worker to its rows being written: mean of "
                       "the batches' medians and the worst batch p99 per interval."),
        _p("Buffered events and batch time", "timeseries", """
            SELECT $__timeInterval(ts) AS time,
                   max(buffered) AS buffered_events,
                   max(batch_ms) AS max_batch_ms
            FROM pipeline_metrics
            WHERE $__timeFilter(ts)
            GROUP BY time
            ORDER BY time""", "time buffered_events max_batch_ms", w=12, from_worker=True,
           description="Events held for the event-time watermark, and the slowest batch."),
        _p("Dead letters by reason", "table", """
            SELECT topic, reason, count() AS dead_letters, max(ts) AS last_seen
            FROM deadletter
            WHERE $__timeFilter(ts)
            GROUP BY topic, reason
            ORDER BY dead_letters DESC, topic, reason
            LIMIT 100""", "topic reason dead_letters last_seen", w=12),
        _p("Event log by type", "timeseries", """
            SELECT $__timeInterval(ts) AS time, toString(type) AS type, count() AS events
            FROM events
            WHERE $__timeFilter(ts)
            GROUP BY time, type
            ORDER BY time, type""", "time type events", w=24, h=6,
           description="Every logged message by type, in event time ('invalid' = dead-lettered)."),
    ),
)

DASHBOARDS: tuple[DashboardSpec, ...] = (ECONOMICS, ATTRIBUTION, SPAM, PIPELINE)


def all_panels() -> list[tuple[DashboardSpec, PanelSpec]]:
    return [(d, p) for d in DASHBOARDS for p in d.panels]


def clickhouse_target(sql: str, fmt: int, ref_id: str = "A") -> dict:
    """The target JSON the ClickHouse plugin stores for a SQL-editor query."""
    return {"datasource": {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID},
            "editorType": "sql", "format": fmt,
            "queryType": "timeseries" if fmt == FORMAT_TIME_SERIES else "table",
            "pluginVersion": PLUGIN_VERSION, "rawSql": sql, "refId": ref_id}


# ---------------------------------------------------------------- SDK (lazy)
@functools.cache
def _sdk():
    """grafana-foundation-sdk's modules, plus the ClickHouse Dataquery variant it lacks."""
    try:
        from grafana_foundation_sdk.builders import (barchart, common as common_b, dashboard,
                                                     piechart, stat, table, timeseries)
        from grafana_foundation_sdk.cog import builder as cogbuilder
        from grafana_foundation_sdk.cog import variants as cogvariants
        from grafana_foundation_sdk.models import common
        from grafana_foundation_sdk.models.dashboard import DataSourceRef
    except ImportError as exc:
        raise GrafanaExtraMissing("grafana-foundation-sdk is not installed: "
                                  "pip install 'poa-stream[grafana]'") from exc

    class ClickHouseQuery(cogvariants.Dataquery):
        """A grafana-clickhouse-datasource SQL target (see :func:`clickhouse_target`)."""

        def __init__(self, target: dict):
            self.target = target

        def to_json(self) -> dict:
            return dict(self.target)

    class ClickHouseQueryBuilder(cogbuilder.Builder[ClickHouseQuery]):
        def __init__(self, sql: str, fmt: int, ref_id: str = "A"):
            self._internal = ClickHouseQuery(clickhouse_target(sql, fmt, ref_id))

        def build(self) -> ClickHouseQuery:
            return self._internal

    return {"dashboard": dashboard, "common_b": common_b, "common": common,
            "DataSourceRef": DataSourceRef, "Query": ClickHouseQueryBuilder,
            "kinds": {"timeseries": timeseries, "table": table, "barchart": barchart,
                      "stat": stat, "piechart": piechart}}


def _apply_option(sdk, kind: str, panel, name: str, value):
    common, common_b = sdk["common"], sdk["common_b"]
    if name == "stacking":
        mode = common.StackingMode(value)
        return panel.stacking(mode if kind == "barchart" else common_b.StackingConfig().mode(mode))
    if name in ("x_field", "fill_opacity"):
        return getattr(panel, name)(value)
    raise ValueError(f"unknown panel option {name!r}")


def _panel(sdk, spec: PanelSpec, panel_id: int):
    b = (sdk["kinds"][spec.kind].Panel().id(panel_id).title(spec.title)
         .datasource(sdk["DataSourceRef"](type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID))
         .with_target(sdk["Query"](spec.sql, spec.format)).span(spec.w).height(spec.h))
    if spec.description:
        b = b.description(spec.description)
    if spec.unit:
        b = b.unit(spec.unit)
    for name, value in spec.options:
        b = _apply_option(sdk, spec.kind, b, name, value)
    return b


def _prune(obj):
    """Drop null members (the SDK serializes unset options as null) recursively."""
    if isinstance(obj, dict):
        return {k: _prune(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_prune(v) for v in obj]
    return obj


def dashboard_json(spec: DashboardSpec) -> dict:
    """The dashboard model Grafana stores, built with grafana-foundation-sdk."""
    sdk = _sdk()
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    b = (sdk["dashboard"].Dashboard(spec.title).uid(spec.uid).description(spec.description)
         .tags(["poa-stream"]).time(spec.time_from, "now").timezone("utc")
         .refresh(spec.refresh).editable())
    for i, p in enumerate(spec.panels, 1):
        b = b.with_panel(_panel(sdk, p, i))
    return _prune(json.loads(json.dumps(b.build(), cls=JSONEncoder)))


def render(spec: DashboardSpec) -> str:
    """Stable text of a dashboard: sorted keys, two-space indent, trailing newline."""
    return json.dumps(dashboard_json(spec), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def generate_all(out_dir: str | Path = DEFAULT_OUT_DIR) -> list[Path]:
    """Write one ``<uid>.json`` per dashboard into ``out_dir`` (Grafana's provisioning
    folder by default); returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for spec in DASHBOARDS:
        path = out / spec.file_name
        path.write_text(render(spec), encoding="utf-8")
        paths.append(path)
    return paths


# ---------------------------------------------------------------- push
def push(url: str, token: str, timeout_s: float = 30.0) -> list[dict]:
    """Create or update every dashboard in the folder "PoA Stream" of the Grafana at ``url``.

    Authenticates with the bearer ``token`` (a service-account token); creates the folder
    (uid :data:`FOLDER_UID`) when missing; posts each dashboard with ``overwrite: true``
    so a push replaces what is there. Returns Grafana's answers, one per dashboard.
    Raises :class:`GrafanaExtraMissing` without grafana-client, and grafana-client's
    errors (``GrafanaException`` subclasses) when Grafana refuses.
    """
    try:
        from grafana_client import GrafanaApi
        from grafana_client.client import GrafanaClientError
    except ImportError as exc:
        raise GrafanaExtraMissing("grafana-client is not installed: "
                                  "pip install 'poa-stream[grafana]'") from exc
    if not token:
        raise ValueError("a Grafana token is required (set POA_GRAFANA_TOKEN)")
    base = url if url.endswith("/") else url + "/"  # grafana-client appends 'api' to the path
    api = GrafanaApi.from_url(base, credential=token, timeout=timeout_s)
    try:
        api.folder.get_folder(FOLDER_UID)
    except GrafanaClientError as exc:
        if exc.status_code != 404:
            raise
        api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
    answers = []
    for spec in DASHBOARDS:
        answers.append(api.dashboard.update_dashboard({
            "dashboard": dashboard_json(spec), "folderUid": FOLDER_UID, "overwrite": True,
            "message": "poa grafana push"}))
    return answers
