"""Usage and cost: tokens and requests per day, model and key, as charts and tables, and CSV exports —
the reports GET /usage answers."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from gateway.console.auth import signed_in
from gateway.console.charts import bar_chart
from gateway.console.render import render
from gateway.console.sessions import Session, session_principal
from gateway.control import usage_report
from gateway.errors import bad_request

# The windows the page offers, in days; 30 is the API's default (an invoice's month).
WINDOWS = (1, 7, 30, 90)
DEFAULT_DAYS = 30
_SUMS = ("requests", "successful_requests", "prompt_tokens", "completion_tokens", "total_tokens")
# What names a row in each report, for charts and the CSV's first columns.
_LABELS = {"day": ("day",), "model": ("model",), "key": ("api_key_name", "api_key_id"), "instance": ("instance_id",)}


def window_days(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_DAYS
    if not raw.isdigit() or int(raw) not in WINDOWS:
        raise bad_request(f"'days' must be one of {', '.join(map(str, WINDOWS))}.", "days")
    return int(raw)


def row_label(row: dict[str, Any], group_by: str) -> str:
    for name in _LABELS[group_by]:
        if row.get(name) is not None:
            return str(row[name])
    return "(none)"


def usage_csv_text(rows: list[dict[str, Any]], group_by: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    keys = usage_report.GROUP_KEYS[group_by]
    writer.writerow([*keys, *_SUMS])
    for row in rows:
        writer.writerow([("" if row.get(k) is None else row[k]) for k in keys] + [row[s] for s in _SUMS])
    return out.getvalue()


async def _report(request: web.Request, session: Session, group_by: str, days: int) -> dict[str, Any]:
    params: dict[str, Any] = {"from": datetime.now(UTC) - timedelta(days=days), "group_by": group_by}
    if request.query.get("model"):
        params["model"] = request.query["model"]
    return await usage_report.usage_report(request.app, session_principal(session), params)


@signed_in
async def usage_page(request: web.Request, session: Session) -> web.StreamResponse:
    days = window_days(request.query.get("days"))
    reports = {g: await _report(request, session, g, days) for g in ("day", "model", "key")}
    charts = {}
    for group_by, metric, title in (("day", "total_tokens", "Tokens per day"), ("day", "requests", "Requests per day"),
                                    ("model", "total_tokens", "Tokens per model"),
                                    ("key", "total_tokens", "Tokens per key")):
        rows = reports[group_by]["data"]
        charts[f"{group_by}_{metric}"] = bar_chart(
            title, [row_label(r, group_by) for r in rows], [float(r[metric]) for r in rows]
        )
    return render("usage.html", session, days=days, windows=WINDOWS, model=request.query.get("model", ""),
                  reports=reports, charts=charts, label=row_label)


@signed_in
async def usage_csv(request: web.Request, session: Session) -> web.StreamResponse:
    days = window_days(request.query.get("days"))
    group_by = request.query.get("group_by", "day")
    if group_by not in usage_report.GROUP_KEYS:
        raise bad_request(f"'group_by' must be one of {', '.join(usage_report.GROUPINGS)}.", "group_by")
    report = await _report(request, session, group_by, days)
    filename = f"usage-{session.organization_slug}-by-{group_by}-{days}d.csv"
    return web.Response(text=usage_csv_text(report["data"], group_by), content_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})
