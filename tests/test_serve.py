"""`photocritic serve`: endpoints, limits, batching, and the web page in a real browser."""

import io
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import photocritic
from photocritic.serving import Limits, create_app

from conftest import REPO, browser_page, jpeg_bytes, needs_chromium, photo, served, write_broken_files

EXAMPLES = sorted((REPO / "examples").glob("*.jpg"))


def _client(critic, **kw):
    from fastapi.testclient import TestClient

    limits = kw.pop("limits", None)
    return TestClient(create_app(critic, limits, **kw))


def _png(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _files(paths):
    return [("files", (Path(p).name, Path(p).read_bytes(), "application/octet-stream")) for p in paths]


@pytest.fixture(scope="module")
def lite_client(lite):
    with _client(lite) as c:
        yield c


def test_score_rows_equal_the_cli_rows(lite, lite_client, tmp_path):
    """One row per upload with the CLI's fields; a request with some bad files
    gets 200 and their statuses; one with only bad files a 4xx with the rows."""
    broken = write_broken_files(tmp_path / "bad")
    paths = [*EXAMPLES, *(tmp_path / "bad" / n for n in sorted(broken) if (tmp_path / "bad" / n).is_file())]
    r = lite_client.post("/score", files=_files(paths))
    assert r.status_code == 200
    got = r.json()["rows"]
    ref = lite.score([str(p) for p in paths])
    assert [g["path"] for g in got] == [p.name for p in paths]
    assert [g["status"] for g in got] == [x.status for x in ref]
    for g, x in zip(got, ref):
        if x.status == "ok":
            assert g["score"] == pytest.approx(x.score, abs=1e-4)
        else:
            assert g["score"] is None and g["error"].split(":", 1)[1] == x.error.split(":", 1)[1]
    assert set(got[0]) == {"path", "score", "status", "error", "cached"}
    # only bad files: 4xx by kind, the rows still there
    r = lite_client.post("/score", files=_files([tmp_path / "bad" / "text.jpg"]))
    assert r.status_code == 415 and r.json()["rows"][0]["status"] == "not_image" and "error" in r.json()


def test_limits_and_malformed_requests_are_4xx(lite, tmp_path):
    big = jpeg_bytes(photo(1, (900, 700)), quality=95)
    small = jpeg_bytes(photo(2, (64, 48)))
    limits = Limits(max_upload_bytes=len(big) - 1, max_pixels=900 * 700 - 1, max_files=3)
    with _client(lite, limits=limits) as c:
        r = c.post("/score", files=[("files", ("big.jpg", big, "image/jpeg"))])
        assert r.status_code == 413 and "upload limit" in r.json()["error"]
        limits.max_upload_bytes = 10 << 20
        r = c.post("/score", files=[("files", ("big.jpg", big, "image/jpeg"))])
        assert r.status_code == 413 and "900x700" in r.json()["error"]
        r = c.post("/score", files=[("files", (f"{k}.jpg", small, "image/jpeg")) for k in range(4)])
        assert r.status_code == 413 and "4 files" in r.json()["error"]
        r = c.post("/score", files=[("other", ("a.jpg", small, "image/jpeg"))])
        assert r.status_code == 422 and "files" in r.json()["error"]
        r = c.post("/score", content=b"not multipart", headers={"content-type": "text/plain"})
        assert r.status_code == 422
        r = c.post("/score", content=b"x" * 10, headers={"content-length": str(limits.max_request_bytes + 1),
                                                         "content-type": "multipart/form-data; boundary=x"})
        assert r.status_code == 413
        r = c.post("/score", files=[("files", ("empty.jpg", b"", "image/jpeg"))])
        assert r.status_code == 422 and r.json()["rows"][0]["status"] == "empty"
        assert c.post("/explain", files=[("files", ("a.jpg", small, "image/jpeg"))]).status_code == 400
        assert c.post("/critique", files=[("files", ("a.jpg", small, "image/jpeg"))]).status_code == 400
        h = c.get("/healthz").json()
        assert h["status"] == "ok" and h["in_flight"] == 0
        m = c.get("/models").json()
        assert m["models"][0]["name"] == "lite" and m["limits"]["max_files"] == 3
        assert c.get("/openapi.json").json()["paths"].keys() >= {"/score", "/explain", "/critique", "/models"}
        assert "photocritic API" in c.get("/docs").text and "drop" in c.get("/").text.lower()


def test_a_chunked_upload_past_the_limit_is_refused_while_it_streams(lite):
    """Without Content-Length (chunked) the body is counted as it arrives:
    413 with the JSON error, the rest never read; the server goes on."""
    import asyncio

    limits = Limits(max_upload_bytes=100_000, max_files=2)
    app = create_app(lite, limits)
    head = (b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n")

    def body():  # a generator: httpx sends it chunked, with no Content-Length
        yield head
        yield b"\xff" * (4 << 20)
        yield b"\r\n--x--\r\n"

    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        r = c.post("/score", content=body(), headers={"content-type": "multipart/form-data; boundary=x"})
        assert r.status_code == 413 and "without Content-Length" in r.json()["error"]
        small = jpeg_bytes(photo(2, (64, 48)))
        assert c.post("/score", files=[("files", ("a.jpg", small, "image/jpeg"))]).status_code == 200

    # straight through ASGI, an endless body: read only to just past the limit
    chunk, reads, sent = 1 << 16, [0], []

    async def receive():
        reads[0] += 1
        return {"type": "http.request", "body": head if reads[0] == 1 else b"\0" * chunk, "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/score", "raw_path": b"/score", "root_path": "", "query_string": b"",
             "headers": [(b"content-type", b"multipart/form-data; boundary=x")], "server": ("t", 80),
             "client": ("c", 1)}
    asyncio.run(app(scope, receive, send))
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [413]
    assert reads[0] <= limits.max_request_bytes // chunk + 3


def test_concurrent_requests_share_batches_in_flight_limit_and_timeout(lite):
    """Concurrent requests are scored in shared batches with the same scores
    as alone; past max_in_flight a request gets 429; past the timeout 503."""
    data = [jpeg_bytes(photo(k, (96, 80))) for k in range(8)]
    alone = [float(x) for x in lite.score([Image.open(io.BytesIO(d)) for d in data])]
    with _client(lite, batch_size=8, max_wait_ms=300) as c:
        out = [None] * 8

        def go(k):
            out[k] = c.post("/score", files=[("files", (f"{k}.jpg", data[k], "image/jpeg"))])

        threads = [threading.Thread(target=go, args=(k,)) for k in range(8)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert [o.status_code for o in out] == [200] * 8
        np.testing.assert_allclose([o.json()["rows"][0]["score"] for o in out], alone, atol=1e-4)
        h = c.get("/healthz").json()
        assert h["images"] == 8 and h["batches"] < 8  # batched across requests
    with _client(lite, limits=Limits(max_in_flight=1), max_wait_ms=600) as c:
        codes = []
        threads = [threading.Thread(target=lambda: codes.append(
            c.post("/score", files=[("files", ("a.jpg", data[0], "image/jpeg"))]).status_code)) for _ in range(2)]
        threads[0].start()
        time.sleep(0.3)
        threads[1].start()
        [t.join() for t in threads]
        assert sorted(codes) == [200, 429]
    with _client(lite, limits=Limits(timeout_s=0.2), max_wait_ms=1500) as c:
        r = c.post("/score", files=[("files", ("a.jpg", data[0], "image/jpeg"))])
        assert r.status_code == 503 and "longer than" in r.json()["error"]
        time.sleep(1.5)
        assert c.get("/healthz").status_code == 200


def test_explain_endpoint_matches_the_api(tiny_clip_dir):
    critic = photocritic.load(str(tiny_clip_dir), precision="fp32")
    ims = [photo(k, (96, 80)) for k in range(3)]
    ref = critic.explain(ims)
    with _client(critic) as c:
        assert c.get("/models").json()["models"][0]["explain"] is True
        r = c.post("/explain", files=[("files", (f"{k}.png", _png(im), "image/png"))
                                      for k, im in enumerate(ims)] + [("files", ("x.jpg", b"nope", "image/jpeg"))])
        assert r.status_code == 200
        rows = r.json()["rows"]
        assert [x["status"] for x in rows] == ["ok"] * 3 + ["not_image"]
        for got, want in zip(rows, ref):
            assert got["path"] == f"{rows.index(got)}.png"
            for a in ref.names:  # lossless PNG: the same pixels as the PIL image itself
                assert got[a] == pytest.approx(want.attributes[a], abs=1e-4)


# -- the web page in Debian's chromium -----------------------------------------------


@needs_chromium
def test_web_page_ranks_dropped_photos_in_chromium(trained, tmp_path):
    """Upload photos through the page's file input; the gallery shows them in
    the order of the CLI's scores, with the scores and distributions; a bad
    file is listed as not scored. The screenshot is saved for a person to see."""
    critic = photocritic.load(str(trained["nima"]), precision="fp32")  # scores and distributions
    photos = [*EXAMPLES, tmp_path / "broken.jpg"]
    photos[-1].write_bytes(b"not a photo")
    ref = critic.score([str(p) for p in photos])
    want = [Path(r.path).name for r in sorted((r for r in ref if r.status == "ok"), key=lambda r: -r.score)]
    with served(critic) as url, browser_page() as page:
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('model').textContent.includes('nima')")
        page.set_input_files("#files", [str(p) for p in photos])
        page.wait_for_selector("#failed li", timeout=30000)
        page.wait_for_function(f"document.querySelectorAll('#gallery .card').length === {len(want)}")
        shown = page.eval_on_selector_all("#gallery .card", "cs => cs.map(c => [c.dataset.name, "
                                          "parseFloat(c.dataset.score), c.querySelectorAll('.dist span').length])")
        failed = page.inner_text("#failed")
        shot = Path(os.environ.get("PHOTOCRITIC_SCREENSHOTS", REPO / "results")) / "serve-page.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
    assert [s[0] for s in shown] == want
    by_name = {Path(r.path).name: r.score for r in ref}
    np.testing.assert_allclose([s[1] for s in shown], [by_name[n] for n in want], atol=1e-3)
    assert all(s[2] == 10 for s in shown)  # a 10-bin distribution per photo
    assert "broken.jpg" in failed and "not_image" in failed
    assert shot.stat().st_size > 10_000
