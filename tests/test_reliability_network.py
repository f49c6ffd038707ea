"""The network, as a hostile backend may make it: the token stays with the backend's own origin,
every wait ends at its deadline or on Cancel, and a download is judged as it arrives.

The backend is a raw HTTP server on 127.0.0.1 (tests/helpers_http.py) that poses as a Gradio
app for gradio_client's Client, so each test decides every byte the client sees."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers_http import (
    SESSION_COOKIE,
    RawServer,
    pose_as_gradio,
    redirect_to,
    self_signed_certificate,
    serve_bytes,
    server_tls,
    stream,
    threads_named,
    tiny_glb,
    trickle,
)

from vggt_core import _net as net_module
from vggt_core._net import sends_credentials
from vggt_core.errors import SpaceCancelled, SpaceError
from vggt_core.space import (
    FileRef,
    VGGTSpace,
    glb_size_cap,
    predictions_size_cap,
)

TOKEN = "hf_FAKEnetworkTOKENzq8Tk3vXw9Lm"
FILE = "/gradio_api/file=scene.glb"
RETURNS_WITHIN_S = 60  # generous: the deadlines below are a few seconds
COOKIE = "=".join(SESSION_COOKIE)


@pytest.fixture
def backend() -> Iterator[RawServer]:
    with pose_as_gradio(RawServer()) as server:
        yield server


@pytest.fixture
def elsewhere() -> Iterator[RawServer]:
    """Another origin: the same host on another port."""
    with RawServer() as server:
        yield server


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    made = self_signed_certificate(tmp_path_factory.mktemp("tls"))
    if made is None:
        pytest.skip("the openssl command is needed to make a certificate")
    return made


@pytest.fixture
def tls_backend(certificate, monkeypatch) -> Iterator[RawServer]:
    """The backend over https, its self-signed certificate trusted by this client only."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    net_module.tls_context.cache_clear()
    try:
        with pose_as_gradio(RawServer(tls=server_tls(*certificate))) as server:
            yield server
    finally:
        monkeypatch.undo()
        net_module.tls_context.cache_clear()


def space_for(server: RawServer, **kwargs) -> VGGTSpace:
    kwargs.setdefault("connect_timeout_s", 5.0)
    kwargs.setdefault("read_timeout_s", 30.0)  # longer than every deadline: only those end waits
    return VGGTSpace(server.url, TOKEN, **kwargs)


def carried(seen) -> list[tuple[bool, bool]]:
    """Per request: (token sent, session cookie sent)."""
    return [
        (TOKEN in s.headers.get("x-hf-authorization", ""), COOKIE in s.headers.get("cookie", ""))
        for s in seen
    ]


def cancel_after(seconds: float) -> threading.Event:
    event = threading.Event()
    timer = threading.Timer(seconds, event.set)
    timer.daemon = True
    timer.start()
    return event


