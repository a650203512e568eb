"""The HTTP service through FastAPI's TestClient: every route, every refusal a short 4xx."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from omnifuse.serve import Limits, create_app

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def client(aligned_model: Path, image_index: Path) -> TestClient:
    return TestClient(create_app(aligned_model, image_index))


@pytest.fixture(scope="module")
def guarded(aligned_model: Path, image_index: Path) -> TestClient:
    return TestClient(create_app(aligned_model, image_index, token=TOKEN))


@pytest.fixture(scope="module")
def rows(collection: Path) -> list[dict]:
    return pq.read_table(collection).to_pylist()


def image_of(collection: Path, rows: list[dict], i: int = 0) -> tuple[str, bytes]:
    path = collection.parent / rows[i]["image"]
    return path.name, path.read_bytes()


def refused(response, status: int) -> str:
    """The one-line detail of a refusal with `status`."""
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail
    return detail


def test_health_and_info(client):
    assert client.get("/health").json() == {"status": "ok", "index": True}
    info = client.get("/info").json()
    assert info["modalities"] == {"image": "image", "text": "text"}
    assert info["columns"] == ["caption", "scene_class"]
    assert info["index"]["modality"] == "image"


def test_docs_and_openapi(client):
    page = client.get("/docs").text
    assert "swagger" in page.lower() and "cdn" not in page  # its scripts are served here
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    assert client.get("/static-offline-docs/swagger-ui.css").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health", "/search", "/embed", "/predict", "/files/{path}"} <= set(paths)


def test_the_page(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="file"' in page.text and 'id="q"' in page.text


def test_search_by_text(client):
    body = client.get("/search", params={"q": "a small green triangle", "k": 5}).json()
    hits = body["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert set(hits[0]["metadata"]) == {"caption", "scene_class"}
    assert hits[0]["url"] == "/files/" + hits[0]["file"]
    posted = client.post("/search", data={"text": "a small green triangle", "k": "5"}).json()
    assert [h["id"] for h in posted["hits"]] == [h["id"] for h in hits]


def test_search_by_image_finds_itself_first(client, collection, rows):
    name, data = image_of(collection, rows, 3)
    response = client.post("/search", files={"file": (name, data, "image/png")}, data={"k": "3"})
    hits = response.json()["hits"]
    assert len(hits) == 3 and hits[0]["id"] == rows[3]["id"]
    assert hits[0]["score"] == pytest.approx(max(h["score"] for h in hits))
    assert response.json()["query"] == {"text": None, "file": name}


def test_search_with_a_filter(client, rows):
    scene = str(rows[0]["scene_class"])
    params = {"q": "a blue circle", "k": 5, "where": f"scene_class={scene}"}
    hits = client.get("/search", params=params).json()["hits"]
    assert hits and all(str(h["metadata"]["scene_class"]) == scene for h in hits)


def test_a_results_file_is_served(client, collection):
    hit = client.get("/search", params={"q": "a square", "k": 1}).json()["hits"][0]
    response = client.get(hit["url"])
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.content == (collection.parent / hit["file"]).read_bytes()


def test_embed_texts_and_images(client, collection, rows):
    name, data = image_of(collection, rows)
    response = client.post(
        "/embed",
        data={"text": ["a red circle", "two squares"]},
        files=[("files", (name, data, "image/png"))],
    )
    out = response.json()["rows"]
    assert [r["id"] for r in out] == ["text-1", "text-2", name]
    assert len(out[0]["text"]) == 16 and len(out[2]["image"]) == 16 and "text" not in out[2]


def test_predict_an_image(client, collection, rows):
    name, data = image_of(collection, rows)
    out = client.post("/predict", files=[("files", (name, data, "image/png"))]).json()["rows"]
    assert out[0]["id"] == name and "scene" in out[0]


def test_uploads_are_deleted_after_the_request(client, collection, rows):
    def folders() -> set[str]:
        return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("omnifuse-serve-")}

    before = folders()
    name, data = image_of(collection, rows)
    assert client.post("/search", files={"file": (name, data)}).status_code == 200
    assert client.post("/search", files={"file": ("x.png", b"not a png")}).status_code == 415
    assert folders() == before


@pytest.mark.parametrize(
    ("name", "data", "status", "says"),
    [
        ("notes.png", b"hello, I am text, not an image", 415, "not an image"),
        ("photo.png", b"RIFF\x10\x00\x00\x00WAVEfmt " + bytes(20), 415, "a WAV audio file"),
        ("virus.exe", b"MZ\x90\x00", 415, "not a file type this model reads"),
        ("empty.png", b"", 400, "empty"),
    ],
)
def test_a_file_that_is_not_what_it_says_is_refused(client, name, data, status, says):
    response = client.post("/search", files={"file": (name, data, "image/png")})
    assert says in refused(response, status)


def test_a_truncated_image_is_refused(client, collection, rows):
    name, data = image_of(collection, rows)
    for route, field in (("/search", "file"), ("/predict", "files"), ("/embed", "files")):
        detail = refused(client.post(route, files={field: (name, data[:120])}), 400)
        assert name in detail and "omnifuse-serve-" not in detail


@pytest.mark.parametrize(
    ("params", "status", "says"),
    [
        ({"q": ""}, 400, "empty query"),
        ({"q": "   "}, 400, "empty query"),
        ({}, 400, "empty query"),
        ({"q": "x", "k": 0}, 422, "k: must be between 1 and 100"),
        ({"q": "x", "k": 101}, 422, "k: must be between 1 and 100"),
        ({"q": "x", "k": "ten"}, 422, "k: "),
        ({"q": "x", "where": "colour=red"}, 400, "no column 'colour'"),
        ({"q": "x", "where": "scene_class"}, 422, "expected column=value"),
        ({"q": "x" * 2001}, 422, "longer than 2000"),
    ],
)
def test_bad_searches_are_refused(client, params, status, says):
    assert says in refused(client.get("/search", params=params), status)


def test_text_and_file_together_or_no_inputs_are_refused(client, collection, rows):
    name, data = image_of(collection, rows)
    both = client.post("/search", data={"text": "a circle"}, files={"file": (name, data)})
    assert "not both" in refused(both, 400)
    assert "no inputs" in refused(client.post("/predict"), 400)
    assert "no inputs" in refused(client.post("/embed", data={}), 400)
    assert "empty text" in refused(client.post("/embed", data={"text": " "}), 400)
    assert "alignment" in refused(client.post("/embed", data={"text": "a", "task": "scene"}), 400)
    assert refused(client.get("/no-such-route"), 404)
    assert refused(client.delete("/search"), 405)


def test_uploads_over_the_limit_are_refused(aligned_model, image_index, collection, rows):
    small = TestClient(create_app(aligned_model, image_index, limits=Limits(upload_bytes=2_000)))
    name, data = image_of(collection, rows)
    big = data + bytes(3_000)  # over the upload limit, inside the body limit
    assert "too large" in refused(small.post("/search", files={"file": (name, big)}), 413)
    huge = bytes(2_000_000)  # over the body limit: refused by its Content-Length
    assert "too large" in refused(small.post("/search", files={"file": (name, huge)}), 413)
    files = [("files", (f"{i}.png", data)) for i in range(17)]
    assert "more than 16" in refused(TestClient(small.app).post("/predict", files=files), 413)


def test_files_never_leave_the_collection(client, collection, rows, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("outside the collection")
    for path in (
        "/files/%2e%2e/%2e%2e/secret.txt",
        "/files/..%2F..%2Fsecret.txt",
        "/files/images/..%2F..%2F..%2F" + secret.name,
        "/files/" + str(secret).replace("/", "%2F"),
        "/files//" + str(secret),
        "/files/" + collection.name,  # inside the root, but no result's file
        "/files/images/no-such.png",
        "/files/images",
        "/files/",
    ):
        assert "no file" in refused(client.get(path), 404), path


def test_an_indexed_file_that_links_outside_is_not_served(client, collection, rows, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"outside the collection")
    image = next(row["image"] for row in reversed(rows) if row["image"])
    indexed = collection.parent / image
    kept = indexed.with_suffix(".kept")
    indexed.rename(kept)
    try:
        indexed.symlink_to(secret)
        assert "no file" in refused(client.get("/files/" + image), 404)
    finally:
        indexed.unlink(missing_ok=True)
        kept.rename(indexed)
    assert client.get("/files/" + image).status_code == 200


def test_a_token_guards_every_route_but_health(guarded, collection, rows):
    assert guarded.get("/health").status_code == 200
    for method, path in (
        ("GET", "/"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("GET", "/info"),
        ("GET", "/search?q=circle"),
        ("POST", "/embed"),
        ("POST", "/predict"),
        ("GET", "/files/" + rows[0]["image"]),
    ):
        assert "token" in refused(guarded.request(method, path), 401)
        wrong = guarded.request(method, path, headers={"Authorization": "Bearer nope"})
        assert refused(wrong, 401)
    right = {"Authorization": f"Bearer {TOKEN}"}
    assert guarded.get("/search", params={"q": "circle"}, headers=right).status_code == 200
    assert guarded.get("/files/" + rows[0]["image"], headers=right).status_code == 200


def test_the_page_logs_in_once_with_a_cookie(aligned_model, image_index):
    browser = TestClient(create_app(aligned_model, image_index, token=TOKEN))
    assert refused(browser.get("/?token=wrong", follow_redirects=False), 401)
    login = browser.get(f"/?token={TOKEN}", follow_redirects=False)
    assert login.status_code == 303 and login.headers["location"] == "/"
    assert (
        "HttpOnly" in login.headers["set-cookie"]
        and "SameSite=Strict" in login.headers["set-cookie"]
    )
    assert browser.get("/").status_code == 200  # the cookie, kept by the client
    assert browser.get("/search", params={"q": "circle"}).status_code == 200


def test_without_an_index_search_says_so(aligned_model):
    bare = TestClient(create_app(aligned_model, None))
    assert bare.get("/health").json() == {"status": "ok", "index": False}
    assert "--index" in refused(bare.get("/search", params={"q": "a circle"}), 404)
    assert bare.post("/embed", data={"text": "a circle"}).status_code == 200


def test_a_served_index_follows_its_updates(aligned_model, image_index, tmp_path):
    """`omnifuse index remove` on a served index: the next request sees the new version, and
    the removed row's file is no longer served."""
    import shutil

    from omnifuse.retrieval import remove_from_index

    copy = tmp_path / "index"
    shutil.copytree(image_index, copy)
    client = TestClient(create_app(aligned_model, copy))
    first = client.get("/search", params={"q": "a red circle", "k": 3}).json()["hits"][0]
    size = client.get("/info").json()["index"]["size"]
    assert client.get(first["url"]).status_code == 200
    remove_from_index(copy, [first["id"]])
    hits = client.get("/search", params={"q": "a red circle", "k": 3}).json()["hits"]
    assert first["id"] not in [h["id"] for h in hits]
    assert client.get("/info").json()["index"]["size"] == size - 1
    refused(client.get(first["url"]), 404)
