"""Each sampling control really changes vLLM's reply (a control the server dropped would fail here),
on the base model in float32, compared with greedy replies and with a transformers forward pass."""

from __future__ import annotations

import json
import math

import httpx
import pytest

from store.chat_format import prompt_messages, render_prompt
from tests.support.greedy import greedy_ids

QUESTION = [{"role": "user", "content": "Tell me about the sea."}]


@pytest.fixture(scope="module")
def http(live_server):
    with httpx.Client(base_url=live_server.url, timeout=300) as client:
        yield client


@pytest.fixture(scope="module")
def base_id(http) -> str:
    return http.get("/v1/models").json()["data"][0]["id"]


def ask(http, base_id: str, **params) -> dict:
    body = {"model": base_id, "messages": QUESTION, "max_tokens": 16, **params}
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def text(reply: dict) -> str:
    return reply["choices"][0]["message"]["content"]


def test_top_k_one_and_min_p_one_equal_greedy(http, base_id) -> None:
    greedy = text(ask(http, base_id, temperature=0))
    assert text(ask(http, base_id, temperature=1.0, seed=11)) != greedy, "the seeded sample differs from greedy"
    assert text(ask(http, base_id, temperature=1.0, seed=11, top_k=1)) == greedy
    assert text(ask(http, base_id, temperature=1.0, seed=11, min_p=1.0)) == greedy


def test_logprobs_sum_to_the_replys_log_likelihood(http, base_id, reference) -> None:
    _, tokenizer = reference
    reply = ask(http, base_id, temperature=0, logprobs=True, top_logprobs=3)
    content = reply["choices"][0]["logprobs"]["content"]
    assert "".join(t["token"] for t in content) == text(reply)
    prompt_ids = render_prompt(tokenizer, prompt_messages(QUESTION, None))
    ids, expected = greedy_ids(reference[0], prompt_ids, len(content))
    assert [tokenizer.decode([i]) for i in ids] == [t["token"] for t in content], "the same greedy tokens"
    served = sum(t["logprob"] for t in content)
    assert served < 0 and math.isclose(served, sum(expected), rel_tol=0.03, abs_tol=0.05), (served, sum(expected))
    for token in content:
        assert token["top_logprobs"][0]["token"] == token["token"], "greedy picks the likeliest"
        assert token["top_logprobs"][0]["logprob"] >= token["top_logprobs"][1]["logprob"]


def test_logit_bias_keeps_a_token_out(http, base_id, reference) -> None:
    _, tokenizer = reference
    prompt_ids = render_prompt(tokenizer, prompt_messages(QUESTION, None))
    ids, _ = greedy_ids(reference[0], prompt_ids, 1)
    banned = tokenizer.decode(ids[:1])
    greedy = ask(http, base_id, temperature=0, logprobs=True)
    assert greedy["choices"][0]["logprobs"]["content"][0]["token"] == banned
    biased = ask(http, base_id, temperature=0, logprobs=True, logit_bias={str(ids[0]): -100})
    tokens = [t["token"] for t in biased["choices"][0]["logprobs"]["content"]]
    assert banned not in tokens and text(biased) != text(greedy)


def repeated_share(tokenizer, prompt: str, continuation: str) -> float:
    """The share of the continuation's tokens already seen in the prompt or earlier in it."""
    seen = set(tokenizer.encode(prompt, add_special_tokens=False))
    ids = tokenizer.encode(continuation, add_special_tokens=False)
    repeats = 0
    for token in ids:
        repeats += token in seen
        seen.add(token)
    return repeats / max(len(ids), 1)


def test_repetition_penalty_lowers_repeats(http, base_id, reference) -> None:
    _, tokenizer = reference
    prompt = "The cat sat. The cat sat. The cat sat. The cat sat."

    def continuation(**params) -> str:
        body = {"model": base_id, "prompt": prompt, "max_tokens": 24, "temperature": 0, **params}
        response = http.post("/v1/completions", json=body)
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["text"]

    plain, penalised = continuation(), continuation(repetition_penalty=1.8)
    assert repeated_share(tokenizer, prompt, plain) >= 0.9, plain
    assert repeated_share(tokenizer, prompt, penalised) < 0.5, penalised


def test_min_tokens_holds_back_a_stop_token(http, base_id, reference) -> None:
    _, tokenizer = reference
    prompt_ids = render_prompt(tokenizer, prompt_messages(QUESTION, None))
    ids, _ = greedy_ids(reference[0], prompt_ids, 3)
    stopped = ask(http, base_id, temperature=0, stop_token_ids=[ids[2]])
    assert stopped["usage"]["completion_tokens"] <= 3 and stopped["choices"][0]["finish_reason"] == "stop"
    held = ask(http, base_id, temperature=0, stop_token_ids=[ids[2]], min_tokens=10)
    assert held["usage"]["completion_tokens"] >= 10


def test_response_format_makes_the_reply_json(http, base_id, reference) -> None:
    _, tokenizer = reference
    schema = {
        "type": "object",
        "properties": {"mood": {"type": "string", "maxLength": 12}, "stars": {"type": "integer"}},
        "required": ["mood", "stars"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "review", "schema": schema, "strict": True}}
    question = [{"role": "user", "content": "Rate the sea."}]
    reply = ask(http, base_id, messages=question, temperature=0, max_tokens=100, response_format=fmt)
    parsed = json.loads(text(reply))
    assert set(parsed) == {"mood", "stars"} and isinstance(parsed["stars"], int)
    plain = ask(http, base_id, messages=question, temperature=0, max_tokens=100)
    free = ask(http, base_id, messages=question, temperature=0, max_tokens=100, response_format={"type": "json_object"})
    reply = text(free)
    assert reply.lstrip().startswith("{"), reply
    if free["choices"][0]["finish_reason"] == "stop":
        assert isinstance(json.loads(reply), dict)
    else:  # cut at max_tokens: still JSON as far as it goes
        assert json_so_far(tokenizer, reply), reply
    assert not json_so_far(tokenizer, text(plain)), "without it the reply is prose"


def json_so_far(tokenizer, reply: str) -> bool:
    """Whether ``reply`` is JSON, or the start of it, by xgrammar's JSON grammar."""
    import xgrammar

    info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer))
    matcher = xgrammar.GrammarMatcher(xgrammar.GrammarCompiler(info).compile_builtin_json_grammar())
    return matcher.accept_string(reply)
