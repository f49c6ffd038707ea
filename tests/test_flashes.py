"""Messages queued for the next run of a page survive a live refresh that reruns it first."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def page_with_a_live_refresh() -> None:
    import streamlit as st

    import ui

    if st.button("Act"):
        ui.flash("Done it.", "success")
        st.rerun()
    ui.show_flashes()
    # A live panel that saw the state change reruns the page once more before it ends.
    if st.session_state.pop("state_changed", False):
        st.rerun()
    ui.forget_shown_flashes()


def test_a_message_survives_a_rerun_before_the_page_ended():
    at = AppTest.from_function(page_with_a_live_refresh, default_timeout=60)
    at.run()
    at.session_state["state_changed"] = True
    at.button[0].click().run()
    assert [s.value for s in at.success] == ["Done it."]
    at.run()  # the next run of the page: the message was seen, it is gone
    assert [s.value for s in at.success] == []
