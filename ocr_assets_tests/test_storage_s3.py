"""The data root on S3 follows the endpoint of the moment: two S3 servers one after the other (a test's server
stopped, the next test's started) never share a cached filesystem that talks to the stopped one."""

import boto3

from ocr_assets.corpus.inbox import _filesystem
from ocr_assets.storage import Storage
from ocr_assets_tests.services import s3_server


def _use(endpoint: str, monkeypatch) -> Storage:
    for key, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3").create_bucket(Bucket="ocr-assets")
    return Storage("s3://ocr-assets/var")


def test_a_new_endpoint_gets_a_new_filesystem(monkeypatch):
    with s3_server() as first:
        storage = _use(first, monkeypatch)
        storage.write_json(storage.url("a.json"), {"server": 1})
        assert storage.read_json(storage.url("a.json")) == {"server": 1}
    with s3_server() as second:  # the first server is gone; its port may even be free again
        storage = _use(second, monkeypatch)
        storage.write_json(storage.url("b.json"), {"server": 2})
        assert storage.read_json(storage.url("b.json")) == {"server": 2}
        assert not storage.fs.exists(storage._path(storage.url("a.json")))  # a fresh bucket, not the old one
        fs, root = _filesystem("s3://ocr-assets/var")
        assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(root)) == ["b.json"]
