"""serve.protocol and the SSE writer: each model's dump is the JSON the openai client and the chat page read, with
OpenAI's nulls kept and unused optional fields left out (not sent as null)."""

from __future__ import annotations

import json

from politician_lm.serve.protocol import (
    AdapterCard,
    APIError,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    Delta,
    ModelCard,
    ModelList,
    Usage,
)
from politician_lm.serve.streaming import sse_event

HEAD = {"id": "chatcmpl-1", "created": 7, "model": "alpha"}


def test_a_completion_has_openai_keys_and_a_null_logprobs():
    body = ChatCompletion(
        **HEAD, choices=[Choice(message=AssistantMessage(content="Folks"), finish_reason="stop")], usage=Usage.of(5, 2)
    ).model_dump()
    assert body == {
        **{"id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "alpha"},
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Folks"},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


def test_chunks_leave_out_unused_fields_and_keep_a_null_finish_reason():
    def chunk(**kw) -> dict:
        return ChatCompletionChunk(**HEAD, **kw).model_dump()

    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "alpha"}
    first = chunk(choices=[ChunkChoice(delta=Delta(role="assistant", content=""))])
    assert first == {
        **head,
        "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None, "logprobs": None}
        ],
    }
    piece = chunk(choices=[ChunkChoice(delta=Delta(content="jobs"))])
    assert piece["choices"][0]["delta"] == {"content": "jobs"} and "usage" not in piece
    last = chunk(choices=[ChunkChoice(delta=Delta(), finish_reason="length")])
    assert last["choices"] == [{"index": 0, "delta": {}, "finish_reason": "length", "logprobs": None}]
    usage = chunk(choices=[], usage=Usage.of(3, 4))
    assert usage == {**head, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}


def test_an_event_is_one_data_line_with_json_spacing():
    event = sse_event(ChatCompletionChunk(**HEAD, choices=[ChunkChoice(delta=Delta(content="é"))]))
    assert event.startswith("data: {") and event.endswith("}\n\n") and event.count("\n") == 2
    assert '"content": "é"' in event  # the spacing and UTF-8 clients (and the tests) match on
    assert json.loads(event[len("data: ") :])["choices"][0]["delta"] == {"content": "é"}


def test_the_model_list_and_errors_keep_their_shape():
    card = ModelCard(
        id="mix", root="base", parent="base", politician=None, adapters=[AdapterCard(path="a", weight=0.7)]
    )
    assert ModelList(data=[card]).model_dump() == {
        "object": "list",
        "data": [
            {
                "id": "mix",
                "object": "model",
                "created": 0,
                "owned_by": "politician-lm",
                "root": "base",
                "parent": "base",
                "politician": None,
                "adapters": [{"path": "a", "weight": 0.7}],
            }
        ],
    }
    response = APIError(401, "no key\n  here", code="invalid_api_key").response()
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert json.loads(response.body) == {
        "error": {"message": "no key here", "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}
    }
