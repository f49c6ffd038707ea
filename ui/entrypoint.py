"""The one place that relies on Streamlit's pages/-folder switch (Streamlit 1.67 has no public one).

With a `pages/` folder beside app.py, Streamlit runs a requested page file on its own until
st.navigation has been called once in the process (a fresh server's first visitor to /history
would get a page without app.py's config and sidebar). The switch is the class attribute
`PagesManager.uses_pages_directory`; tests/test_entrypoint.py fails loudly if Streamlit renames it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

__all__ = ["navigation_assumed", "require_entrypoint"]


def require_entrypoint() -> None:
    """Rerun through app.py when Streamlit ran this page on its own (its pages/ folder mode)."""
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False  # what st.navigation in app.py sets
        st.rerun()


@contextlib.contextmanager
def navigation_assumed() -> Iterator[None]:
    """Run every AppTest run as a server runs once app.py has called st.navigation.

    AppTest forgets st.navigation between runs, so each page run would start in folder mode and
    be rerun through app.py, dropping a click made for that run (tests and benchmarks use this).
    """
    original = PagesManager.__init__

    def init(self: PagesManager, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = init  # type: ignore[method-assign]
    try:
        yield
    finally:
        PagesManager.__init__ = original  # type: ignore[method-assign]
