"""The API's uploads under ASGI: the same guard as the pages' (controlpanel.uploads.UploadLimit)
judges them before Django reads a byte, from the limit each API view declares."""

import pytest

from tests.test_uploads import CHUNK, Client, post

pytestmark = pytest.mark.django_db(transaction=True)

UPLOADS = {"/api/v1/sandboxes/1/transfer/upload/": "TRANSFER_MAX_UPLOAD_BYTES", "/api/v1/backups/import/": "BACKUP_IMPORT_MAX_BYTES"}


@pytest.mark.parametrize("path", list(UPLOADS))
def test_an_api_upload_over_its_limit_is_refused_before_a_byte_is_read(settings, path):
    setattr(settings, UPLOADS[path], 1000)
    declared = 50 << 20
    client = post(path, Client(declared), [(b"content-length", str(declared).encode())])
    assert client.status() == 413 and b"larger than the limit of 1000 bytes" in client.body()
    assert client.sent == 0
    chunked = post(path, Client(None), [(b"transfer-encoding", b"chunked")])
    assert chunked.status() == 411 and chunked.sent == 0
    longer = post(path, Client(None), [(b"content-length", b"2000")])
    assert longer.status() == 413 and longer.sent <= 1000 + (1 << 20) + CHUNK
