"""Compare on the History page: the chosen runs or versions side by side, differences marked."""

from __future__ import annotations

import streamlit as st

from vggt_core import COMPARED_FIELDS, Comparison, RunVersion, VGGTError, VGGTRun

from .app_context import AppContext
from .common import MODE_LABELS, fmt_bytes, md_escape
from .preview import preview

PARAM = "compare"


def compare_refs() -> list[str]:
    """The runs or versions chosen for comparison (`run_…@2`), from the page's link."""
    raw = st.query_params.get(PARAM, "")
    return [ref for ref in raw.split(",") if ref][:6]


def _set_refs(refs: list[str]) -> None:
    if refs:
        st.query_params[PARAM] = ",".join(refs)
    elif PARAM in st.query_params:
        del st.query_params[PARAM]


def add_to_compare(run: VGGTRun, version: RunVersion | None) -> None:
    """A button that puts this run's shown version on the comparison."""
    if version is None:
        return
    ref = f"{run.run_id}@{version.number}"
    refs = compare_refs()
    if ref in refs:
        st.caption(f"v{version.number} is on the comparison above.")
        return
    if st.button(
        "Add to compare",
        key=f"compare_add_{ref}",
        icon=":material/compare:",
        help="Put this version beside other runs or versions to compare them.",
    ):
        _set_refs([*refs, ref])
        st.rerun()


def _cell(name: str, value: object) -> str:
    if value is None:
        return "—"
    if name == "prediction_mode":
        return MODE_LABELS.get(str(value), str(value))
    if name == "frame":
        return "all"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if name == "bytes_sent" and isinstance(value, int):
        return fmt_bytes(value)
    if isinstance(value, int):
        return f"{value:,}"
    return md_escape(str(value))


def _table(comparison: Comparison) -> None:
    items = comparison.items
    head = "| | " + " | ".join(f"**{md_escape(i.label)}**" for i in items) + " |"
    rows = [head, "|---" * (len(items) + 1) + "|"]
    for name, label in COMPARED_FIELDS.items():
        values = [_cell(name, i.value(name)) for i in items]
        if name == "frame":
            values = ["all" if i.frame is None else f"{i.frame} only" for i in items]
        marked = name in comparison.differs
        shown = [f"**{v}**" if marked else v for v in values]
        rows.append(f"| {'≠ ' if marked else ''}{label} | " + " | ".join(shown) + " |")
    st.markdown("\n".join(rows))
    st.caption("≠ marks what differs. Each preview opens on the same default viewpoint.")


def _poses(comparison: Comparison) -> None:
    if comparison.poses:
        rows = [
            "| Cameras of | against | cameras | rotation (median / max) | centres (median / max) |",
            "|---|---|---|---|---|",
        ]
        for p in comparison.poses:
            rows.append(
                f"| {md_escape(p.item)} | {md_escape(p.reference)} | {p.cameras} "
                f"| {p.rotation_deg_median:.3f}° / {p.rotation_deg_max:.3f}° "
                f"| {p.translation_median:.2%} / {p.translation_max:.2%} of the scene |"
            )
        st.markdown("\n".join(rows))
        st.caption(
            "Poses from the camera cones, both seen from their first camera and brought to one "
            "scale; centre offsets as a fraction of the reference scene's size."
        )
    for note in comparison.pose_notes:
        st.caption(md_escape(f"Cameras not compared: {note}"))


def comparison(ctx: AppContext) -> None:
    """The comparison of the chosen runs or versions, when there are any."""
    refs = compare_refs()
    if not refs:
        return
    st.divider()
    with st.container(horizontal=True, vertical_alignment="center"):
        st.subheader(f"Compare ({len(refs)})", anchor=False)
        if st.button("Clear", key="compare_clear", icon=":material/clear_all:"):
            _set_refs([])
            st.rerun()
    if len(refs) < 2:
        st.caption(f"{refs[0]} is chosen; add another run or version from its page to compare.")
        return
    try:
        found = ctx.service.compare(refs)
    except VGGTError as exc:
        st.error(md_escape(str(exc)))
        if st.button("Remove the last one", key="compare_pop"):
            _set_refs(refs[:-1])
            st.rerun()
        return
    _table(found)
    _poses(found)
    budget = max(ctx.settings.preview_points // len(found.items), 5_000)
    columns = st.columns(min(len(found.items), 3))
    for index, item in enumerate(found.items):
        with columns[index % len(columns)]:
            st.markdown(f"**{md_escape(item.label)}**")
            run = ctx.service.get(item.run_id)
            preview(
                ctx.service,
                run,
                budget,
                key=f"compare_preview_{item.run_id}_{item.version}",
                version=run.version(item.version),
            )
            if st.button("Remove", key=f"compare_remove_{index}", icon=":material/close:"):
                _set_refs([r for i, r in enumerate(refs) if i != index])
                st.rerun()
