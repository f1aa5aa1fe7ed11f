"""POST /webhooks/tradingview and GET /health against a real uvicorn on 127.0.0.1, over
the SQLite queue and over SQS FIFO on moto (passphrase from Secrets Manager there)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from urllib.parse import urlsplit

import requests

from trading_assets.gateway import MAX_BODY_BYTES, envelope
from trading_assets.gateway.samples import sample_names
from trading_assets_tests.gateway.conftest import PASSPHRASE, FlakyQueue, alert, distinct

# ----------------------------------------------------------------------------- both queues


def test_accepted_then_duplicate_for_every_sample_as_json_and_as_text(world):
    with world.serve() as gw:
        ids = []
        for name in sample_names():
            r = gw.post(alert(name))
            assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
            ids.append(r.json()["alert_id"])
            again = gw.post(alert(name), content_type="text/plain")  # TradingView's other content type
            assert again.status_code == 200 and again.json() == {"status": "duplicate", "alert_id": ids[-1]}
        assert len(set(ids)) == len(ids) and all(i.startswith("tv-") for i in ids)
        new = gw.post(distinct(1), content_type="text/plain; charset=utf-8")
        assert new.json()["status"] == "accepted"
        assert gw.depth() == len(ids) + 1


def test_the_queued_body_is_the_alert_and_its_metadata_without_the_passphrase(world):
    with world.serve() as gw:
        r = gw.post(alert("di_minus_over_plus"), content_type="text/plain")
        [msg] = world.queue.receive(1)
    assert PASSPHRASE not in msg.body and "passphrase" not in msg.body
    stored = envelope.decode(msg.body)
    assert msg.alert_id == stored.alert_id == r.json()["alert_id"]
    assert msg.group == stored.symbol == "MNQ1!"
    assert stored.payload == alert("di_minus_over_plus", passphrase=None)
    assert stored.content_type == "text/plain" and stored.remote_addr == "127.0.0.1"
    assert abs(time.time() - stored.received_at.timestamp()) < 60


def test_wrong_missing_or_non_string_passphrase_is_401_and_nothing_is_stored(world):
    with world.serve() as gw:
        for bad in ["wrong", "", PASSPHRASE + " ", PASSPHRASE.upper(), "ünïcødé", "\ud800", 42, 0, True, None,
                    [PASSPHRASE], {"value": PASSPHRASE}]:
            r = gw.post(alert(passphrase=bad))
            assert r.status_code == 401, (bad, r.text)
            assert r.json() == {"status": "unauthorized", "error": "wrong or missing passphrase",
                                "field": "passphrase"}
        assert gw.post(alert(passphrase=None)).status_code == 401  # no passphrase field at all
        assert gw.depth() == 0
        assert gw.post(alert()).json()["status"] == "accepted"  # the same alert, now authorised


INVALID = [  # (how the alert is spoiled, the field the 422 must name)
    (lambda a: a["signal"].update(trigger="COLOR_CHANGE_RED"), "signal.trigger"),
    (lambda a: a.update(action="BUY"), "action"),
    (lambda a: a.update(indicator="RSI"), "indicator"),
    (lambda a: a.pop("market_data"), "market_data"),
    (lambda a: a["market_data"].pop("symbol"), "market_data.symbol"),
    (lambda a: a["market_data"].update(symbol="{{ticker}}"), "market_data.symbol"),
    (lambda a: a["market_data"].update(timenow="yesterday"), "market_data.timenow"),
    (lambda a: a["price_data"].update(close="NaN"), "price_data.close"),
    (lambda a: a["price_data"].update(close=float("inf")), "price_data.close"),
    (lambda a: a["price_data"].update(open="{{open}}"), "price_data.open"),
    (lambda a: a["price_data"].update(volume=-1), "price_data.volume"),
    (lambda a: a["price_data"].update(high=[1]), "price_data.high"),
    (lambda a: a["price_data"].update(low=10 ** 400), "price_data.low"),
    (lambda a: a["signal"].update(direction={"x": 1}), "signal.direction"),
    (lambda a: a.update(note=float("nan")), "note"),
]


def test_invalid_fields_are_422_naming_the_field_and_nothing_is_stored(world):
    with world.serve() as gw:
        for mutate, field in INVALID:
            body = alert()
            mutate(body)
            r = gw.post(body)  # NaN/Infinity go out as JSON's non-standard literals, as Pine may write them
            assert r.status_code == 422, (field, r.text)
            answer = r.json()
            assert answer["status"] == "rejected" and answer["field"] == field, answer
            assert answer["error"].startswith(field + ":")
        assert gw.depth() == 0


MALFORMED = [b"", b"{", b"not json", b"passphrase=x", b"[1, 2]", b'"text"', b"null", b"\xff\xfe{}",
             b"[" * 50_000 + b"]" * 10_000]


def test_malformed_json_is_422_and_nothing_is_stored(local):
    with local.serve() as gw:
        for raw in MALFORMED:
            r = gw.post(None, raw=raw, content_type="text/plain")
            assert r.status_code == 422, (raw[:20], r.text)
            assert r.json()["status"] == "rejected" and r.json()["field"] is None
        assert gw.depth() == 0


def test_store_failure_is_503_and_the_redelivery_is_one_alert(world):
    """TradingView re-sends a 5xx (up to 3 times): the re-delivery has the same alert id."""
    for after_storing in (False, True):  # the store refused it / stored it but the answer was lost
        flaky = FlakyQueue(world.queue, fail={1}, after_storing=after_storing)
        before = world.queue.depth()
        with world.serve(queue=flaky) as gw:
            body = distinct(int(after_storing))
            first = gw.post(body)
            assert first.status_code == 503 and first.json()["status"] == "unavailable", first.text
            assert first.json()["retry"] is True
            retry = gw.post(body)
            assert retry.status_code == 200, retry.text
            assert retry.json()["status"] == ("duplicate" if after_storing else "accepted")
            assert gw.post(body).json()["status"] == "duplicate"
            assert world.queue.depth() == before + 1


def test_health_is_ok_once_the_queue_answers(world):
    with world.serve() as gw:
        r = requests.get(gw.url + "/health", timeout=10)
        assert r.status_code == 200 and r.json() == {"status": "ok", "queue": world.kind}


# ----------------------------------------------------------------------------- the body limit


def _raw_request(url: str, head: str, body_chunks=(), pause: float = 0.0) -> tuple[bytes, int]:
    """Send `head` then the chunks on a plain socket, stopping as soon as the server
    answers; returns (what the server said, body bytes sent)."""
    parts = urlsplit(url)
    sent = 0
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head.encode())
        for chunk in body_chunks:
            sock.settimeout(pause or 0.001)
            try:
                answer = sock.recv(65536)
                if answer:
                    return answer + _rest(sock), sent
            except TimeoutError:
                pass
            sock.settimeout(10)
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        sock.settimeout(10)
        return sock.recv(65536) + _rest(sock), sent


def _rest(sock: socket.socket) -> bytes:
    out = b""
    sock.settimeout(1)
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return out


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_a_body_over_64_kib_is_413_by_content_length_before_it_is_sent(local):
    with local.serve() as gw:
        head = (f"POST /webhooks/tradingview HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {10 * 1024 * 1024}\r\n\r\n")
        answer, sent = _raw_request(gw.url, head)  # headers only: the gateway does not wait for the body
        assert _status(answer) == 413 and sent == 0
        assert b"Content-Length 10485760 is over the limit of 65536 bytes" in answer
        assert b"connection: close" in answer.lower()
        # one byte over through requests as well; exactly the limit is read (and judged as JSON)
        assert local_post(gw, b" " * (MAX_BODY_BYTES + 1)).status_code == 413
        padded = json.dumps(alert()).encode()
        padded += b" " * (MAX_BODY_BYTES - len(padded))
        assert local_post(gw, padded).json()["status"] == "accepted"
        assert gw.depth() == 1


def local_post(gw, raw: bytes) -> requests.Response:
    return requests.post(gw.webhook, data=raw, headers={"Content-Type": "text/plain"}, timeout=10)


def test_a_chunked_body_without_content_length_is_cut_off_at_64_kib(local):
    with local.serve() as gw:
        head = "POST /webhooks/tradingview HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        piece = b" " * 4096
        chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        answer, sent = _raw_request(gw.url, head, [chunk] * 1024, pause=0.005)  # offers 4 MiB
        assert _status(answer) == 413, answer
        assert b"over the limit of 65536 bytes" in answer
        assert sent < 1024 * 1024, f"the gateway kept reading: {sent} bytes sent"
        # a chunked alert under the limit is fine
        r = requests.post(gw.webhook, data=iter([json.dumps(alert()).encode()]), timeout=10)
        assert r.request.headers.get("Transfer-Encoding") == "chunked"
        assert r.json()["status"] == "accepted" and gw.depth() == 1


def test_a_lying_content_length_cannot_smuggle_more_body(local):
    """Content-Length says 200 bytes and 100 KiB follow: the first 200 bytes are the body
    (not JSON: 422) and the rest is no valid request (uvicorn answers 400 and closes; when
    it parses it all at once, the 400 is the only answer). Nothing is stored either way."""
    with local.serve() as gw:
        body = json.dumps(alert()).encode() + b" " * 100_000
        head = ("POST /webhooks/tradingview HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Content-Length: 200\r\n\r\n")
        answer, _ = _raw_request(gw.url, head, [body])
        assert _status(answer) in (400, 422), answer
        assert gw.depth() == 0


# ----------------------------------------------------------------------------- local details


def test_nothing_is_acknowledged_before_the_store_returns(local):
    release = threading.Event()

    class SlowQueue(FlakyQueue):
        def put(self, alert_id, body, group):
            release.wait(10)
            return self.inner.put(alert_id, body, group)

    with local.serve(queue=SlowQueue(local.queue, set())) as gw:
        result = {}
        sender = threading.Thread(target=lambda: result.setdefault("r", gw.post(alert())))
        sender.start()
        sender.join(0.5)
        assert sender.is_alive() and "r" not in result, "answered before the alert was stored"
        release.set()
        sender.join(10)
        assert result["r"].json()["status"] == "accepted" and gw.depth() == 1


def test_alerts_are_grouped_by_symbol(local):
    with local.serve() as gw:
        for i, symbol in enumerate(["MNQ1!", "ES1!", "MNQ1!", " NQ1! "]):
            assert gw.post(distinct(i, symbol=symbol)).json()["status"] == "accepted"
        groups = []
        while batch := local.queue.receive(10):
            groups += [m.group for m in batch]
            for m in batch:
                local.queue.ack(m)
    assert sorted(groups) == ["ES1!", "MNQ1!", "MNQ1!", "NQ1!"]


def test_one_log_line_per_request_without_the_passphrase_or_the_body(local, caplog):
    caplog.set_level(logging.INFO, logger="trading_assets.gateway")
    with local.serve() as gw:
        gw.post(alert())
        gw.post(alert())
        gw.post(alert(passphrase="not-" + PASSPHRASE))
        bad = alert()
        bad["price_data"]["close"] = "{{close}}"
        gw.post(bad)
    lines = [r.getMessage() for r in caplog.records if r.name == "trading_assets.gateway"]
    assert len(lines) == 4, lines
    assert " 200 accepted alert_id=tv-" in lines[0] and " ms from 127.0.0.1" in lines[0]
    assert " 200 duplicate " in lines[1] and " 401 unauthorized " in lines[2]
    assert " 422 rejected " in lines[3] and "field=price_data.close" in lines[3]
    text = "\n".join(lines)
    assert PASSPHRASE not in text and "Trend_Validator" not in text and "24538.75" not in text


def test_the_passphrase_follows_a_rotation(world):
    """Read at startup, re-read after a mismatch (here at once: recheck 0 s), so an alert with
    the rotated passphrase is accepted and the old one refused without a restart."""
    with world.serve(passphrase_recheck_seconds=0, passphrase_ttl_seconds=3600) as gw:
        assert gw.post(distinct(0)).json()["status"] == "accepted"
        world.set_passphrase("rotated passphrase")
        assert gw.post(distinct(1, "short_entry") | {"passphrase": "rotated passphrase"}).status_code == 200
        assert gw.post(distinct(2)).status_code == 401  # the old one
        assert gw.depth() == 2


def test_an_unreadable_passphrase_or_queue_is_503_not_401(local):
    def no_secret() -> str:
        raise ConnectionError("secrets store unreachable (test)")

    with local.serve(passphrase=no_secret) as gw:
        r = gw.post(alert())
        assert r.status_code == 503 and r.json()["status"] == "unavailable"
        assert requests.get(gw.url + "/health", timeout=10).status_code == 503
        assert gw.depth() == 0

    class DownQueue(FlakyQueue):
        def depth(self):
            raise ConnectionError("queue unreachable (test)")

    with local.serve(queue=DownQueue(local.queue, set())) as gw:
        r = requests.get(gw.url + "/health", timeout=10)
        assert r.status_code == 503 and "unreachable" not in r.text  # details go to the log only


def test_on_accepted_is_called_once_per_new_alert_and_cannot_fail_the_answer(local):
    seen = []

    def hand_off(alert_id: str, symbol: str) -> None:
        seen.append((alert_id, symbol))
        raise RuntimeError("worker down (test)")

    with local.serve(on_accepted=hand_off) as gw:
        first = gw.post(alert()).json()
        assert gw.post(alert()).json()["status"] == "duplicate"
        assert gw.post(alert(passphrase="x")).status_code == 401
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
    assert seen == [(first["alert_id"], "MNQ1!")]


def test_the_openapi_page_shows_both_alert_shapes_and_the_answers(local):
    with local.serve() as gw:
        assert requests.get(gw.url + "/docs", timeout=10).status_code == 200
        spec = requests.get(gw.url + "/openapi.json", timeout=10).json()
    op = spec["paths"]["/webhooks/tradingview"]["post"]
    content = op["requestBody"]["content"]
    assert {"application/json", "text/plain"} <= set(content)
    shapes = {s["title"]: s for s in content["application/json"]["schema"]["oneOf"]}
    assert set(shapes) == {"TrendValidatorAlert", "DICrossAlert"}
    assert shapes["DICrossAlert"]["properties"]["signal"]["properties"]["direction"]["enum"] == [
        "PLUS_OVER_MINUS", "MINUS_OVER_PLUS"]
    assert set(content["application/json"]["examples"]) == set(sample_names())
    assert {"200", "401", "413", "422", "503"} <= set(op["responses"])
