"""Hostile HTTP inputs, shared by the route fuzz test (tests/test_api_fuzz.py) and the
memory bench (bench/api_hostile_bench.py): names for path and query parameters, and
request bodies that once crashed handlers or could exhaust them."""

from __future__ import annotations

import base64
import json

NAMES = ["a\x00b", "\x00", "..", ".", "../canary", "a/../../b", "..\\..\\x", "%2e%2e%2f", "x" * 300,
         "\u202etxt.mp4", "\U0001F600" * 70, " ", "a\nb", "\x7f", "nap.jpg", "." * 255]
# sent as they are: not UTF-8 (a lone surrogate, stray bytes, an overlong dot)
RAW = ["%ED%A0%80", "%FF%FE", "%C0%AE%C0%AE", "%"]
QUERIES = [*NAMES, base64.urlsafe_b64encode(b"[" * 1500 + b"]" * 1500).decode()[:2000], "-1", "1e999", "true"]
BIG_NAME = "f" * (1 << 20)
BODIES: list[tuple[str, bytes]] = [
    ("application/json", b"[" * 10000 + b"]" * 10000),
    ("application/json", b'{"name": "' + b"\\u0000" * 10 + b'"}'),
    ("application/json", json.dumps({"template_name": "a\x00.mp4", "text": "hi"}).encode()),
    ("application/json", json.dumps({"template_name": "../../etc/passwd", "text": "hi"}).encode()),
    ("application/json", b"\xff\xfe not json"),
    ("multipart/form-data; boundary=b", f'--b\r\nContent-Disposition: form-data; name="{BIG_NAME}"\r\n\r\nx\r\n'
                                        "--b--\r\n".encode()),
    ("multipart/form-data; boundary=b", f'--b\r\nContent-Disposition: form-data; name="file"; filename="{BIG_NAME}'
                                        '"\r\n\r\nx\r\n--b--\r\n'.encode()),
    ("multipart/form-data; boundary=b", b"".join(b'--b\r\nContent-Disposition: form-data; name="n%d"\r\n\r\nx\r\n'
                                                 % i for i in range(1200)) + b"--b--\r\n"),
    ("multipart/form-data", b"no boundary"),
    ("application/offset+octet-stream", b"EVIL"),
    ("application/x-www-form-urlencoded", b"key=" + b"k" * 100000),
    ("text/plain", b"\x00" * 64),
]