def settled(prefix: str, timeout: float = 30.0) -> list[threading.Thread]:
    deadline = time.monotonic() + timeout
    while (left := threads_named(prefix)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


# --- 1. the token goes to the backend's own origin only -----------------------------------------


def test_a_file_on_the_backend_gets_the_token_and_cookie(backend, tmp_path):
    backend.routes[FILE] = serve_bytes(tiny_glb())
    with space_for(backend).session() as session:
        size = session.download(FileRef(backend.url + FILE, "scene.glb"), tmp_path / "scene.glb")
    assert size == len(tiny_glb()) == (tmp_path / "scene.glb").stat().st_size
    assert carried(backend.requests_to(FILE)) == [(True, True)]


def test_a_file_on_another_origin_is_fetched_without_credentials(backend, elsewhere, tmp_path):
    elsewhere.routes[FILE] = serve_bytes(tiny_glb())
    with space_for(backend).session() as session:
        session.download(FileRef(elsewhere.url + FILE, "scene.glb"), tmp_path / "scene.glb")
    assert (tmp_path / "scene.glb").read_bytes() == tiny_glb()
    assert carried(elsewhere.requests_to(FILE)) == [(False, False)]
    assert carried(backend.requests_to("/config")) == [(True, False)]  # the token was in play


def test_each_redirect_hop_is_judged_by_its_own_origin(backend, elsewhere, tmp_path):
    """backend -> elsewhere (302) -> backend (307) -> elsewhere (308) -> the file."""
    backend.routes["/first"] = redirect_to(elsewhere.url + "/second")
    elsewhere.routes["/second"] = redirect_to(backend.url + "/third", 307)
    backend.routes["/third"] = redirect_to(elsewhere.url + FILE, 308)
    elsewhere.routes[FILE] = serve_bytes(tiny_glb())
    with space_for(backend).session() as session:
        session.download(FileRef(backend.url + "/first", "scene.glb"), tmp_path / "scene.glb")
    assert (tmp_path / "scene.glb").read_bytes() == tiny_glb()
    assert carried(backend.requests_to("/first")) == [(True, True)]
    assert carried(elsewhere.requests_to("/second")) == [(False, False)]
    assert carried(backend.requests_to("/third")) == [(True, True)]
    assert carried(elsewhere.requests_to(FILE)) == [(False, False)]


def test_a_relative_redirect_stays_on_its_origin(backend, tmp_path):
    backend.routes["/moved"] = redirect_to(FILE, 301)
    backend.routes[FILE] = serve_bytes(tiny_glb())
    with space_for(backend).session() as session:
        session.download(FileRef(backend.url + "/moved", "scene.glb"), tmp_path / "scene.glb")
    assert carried(backend.requests_to(FILE)) == [(True, True)]


def test_endless_redirects_are_refused_after_a_few_hops(backend, elsewhere, tmp_path):
    backend.routes["/loop"] = redirect_to(elsewhere.url + "/loop")
    elsewhere.routes["/loop"] = redirect_to(backend.url + "/loop")
    with space_for(backend).session() as session, pytest.raises(SpaceError) as info:
        session.download(FileRef(backend.url + "/loop", "scene.glb"), tmp_path / "scene.glb")
    assert info.value.kind == "bad_download"
    assert "redirect" in str(info.value)
    hops = backend.requests_to("/loop") + elsewhere.requests_to("/loop")
    assert 2 <= len(hops) <= 6
    assert not list(tmp_path.iterdir())


def test_a_download_address_that_is_not_http_is_refused(backend, tmp_path):
    backend.routes["/away"] = redirect_to("file:///etc/passwd")
    with space_for(backend).session() as session:
        for url in ("file:///etc/passwd", "data:,glTF", "javascript:x", backend.url + "/away"):
            with pytest.raises(SpaceError) as info:
                session.download(FileRef(url, "scene.glb"), tmp_path / "scene.glb")
            assert info.value.kind == "bad_download"
            assert "not an http(s) address" in str(info.value)


@pytest.mark.parametrize(
    ("url", "src", "allowed"),
    [
        ("https://vggt.hf.space/gradio_api/file=a.glb", "https://vggt.hf.space/", True),
        ("https://VGGT.hf.space:443/file=a.glb", "https://vggt.hf.space/", True),
        ("https://vggt.hf.space:8443/file=a.glb", "https://vggt.hf.space/", False),
        ("http://vggt.hf.space/file=a.glb", "https://vggt.hf.space/", False),  # downgrade
        ("https://cdn.example.com/a.glb", "https://vggt.hf.space/", False),
        ("https://vggt.hf.space.evil.com/a.glb", "https://vggt.hf.space/", False),
        ("https://evil.com/https://vggt.hf.space/", "https://vggt.hf.space/", False),
        ("http://127.0.0.1:7860/file=a.glb", "http://127.0.0.1:7860/", True),
        ("http://localhost:7860/file=a.glb", "http://localhost:7860/", True),
        ("http://[::1]:7860/file=a.glb", "http://[::1]:7860/", True),
        ("http://127.0.0.1:7861/file=a.glb", "http://127.0.0.1:7860/", False),
        ("http://localhost:7860/file=a.glb", "http://127.0.0.1:7860/", False),
        ("http://192.168.1.20:7860/file=a.glb", "http://192.168.1.20:7860/", False),  # plain http
        ("http://gradio.example.com/a.glb", "http://gradio.example.com/", False),
        ("ftp://127.0.0.1:7860/a.glb", "http://127.0.0.1:7860/", False),
        ("not a url", "https://vggt.hf.space/", False),
    ],
)
def test_which_addresses_may_carry_credentials(url, src, allowed):
    assert sends_credentials(url, src) is allowed


@pytest.mark.parametrize(
    ("backend", "sent"),
    [
        ("facebook/vggt", True),
        ("https://vggt.example.com", True),
        ("http://127.0.0.1:7860", True),
        ("http://localhost:7860", True),
        ("http://192.168.1.20:7860", False),
        ("http://gradio.example.com", False),
    ],
)
def test_the_token_is_never_sent_over_plain_http_off_this_machine(backend, sent):
    assert VGGTSpace(backend, TOKEN).has_token is sent
    assert VGGTSpace(backend, None).has_token is False


# --- 2. every wait has a deadline, and Cancel ends it --------------------------------------------


def test_connecting_to_a_server_that_trickles_ends_at_the_deadline():
    with RawServer({"/config": trickle()}) as slow:
        space = space_for(slow, open_timeout_s=2.0)
        started = time.monotonic()
        with pytest.raises(SpaceError) as info, space.session():
            pass
        assert time.monotonic() - started < RETURNS_WITHIN_S
        assert info.value.kind == "timeout"
        assert str(info.value) == (
            f"The backend {slow.url} did not answer within 2 s while connecting; retry later."
        )
        # The helper that was connecting is not left behind: its socket was shut down.
        assert settled("vggt-connect") == []


def test_cancel_ends_connecting_to_a_server_that_trickles():
    with RawServer({"/config": trickle()}) as slow:
        space = space_for(slow, open_timeout_s=3600.0)
        started = time.monotonic()
        with pytest.raises(SpaceCancelled), space.session(should_cancel=cancel_after(1).is_set):
            pass
        assert time.monotonic() - started < RETURNS_WITHIN_S
        assert settled("vggt-connect") == []


def test_a_download_whose_headers_trickle_ends_at_the_deadline(backend, tmp_path):
    backend.routes[FILE] = trickle()
    with space_for(backend, download_timeout_s=2.0).session() as session:
        started = time.monotonic()
        with pytest.raises(SpaceError) as info:
            session.download(FileRef(backend.url + FILE, "scene.glb"), tmp_path / "scene.glb")
        assert time.monotonic() - started < RETURNS_WITHIN_S
    assert info.value.kind == "timeout"
    assert str(info.value) == "Downloading the GLB took longer than 2 s; retry later."
    assert not list(tmp_path.iterdir())
    assert settled("vggt-watchdog") == []


def test_cancel_ends_a_download_waiting_for_headers(backend, tmp_path):
    backend.routes[FILE] = trickle()
    with space_for(backend, download_timeout_s=3600.0).session() as session:
        started = time.monotonic()
        with pytest.raises(SpaceCancelled):
            session.download(
                FileRef(backend.url + FILE, "scene.glb"),
                tmp_path / "scene.glb",
                should_cancel=cancel_after(1).is_set,
            )
        assert time.monotonic() - started < RETURNS_WITHIN_S
    assert not list(tmp_path.iterdir())


def test_cancel_ends_a_download_whose_body_trickles(backend, tmp_path):
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + tiny_glb()[:12]
    backend.routes[FILE] = trickle(head, interval_s=0.5)
    with (
        space_for(backend, download_timeout_s=3600.0).session() as session,
        pytest.raises(SpaceCancelled),
    ):
        session.download(
            FileRef(backend.url + FILE, "scene.glb"),
            tmp_path / "scene.glb",
            should_cancel=cancel_after(2).is_set,
        )
    assert not list(tmp_path.iterdir())


def test_over_https_the_token_goes_along_and_trickles_end_too(tls_backend, tmp_path):
    """TLS wraps the connection's socket: the watchdog must shut down the wrapped one."""
    tls_backend.routes[FILE] = serve_bytes(tiny_glb())
    tls_backend.routes["/slow"] = trickle()
    with space_for(tls_backend, download_timeout_s=2.0).session() as session:
        assert session.client.src.startswith("https://127.0.0.1:")
        session.download(FileRef(tls_backend.url + FILE, "scene.glb"), tmp_path / "scene.glb")
        assert carried(tls_backend.requests_to(FILE)) == [(True, True)]
        started = time.monotonic()
        with pytest.raises(SpaceError) as info:
            session.download(FileRef(tls_backend.url + "/slow", "scene.glb"), tmp_path / "b.glb")
        assert time.monotonic() - started < RETURNS_WITHIN_S
        assert info.value.kind == "timeout"
        with pytest.raises(SpaceCancelled):
            session.download(
                FileRef(tls_backend.url + "/slow", "scene.glb"),
                tmp_path / "c.glb",
                should_cancel=cancel_after(1).is_set,
            )
    assert settled("vggt-watchdog") == []


def test_connecting_over_https_to_a_server_that_trickles_ends_at_the_deadline(tls_backend):
    tls_backend.routes["/config"] = trickle()
    with pytest.raises(SpaceError) as info, space_for(tls_backend, open_timeout_s=2.0).session():
        pass
    assert info.value.kind == "timeout"
    assert settled("vggt-connect") == []


# --- 4. a download is judged as it arrives --------------------------------------------------------

GARBAGE_TOTAL = 2 * 1024**3  # made lazily, block by block, by the server
MB = 1024 * 1024


def thread_bytes_written() -> int:
    """Bytes this thread has passed to write() (files; sockets here use send(), not counted)."""
    for line in Path("/proc/thread-self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/thread-self/io")


needs_proc_io = pytest.mark.skipif(
    not Path("/proc/thread-self/io").exists(), reason="counts written bytes in /proc"
)


def refused_download(backend: RawServer, tmp_path: Path, kind: str, **kwargs) -> tuple[str, int]:
    """Download FILE from `backend`; return the refusal's message and the bytes written."""
    with space_for(backend, download_timeout_s=120.0).session() as session:
        before = thread_bytes_written()
        with pytest.raises(SpaceError) as info:
            session.download(FileRef(backend.url + FILE, "x"), tmp_path / "out", kind, **kwargs)
        written = thread_bytes_written() - before
    assert info.value.kind == "bad_download", info.value
    assert not list(tmp_path.iterdir())
    print(f"\n{kind}: refused after writing {written:,} bytes: {info.value}")
    return str(info.value), written


@needs_proc_io
def test_two_gigabytes_of_garbage_are_refused_at_the_first_bytes(backend, tmp_path):
    backend.routes[FILE] = stream(b"", GARBAGE_TOTAL)
    message, written = refused_download(backend, tmp_path, "glb")
    assert message == "The backend's download is not a GLB 3D model (wrong file type)."
    assert written < MB


@needs_proc_io
def test_garbage_predictions_are_refused_at_the_first_bytes(backend, tmp_path):
    backend.routes[FILE] = stream(b"", GARBAGE_TOTAL)
    message, written = refused_download(backend, tmp_path, "predictions")
    assert message == "The predictions.npz download is not an .npz archive (wrong file type)."
    assert written < MB


@needs_proc_io
def test_a_glb_declaring_more_than_the_run_can_make_is_refused_at_once(backend, tmp_path):
    cap = glb_size_cap(2)
    head = b"glTF" + (2).to_bytes(4, "little") + (cap + 1).to_bytes(4, "little")
    backend.routes[FILE] = stream(head, GARBAGE_TOTAL)
    message, written = refused_download(backend, tmp_path, "glb", max_bytes=cap)
    assert message == (
        f"The GLB says it is {cap + 1:,} bytes, more than the {cap:,} bytes a model of this "
        "run can be."
    )
    assert written < MB


@needs_proc_io
def test_a_glb_longer_than_its_header_says_is_refused_there(backend, tmp_path):
    head = b"glTF" + (2).to_bytes(4, "little") + (500_000).to_bytes(4, "little")
    backend.routes[FILE] = stream(head, GARBAGE_TOTAL)
    message, written = refused_download(backend, tmp_path, "glb")
    assert message == "The GLB download is longer than the 500,000 bytes its header gives."
    assert written <= 500_000


@needs_proc_io
def test_a_download_past_its_cap_is_refused_there(backend, tmp_path):
    backend.routes[FILE] = stream(b"PK\x03\x04", GARBAGE_TOTAL)
    message, written = refused_download(backend, tmp_path, "predictions", max_bytes=300_000)
    assert message == (
        "The predictions.npz download is larger than 300,000 bytes, more than this run can produce."
    )
    assert written <= 300_000


def test_the_caps_hold_what_a_run_really_makes(tmp_path):
    """The stand-in's GLB and predictions for full-size frames (every point kept, cameras on)
    fit well inside the caps; the caps grow with the frames."""
    import io

    import numpy as np

    from vggt_core.local_space import predictions_to_glb, run_stand_in_model

    frames = 2
    rng = np.random.default_rng(0)
    images = rng.random((frames, 3, 518, 518), dtype=np.float32)
    predictions = run_stand_in_model(images)
    glb = predictions_to_glb(predictions, conf_thres=0.0, show_cam=True).export(file_type="glb")
    npz = io.BytesIO()
    np.savez(npz, **predictions)
    assert len(glb) * 1.5 < glb_size_cap(frames) < 3 * len(glb) + 2 * MB
    assert npz.tell() * 1.5 < predictions_size_cap(frames)
    assert glb_size_cap(1) < glb_size_cap(2) < glb_size_cap(200) < 4 * 1024**3
    assert predictions_size_cap(1) < predictions_size_cap(3)
