"""The request bodies chat front ends send to a "custom OpenAI-compatible" endpoint, replayed against
the real server: each gets a 200 and a reply; a streamed one is read as ``text/event-stream``, every
chunk has ``choices`` and the stream ends with ``[DONE]``. The next client is one more row."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

PERSONA = "wren"

CARD = (
    "Write Wren's next reply in a fictional chat between Wren and User.\n"
    "Wren is the flustered, warm baker at The Crooked Loaf."
)


@dataclass(frozen=True)
class Case:
    client: str
    body: dict[str, Any]
    path: str = "/v1/chat/completions"
    ignored: tuple[str, ...] = field(default=())
    """Fields the reply's Warning header must name."""


def sillytavern_messages(*tail: dict[str, Any]) -> list[dict[str, Any]]:
    """SillyTavern's chat-completion prompt: main prompt and card as system messages, the example
    dialogue as system messages named example_user / example_assistant, the greeting, the chat."""
    return [
        {"role": "system", "content": CARD},
        {"role": "system", "content": "[Start a new chat]"},
        {"role": "system", "name": "example_user", "content": "What's fresh today?"},
        {"role": "system", "name": "example_assistant", "content": "Oh crumbs, the sourdough, petal!"},
        {"role": "system", "content": "[Start a new chat]"},
        {"role": "assistant", "content": "Oh crumbs, a customer! Come in, petal."},
        {"role": "user", "name": "User", "content": "Morning, Wren. Anything warm?"},
        *tail,
    ]


SILLYTAVERN = {
    "model": PERSONA,
    "temperature": 1,
    "frequency_penalty": 0,
    "presence_penalty": 0,
    "top_p": 1,
    "max_tokens": 24,
    "stream": True,
    "logit_bias": {},
    "seed": 7,
    "n": 1,
}

OPEN_WEBUI_TITLE = (
    "### Task:\nGenerate a concise, 3-5 word title with an emoji summarizing the chat history.\n"
    '### Output:\nJSON format: { "title": "your concise title here" }\n'
    "### Chat History:\n<chat_history>\nUSER: Morning, Wren. Anything warm?\n"
    "ASSISTANT: Oh crumbs, the rolls are still warm!\n</chat_history>"
)

OPEN_WEBUI_TAGS = (
    "### Task:\nGenerate 1-3 broad tags categorizing the main themes of the chat history.\n"
    '### Output:\nJSON format: { "tags": ["tag1", "tag2", "tag3"] }\n'
    "### Chat History:\n<chat_history>\nUSER: Morning, Wren. Anything warm?\n</chat_history>"
)

