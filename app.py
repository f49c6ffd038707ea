"""VGGT Studio: page config, navigation over the pages, and the sidebar (backend, storage).

`streamlit run app.py` finds the `st.App` below and serves, with uvicorn, both this file (the
page script of every session, where `__name__` is "__main__") and the REST API under /api, on
the one StudioService of the process (ui.app_context.shared_service).
"""

from __future__ import annotations

import streamlit as st

if __name__ != "__main__":
    # Imported by `streamlit run` (as the module `app`) to find the server it is to serve. The
    # ui package is imported once the server runs: its caches want Streamlit's runtime.
    import contextlib
    from collections.abc import AsyncIterator
    from typing import Any

    from vggt_core import StudioService
    from vggt_core.api import api_middleware, api_routes

    def _shared_service() -> StudioService:
        from ui.app_context import shared_service

        return shared_service()

    @contextlib.asynccontextmanager
    async def _lifespan(server: Any) -> AsyncIterator[None]:
        from ui.app_context import serve_lifespan

        async with serve_lifespan(server):
            yield

    app = st.App(
        __file__,
        routes=api_routes(_shared_service),
        middleware=api_middleware(),
        lifespan=_lifespan,
    )
else:
    import ui
    from vggt_core import public_backend

    # An emoji tab icon is drawn by the browser; a ":material/…" one is fetched from Google.
    st.set_page_config(page_title="VGGT Studio", page_icon="🧊", layout="wide")

    page = st.navigation(
        [
            st.Page(
                "pages/new_run.py", title="New run", icon=":material/add_a_photo:", default=True
            ),
            st.Page("pages/history.py", title="History", icon=":material/history:"),
        ]
    )
    ctx = ui.context()
    settings = ctx.settings

    with st.sidebar:
        st.markdown("### :material/view_in_ar: VGGT Studio")
        st.caption("3D reconstruction with Meta's VGGT, served by a Hugging Face Space.")

        st.markdown("**Backend**")
        backend = public_backend(settings.backend)
        st.code(backend, language=None, wrap_lines=True)
        if settings.token:
            st.caption(":material/key: HF token: set (sent to the backend, never shown).")
        else:
            st.caption(
                ":material/key_off: HF token: not set. Anonymous calls get the lowest GPU priority "
                "and the smallest quota on the public Space; set `HF_TOKEN` for more."
            )
        checks: dict[str, tuple[bool, str, list[str]]] = st.session_state.setdefault(
            "vs_connection_checks", {}
        )
        if st.button("Check connection", icon=":material/network_check:", width="stretch"):
            with st.spinner(f"Asking {backend}…"):
                report = ctx.service.check()
            checks[settings.backend] = (report.ok, report.summary, report.details)
        if settings.backend in checks:
            ok, summary, details = checks[settings.backend]
            (st.success if ok else st.error)(summary, icon=":material/check:" if ok else None)
            for line in details:
                st.caption(f"• {line}")

        st.markdown("**Storage**")
        st.code(str(ctx.service.storage_root), language=None, wrap_lines=True)
        run_count = ctx.service.run_count()
        st.caption(
            f"{run_count} run{'s' if run_count != 1 else ''} · "
            f"{ui.fmt_bytes(ui.disk_usage(ctx.service))} on disk · "
            f"up to {settings.max_concurrent_runs} at a time"
        )

    page.run()
    ui.forget_shown_flashes()  # reached only when the page ran to its end (no st.rerun)
