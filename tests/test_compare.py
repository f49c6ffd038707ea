"""Comparing runs in the core: references, what differs, refusals."""

from __future__ import annotations

import pytest

from tests.helpers_service import running, service_on
from vggt_core import InvalidRunId, RunNotFound, RunStatus, VGGTSettings
from vggt_core.compare import parse_ref
from vggt_core.local_space import write_sample_images


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("run_1700000000000_abc123", ("run_1700000000000_abc123", None)),
        ("run_1700000000000_abc123@2", ("run_1700000000000_abc123", 2)),
        (" run_1700000000000_abc123@v12 ", ("run_1700000000000_abc123", 12)),
    ],
)
def test_references_name_a_run_and_maybe_a_version(text, expected):
    assert parse_ref(text) == expected


@pytest.mark.parametrize(
    "text", ["", "run_1", "../run_1700000000000_abc123", "run_1700000000000_abc123@0", "x@1"]
)
def test_other_references_are_refused_in_words(text):
    with pytest.raises(InvalidRunId, match="not a run to compare"):
        parse_ref(text)


def test_differences_are_named_and_missing_versions_refused(tmp_path, local_space):
    files = [(p.name, p.read_bytes()) for p in write_sample_images(tmp_path / "i", count=2)]
    with running(service_on(tmp_path / "s", local_space.url)) as service:
        ids = []
        for settings in (VGGTSettings(), VGGTSettings(mask_black_bg=True)):
            run = service.wait(service.submit(settings, files).run_id, timeout=120)
            assert run.status is RunStatus.completed, run.error
            ids.append(run.run_id)
        found = service.compare(ids)
        assert [i.version for i in found.items] == [1, 1]
        assert "mask_black_bg" in found.differs and "conf_threshold" not in found.differs
        assert found.items[0].points and found.items[0].cameras == 2
        with pytest.raises(RunNotFound, match="no version 2"):
            service.compare([ids[0], f"{ids[1]}@2"])
        with pytest.raises(InvalidRunId, match="at most 6"):
            service.compare([ids[0]] * 7)
