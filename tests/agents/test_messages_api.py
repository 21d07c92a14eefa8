"""The stand-in Messages API itself (fast tier, loopback only): the script's turns, side requests
that do not move it on, the SSE stream Claude Code reads, and the record of every request."""

import http.client
import json
import ssl

import pytest

from tests.support.messages_api import FINAL_TEXT, SIDE_TEXT, StandIn, edit_script
from tests.support.processes import free_port

KEY = "sk-ant-standin-test"


@pytest.fixture
def api(tmp_path):
    with StandIn(tmp_path, "127.0.0.1", free_port(), edit_script("/w"), enter=[]) as running:
        yield running


def post(api: StandIn, path: str, body: dict, headers: dict | None = None) -> tuple[int, str, str]:
    """(status, content type, body text) of a POST to the stand-in over HTTPS, trusting its CA only."""
    connection = http.client.HTTPSConnection(api.host, api.port, context=ssl.create_default_context(cafile=str(api.ca)), timeout=5)
    try:
        connection.request("POST", path, json.dumps(body), {"content-type": "application/json", **(headers or {})})
        answer = connection.getresponse()
        return answer.status, answer.headers["Content-Type"], answer.read().decode()
    finally:
        connection.close()


def streamed(text: str) -> tuple[list[str], list[dict]]:
    """(event names, content blocks rebuilt from the deltas) of an SSE answer."""
    names, blocks = [], {}
    for chunk in text.strip().split("\n\n"):
        event, data = (line.split(": ", 1)[1] for line in chunk.splitlines())
        names.append(event)
        data = json.loads(data)
        if event == "content_block_start":
            blocks[data["index"]] = dict(data["content_block"], partial="")
        elif event == "content_block_delta":
            delta = data["delta"]
            blocks[data["index"]]["partial"] += delta.get("text", "") or delta.get("partial_json", "")
    return names, list(blocks.values())


def conversation(results: int) -> list[dict]:
    """A conversation holding `results` tool results."""
    messages: list[dict] = [{"role": "user", "content": "go"}]
    for n in range(results):
        messages.append({"role": "assistant", "content": [{"type": "tool_use", "id": f"t{n}", "name": "X", "input": {}}]})
        messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{n}", "content": "ok"}]})
    return messages


def test_the_script_moves_on_with_each_tool_result_and_only_then(api):
    tools = [{"name": "Bash", "input_schema": {}}]
    _, kind, text = post(api, "/v1/messages", {"model": "m-small", "messages": conversation(0)}, {"x-api-key": KEY})
    side = json.loads(text)
    assert kind == "application/json" and side["content"] == [{"type": "text", "text": SIDE_TEXT}] and side["usage"]["input_tokens"] > 0
    _, kind, text = post(api, "/v1/messages?beta=true", {"messages": conversation(0), "tools": tools, "stream": True}, {"x-api-key": KEY})
    names, blocks = streamed(text)
    assert kind == "text/event-stream"
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert blocks[0]["name"] == "Bash" and json.loads(blocks[0]["partial"])["command"] == "echo hello-from-bash > /w/out.txt"
    _, _, text = post(api, "/v1/messages", {"messages": conversation(2), "tools": tools, "stream": True})
    assert streamed(text)[1][0]["name"] == "Edit"
    _, _, text = post(api, "/v1/messages", {"messages": conversation(4), "tools": tools})
    final = json.loads(text)
    assert final["stop_reason"] == "end_turn" and final["content"][0]["text"] == FINAL_TEXT
    _, _, text = post(api, "/v1/messages/count_tokens", {"messages": conversation(1)}, {"authorization": "Bearer tok"})
    assert json.loads(text)["input_tokens"] > 0

    assert [r["path"] for r in api.requests()] == [
        "/v1/messages",
        "/v1/messages?beta=true",
        "/v1/messages",
        "/v1/messages",
        "/v1/messages/count_tokens",
    ]
    assert len(api.main_requests()) == 3 and api.keys_received() == {KEY, "tok"}
    assert [r["tool_use_id"] for r in api.results()] == ["t0", "t1", "t2", "t3"]


def test_an_unknown_path_is_answered_404_and_recorded(api):
    status, _, text = post(api, "/v1/other", {})
    assert status == 404 and json.loads(text)["error"]["type"] == "not_found_error"
    assert api.requests()[0]["path"] == "/v1/other"
