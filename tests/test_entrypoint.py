"""The one private Streamlit switch the app relies on is still there and still means the same."""

from __future__ import annotations

from pathlib import Path

from streamlit.runtime.pages_manager import PagesManager

from ui.entrypoint import navigation_assumed

ROOT = Path(__file__).resolve().parents[1]


def fresh_process(monkeypatch) -> None:
    monkeypatch.setattr(PagesManager, "uses_pages_directory", None)


def test_streamlit_still_has_the_pages_folder_switch(monkeypatch):
    # If this fails, Streamlit renamed what ui/entrypoint.py relies on: find its new name (or a
    # public way) before anything else, or a fresh server's first /history visit loses the sidebar.
    assert "uses_pages_directory" in PagesManager.__dict__
    fresh_process(monkeypatch)
    PagesManager(str(ROOT / "app.py"))
    assert PagesManager.uses_pages_directory is True  # app.py has a pages/ folder beside it


def test_navigation_assumed_leaves_folder_mode_and_restores_it(monkeypatch):
    fresh_process(monkeypatch)
    with navigation_assumed():
        PagesManager(str(ROOT / "app.py"))
        assert PagesManager.uses_pages_directory is False
    fresh_process(monkeypatch)
    PagesManager(str(ROOT / "app.py"))
    assert PagesManager.uses_pages_directory is True