CASES = [
    Case(
        "sillytavern chat, samplers in the body",
        {
            **SILLYTAVERN,
            "messages": sillytavern_messages(),
            "top_k": 40,
            "min_p": 0.05,
            "repetition_penalty": 1.1,
        },
    ),
    Case(
        "sillytavern logit-bias preset",
        {
            **SILLYTAVERN,
            "stream": False,
            "messages": sillytavern_messages(),
            "logit_bias": {"28": -100, "30": 5},
        },
    ),
    Case(
        "sillytavern token probabilities",
        {
            **SILLYTAVERN,
            "messages": sillytavern_messages(),
            "logprobs": True,
            "top_logprobs": 5,
        },
    ),
    Case(
        "sillytavern impersonate",
        {
            **SILLYTAVERN,
            "messages": sillytavern_messages(
                {
                    "role": "system",
                    "content": "[Write your next reply from the point of view of User, using the chat "
                    "history so far as a guideline for the writing style of User. Don't write as or describe actions "
                    "of other characters.]",
                },
            ),
        },
    ),
    Case(
        "sillytavern continue",
        {
            **SILLYTAVERN,
            "messages": sillytavern_messages(
                {"role": "assistant", "content": "Oh, the cinnamon buns are"},
                {"role": "system", "content": "[Continue your last message without repeating its original content.]"},
            ),
        },
    ),
    Case("sillytavern swipes", {**SILLYTAVERN, "stream": False, "n": 3, "messages": sillytavern_messages()}),
    Case(
        "sillytavern text completion",
        {
            "model": PERSONA,
            "prompt": "<|im_start|>system\nYou are Wren.<|im_end|>\n<|im_start|>user\nMorning!<|im_end|>\n"
            "<|im_start|>assistant\n",
            "max_tokens": 24,
            "temperature": 0.7,
            "top_p": 0.95,
            "top_k": 40,
            "min_p": 0.05,
            "repetition_penalty": 1.1,
            "rep_pen": 1.1,
            "typical_p": 1,
            "tfs": 1,
            "mirostat_mode": 0,
            "stop": ["<|im_end|>", "\nUser:"],
            "stream": True,
        },
        path="/v1/completions",
        ignored=("rep_pen", "typical_p", "tfs"),
    ),
    Case(
        "open webui chat, advanced params",
        {
            "model": PERSONA,
            "messages": [{"role": "user", "content": "Morning, Wren. Anything warm?"}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "top_k": 40,
            "min_p": 0.05,
            "repeat_penalty": 1.1,
            "num_ctx": 2048,
            "max_tokens": 24,
            "reasoning_effort": "medium",
        },
        ignored=("repeat_penalty", "num_ctx", "reasoning_effort"),
    ),
    Case(
        "open webui title task",
        {
            "model": PERSONA,
            "messages": [{"role": "user", "content": OPEN_WEBUI_TITLE}],
            "stream": False,
            "max_tokens": 50,
        },
    ),
    Case(
        "open webui tags task",
        {
            "model": PERSONA,
            "messages": [{"role": "user", "content": OPEN_WEBUI_TAGS}],
            "stream": False,
            "max_tokens": 50,
        },
    ),
    Case(
        "librechat",
        {
            "model": PERSONA,
            "user": "6650b8b3c2f1a0e4d8a1b2c3",
            "temperature": 0.8,
            "top_p": 1,
            "presence_penalty": 0,
            "frequency_penalty": 0,
            "stop": ["||>", "\nUser:", "<|diff_marker|>"],
            "stream": True,
            "max_tokens": 24,
            "messages": [
                {"role": "system", "content": "You are Wren, the village baker."},
                {"role": "user", "name": "Sam", "content": "Morning, Wren!"},
                {"role": "assistant", "content": "Oh crumbs, morning, petal!"},
                {"role": "user", "name": "Sam", "content": "Anything warm?"},
            ],
        },
        ignored=("user",),
    ),
    Case(
        "vercel ai sdk",
        {
            "model": PERSONA,
            "messages": [
                {"role": "system", "content": "You are Wren, the village baker."},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "Morning!"}, {"type": "text", "text": "Anything warm?"}],
                },
            ],
            "max_tokens": 24,
            "temperature": 0.7,
            "seed": 3,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ),
    Case(
        "langchain chatopenai",
        {
            "model": PERSONA,
            "messages": [{"role": "user", "content": "Morning, Wren!"}],
            "stream": False,
            "n": 1,
            "temperature": 0.7,
            "max_completion_tokens": 24,
        },
    ),
    Case(
        "langchain chatopenai streaming",
        {
            "model": PERSONA,
            "messages": [{"role": "user", "content": "Morning, Wren!"}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "n": 1,
            "temperature": 0.7,
            "max_tokens": 24,
        },
    ),
]


def reply_texts(path: str, choices: list[dict[str, Any]]) -> list[str]:
    if path == "/v1/completions":
        return [c.get("text") or "" for c in choices]
    return [(c.get("message") or c.get("delta") or {}).get("content") or "" for c in choices]


def read_stream(response: httpx.Response, path: str) -> str:
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]
    assert events and events[-1] == "[DONE]", events[-3:]
    text = ""
    for data in events[:-1]:
        chunk = json.loads(data)
        assert "choices" in chunk, chunk
        text += "".join(reply_texts(path, chunk["choices"]))
    return text


@pytest.mark.parametrize("case", CASES, ids=[case.client for case in CASES])
def test_a_front_end_request_gets_a_reply(live_server, case: Case) -> None:
    with httpx.Client(base_url=live_server.url, timeout=300) as http:
        if case.body.get("stream"):
            with http.stream("POST", case.path, json=case.body) as response:
                assert response.status_code == 200, response.read()
                warning = response.headers.get("warning", "")
                text = read_stream(response, case.path)
            assert text.strip(), "a streamed reply"
        else:
            response = http.post(case.path, json=case.body)
            assert response.status_code == 200, response.text
            warning = response.headers.get("warning", "")
            body = response.json()
            texts = reply_texts(case.path, body["choices"])
            assert len(texts) == case.body.get("n", 1) and all(t.strip() for t in texts), body
            if case.body.get("logprobs"):
                assert body["choices"][0]["logprobs"]["content"]
    for name in case.ignored:
        assert name in warning, (name, warning)
