"""History: every run, filtered, searched and paged; one run's detail, 3D preview and actions."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import streamlit as st

import ui
from vggt_core import RunPage, RunStatus

PAGE_SIZE = 25
STATUS_FILTERS = ["all", *(s.value for s in RunStatus)]

ui.require_entrypoint()
ctx = ui.context()
st.title("History")
ui.show_flashes()

MOVING = ("queued", "uploading", "processing", "fetching")


def _moving(counts: dict[str, int]) -> tuple[tuple[str, int], ...]:
    """The counts while some run may still move (the counters then refresh), else ()."""
    return tuple(sorted(counts.items())) if any(counts.get(s) for s in MOVING) else ()


def _counters() -> tuple[tuple[str, int], ...]:
    counts = ctx.service.counts()
    with st.container(horizontal=True, gap="medium"):
        st.metric("All runs", sum(counts.values()), width="content")
        for name in STATUS_FILTERS[1:]:
            st.metric(ui.STATUS_STYLE[name][0], counts.get(name, 0), width="content")
        if counts.get("broken"):
            st.metric("Broken", counts["broken"], width="content")
    return _moving(counts)


counts = ctx.service.counts()
ui.polling_fragment("history_counts", _counters, _moving(counts))

with st.container(horizontal=True, vertical_alignment="bottom"):
    status = st.pills(
        "Status",
        STATUS_FILTERS,
        default="all",
        required=True,
        format_func=lambda s: "All" if s == "all" else ui.STATUS_STYLE[s][0],
        key="vs_status_filter",
    )
    query = st.text_input(
        "Search",
        key="vs_search",
        placeholder="run id or image name",
        help="Finds runs whose id or any image file name contains this text.",
    ).strip()
if counts.get("broken"):
    st.caption(
        f"⚠️ {counts['broken']} run(s) have damaged metadata; they are listed as broken "
        "and can be opened to delete them."
    )


def _rows(listing: RunPage) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {
            "Run": run.run_id,
            "Status": ui.status_label(run),
            "Images": len(run.images),
            "Requested": ui.fmt_time(run.requested_at),
            "Duration": ui.fmt_duration(run.duration_s),
            "Note": run.error.splitlines()[0] if run.error else "",
        }
        for run in listing.runs
    ]
    rows += [
        {
            "Run": broken.run_id,
            "Status": "Broken",
            "Images": None,
            "Requested": "—",
            "Duration": "—",
            "Note": broken.reason.removeprefix(f"Run {broken.run_id}: "),
        }
        for broken in listing.broken
    ]
    rows.sort(key=lambda row: row["Run"], reverse=True)  # ids sort by creation time
    return rows


def _active_ids(listing: RunPage) -> tuple[str, ...]:
    return tuple(run.run_id for run in listing.runs if run.is_active)


def _runs_table(
    statuses: str | None, query: str, page: int, pages: int, total: int
) -> tuple[str, ...]:
    offset = (page - 1) * PAGE_SIZE
    listing = ctx.service.list_runs(statuses, query, limit=PAGE_SIZE, offset=offset)
    rows = _rows(listing)
    ids = [row["Run"] for row in rows]
    # The selection is a row index: a table whose rows changed (a run left the filter) is a new
    # widget with no selection, so a stale index never opens another run than the one chosen.
    digest = hashlib.sha1("\n".join(ids).encode(), usedforsecurity=False).hexdigest()[:12]
    table_key = f"vs_table_{statuses}_{query}_{page}_{digest}"
    st.caption(
        f"Runs {offset + 1}–{offset + len(rows)} of {total}, newest first"
        + (f" (page {page} of {pages})" if pages > 1 else "")
        + ". Select a row to open the run."
    )
    event = st.dataframe(
        rows,
        key=table_key,
        hide_index=True,
        placeholder="—",
        on_select="rerun",
        selection_mode="single-row",
        column_config={
            "Run": st.column_config.TextColumn("Run", width="medium"),
            "Images": st.column_config.NumberColumn("Images", width="small"),
            "Note": st.column_config.TextColumn("Note", width="large"),
        },
    )
    picked_rows = event.selection.rows
    picked = ids[picked_rows[0]] if picked_rows and picked_rows[0] < len(ids) else None
    last_key, last_pick = st.session_state.get("vs_table_pick", (table_key, None))
    st.session_state["vs_table_pick"] = (table_key, picked)
    if picked != (last_pick if last_key == table_key else None):
        # The user picked (or unpicked) a row: open that run below, outside this fragment.
        st.session_state.pop("vs_confirm_delete", None)
        if picked is not None:
            st.query_params["run"] = picked
        elif "run" in st.query_params:
            del st.query_params["run"]
        st.rerun()
    return _active_ids(listing)


statuses = None if status in (None, "all") else status
total = ctx.service.list_runs(statuses, query, limit=0).total
if total == 0:
    if statuses is None and not query:
        st.info("No runs yet: start one on the New run page.")
        st.page_link(ui.NEW_RUN_PAGE, label="New run", icon=":material/add_a_photo:")
    else:
        st.info("No run matches this filter.")
else:
    table_area = st.container()
    pages = math.ceil(total / PAGE_SIZE)
    page = 1
    if pages > 1:
        page = st.pagination(pages, key=f"vs_page_{statuses}_{query}", width="stretch")
    first = ctx.service.list_runs(statuses, query, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    with table_area:
        ui.polling_fragment(
            "history_table", _runs_table, _active_ids(first), statuses, query, page, pages, total
        )

ui.comparison(ctx)

shown = st.query_params.get("run")
if shown is not None:
    st.divider()
    ui.run_detail(ctx, shown)
