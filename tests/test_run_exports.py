"""A run's exports through the service: each format of a version, made once, read back by its
own reader; the run's zip; what cannot be made says why and leaves nothing."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator

import pycolmap
import pytest
import trimesh

from tests.helpers_service import running, service_on
from vggt_core import RenderStatus, RunStatus, StudioService, VGGTSettings
from vggt_core.errors import ExportError
from vggt_core.local_space import LocalSpace, StandInOptions


@pytest.fixture(scope="module")
def npz_space() -> Iterator[LocalSpace]:
    with LocalSpace(StandInOptions(return_predictions=True)) as space:
        yield space


def completed(service: StudioService, images, **settings) -> str:
    run = service.wait(service.submit(VGGTSettings(**settings), images).run_id, timeout=120)
    assert run.status is RunStatus.completed, run.error
    return run.run_id


def test_each_format_of_a_version_reads_back_and_is_made_once(tmp_path, local_space, images):
    with running(service_on(tmp_path, local_space.url)) as service:
        run_id = completed(service, images)
        points = service.get(run_id).version().points

        colmap = service.export(run_id, "colmap")
        assert colmap.name == "v1_colmap.zip" and colmap.parent.name == "exports"
        with zipfile.ZipFile(colmap) as archive:
            archive.extractall(tmp_path / "colmap")
        model = pycolmap.Reconstruction(tmp_path / "colmap" / "sparse" / "0")
        assert model.num_images() == 3 and model.num_points3D() > 0
        original = pycolmap.Reconstruction(tmp_path / "colmap" / "sparse_original" / "0")
        assert {c.width for c in original.cameras.values()} == {160}  # the photos' own size

        cameras = json.loads(service.export(run_id, "cameras").read_text())
        assert len(cameras["cameras"]) == 3 and cameras["source"] == "glb"
        ply = trimesh.load(service.export(run_id, "ply"))
        assert len(ply.vertices) == points
        with zipfile.ZipFile(service.export(run_id, "nerfstudio")) as archive:
            transforms = json.loads(archive.read("transforms.json"))
        assert len(transforms["frames"]) == 3

        before = colmap.stat().st_mtime_ns
        assert service.export(run_id, "colmap").stat().st_mtime_ns == before  # made once


def test_a_version_without_cameras_says_to_re_render_and_leaves_nothing(
    tmp_path, local_space, images
):
    with running(service_on(tmp_path, local_space.url)) as service:
        run_id = completed(service, images, show_cameras=False)
        with pytest.raises(ExportError, match="re-render it with cameras on"):
            service.export(run_id, "colmap")
        assert list((tmp_path / "runs" / run_id / "exports").iterdir()) == []
        version = service.rerender(run_id, VGGTSettings(show_cameras=True))
        assert service.wait_render(run_id, version.number, 60).status is RenderStatus.completed
        assert service.export(run_id, "colmap").name == "v2_colmap.zip"


def test_the_run_zip_holds_metadata_images_versions_and_exports(tmp_path, local_space, images):
    with running(service_on(tmp_path, local_space.url)) as service:
        run_id = completed(service, images)
        version = service.rerender(run_id, VGGTSettings(conf_threshold=20.0))
        service.wait_render(run_id, version.number, 60)
        service.export(run_id, "cameras")
        with zipfile.ZipFile(service.export_run(run_id)) as archive:
            names = set(archive.namelist())
            assert json.loads(archive.read("metadata.json"))["runId"] == run_id
        assert {"scene.glb", "versions/v2.glb", "exports/v2_cameras.json"} <= names
        assert {f"images/{name}" for name, _ in images} <= names
        assert not [n for n in names if n.rsplit("/", 1)[-1].startswith(".")]
        assert f"exports/{run_id}.zip" not in names


def test_a_run_with_predictions_exports_the_models_own_cameras(tmp_path, npz_space, images):
    with running(service_on(tmp_path, npz_space.url)) as service:
        run_id = completed(service, images)
        cameras = json.loads(service.export(run_id, "cameras").read_text())
        assert cameras["source"] == "predictions" and len(cameras["cameras"]) == 3


def test_the_command_line_exports_a_stored_run(tmp_path, local_space, images, capsys):
    from vggt_core.cli import main

    with running(service_on(tmp_path / "storage", local_space.url)) as service:
        run_id = completed(service, images)
    storage = str(tmp_path / "storage")
    out = tmp_path / "out"
    args = ["export", "--run", run_id, "--storage", storage, "--out", str(out)]
    assert main([*args, "--format", "colmap"]) == 0
    assert (out / f"{run_id}_v1_colmap.zip").is_file()
    assert main([*args, "--format", "run"]) == 0
    assert (out / f"{run_id}.zip").is_file()
    assert main([*args, "--format", "ply", "--version", "4"]) == 1
    assert f"Run {run_id} has no version 4 to export" in capsys.readouterr().err
    assert main(["export", "--glb", "x.glb", "--format", "run", "--out", str(out)]) == 2
