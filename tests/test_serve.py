"""The OpenAI-compatible server (notebook 09), on a free loopback port, called with the official `openai` client:
a tiny random model with the real tokenizer keeps it fast."""
import http.client
import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import torch

from smollm2 import LlamaForCausalLM, SmolLM2Config
from smollm2.generation import chat
from smollm2.serve import BackgroundServer, create_app

KEY = "test-key"
NAME = "tiny"
HELLO = [{"role": "user", "content": "Hello! Who are you?"}]


@pytest.fixture(scope="module")
def tiny():
    """Real vocabulary, 2 layers of width 64; no end-of-sequence id, so that only max_tokens or a stop ends a
    completion (a chat still ends at <|im_end|>)."""
    torch.manual_seed(0)
    return LlamaForCausalLM(SmolLM2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2,
                                          max_position_embeddings=4096, eos_token_id=[])).eval()


@pytest.fixture(scope="module")
def server(tiny, real_tok):
    app = create_app(tiny, real_tok, NAME, api_key=KEY)
    with BackgroundServer(app) as s:
        s.app = app
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0, timeout=20)


def post(server, path, body: bytes, key=KEY):
    """(status, JSON body) of a raw POST: lets a test send what the openai client would refuse to."""
    req = urllib.request.Request(server.url + path, data=body, method="POST", headers={
        "Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == [NAME]


def test_chat_streamed_equals_non_streamed_and_notebook_05s_chat(client, tiny, real_tok):
    reply = client.chat.completions.create(model=NAME, messages=HELLO, temperature=0, max_tokens=12)
    text = reply.choices[0].message.content
    assert text == chat(tiny, real_tok, HELLO, temperature=0, max_new_tokens=12)
    assert reply.choices[0].message.role == "assistant" and 1 <= reply.usage.completion_tokens <= 12
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    chunks = list(client.chat.completions.create(model=NAME, messages=HELLO, temperature=0, max_tokens=12,
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == reply.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
    assert all("\ufffd" not in (c.choices[0].delta.content or "") for c in chunks if c.choices)


def test_completion_with_stop_ends_before_the_stop_string(client):
    options = dict(model=NAME, prompt="Once upon a time", temperature=1.0, top_p=0.95, seed=7, max_tokens=24)
    full = client.completions.create(**options)
    text = full.choices[0].text
    assert full.choices[0].finish_reason == "length" and full.usage.completion_tokens == 24 and len(text) >= 8
    stop = text[len(text) // 2:len(text) // 2 + 2]
    cut = client.completions.create(**options, stop=[stop, "never appears \u2603"])
    assert cut.choices[0].text == text[:text.index(stop)] and cut.choices[0].finish_reason == "stop"
    streamed = client.completions.create(**options, stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == cut.choices[0].text


def test_eight_concurrent_requests_are_all_answered_as_if_alone(client):
    def ask(seed):
        return client.completions.create(model=NAME, prompt=f"Story {seed}:", temperature=1.0, seed=seed,
                                         max_tokens=6).choices[0].text

    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, range(8)))
    assert [ask(s) for s in (0, 5)] == [together[0], together[5]]      # queued requests do not disturb each other
    assert all(together) and len(set(together)) > 1


def test_bad_requests_are_answered_400_and_the_server_keeps_serving(server, client):
    good = {"model": NAME, "messages": HELLO, "max_tokens": 2}
    bad = [({**good, "model": "gpt-4o"}, "model"), ({**good, "max_tokens": 0}, "max_tokens"),
           ({**good, "max_tokens": 5000}, "max_tokens"), ({**good, "temperature": -1}, "temperature"),
           ({**good, "top_p": 0}, "top_p"), ({**good, "n": 2}, "n"), ({**good, "stop": ["a"] * 5}, "stop"),
           ({**good, "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
           ({**good, "messages": []}, "messages"), ({**good, "messages": [{"role": "user", "content": 3}]},
                                                     "messages[0].content")]
    for body, param in bad:
        status, answer = post(server, "/chat/completions", json.dumps(body).encode())
        assert status == 400 and answer["error"]["param"] == param, (body, answer)
        assert answer["error"]["type"] == "invalid_request_error" and param.split("[")[0] in answer["error"]["message"]
    status, answer = post(server, "/chat/completions", b'{"model": "tiny", "messages": [')
    assert status == 400 and "not valid JSON" in answer["error"]["message"]
    status, answer = post(server, "/completions", json.dumps({"model": NAME, "prompt": ""}).encode())
    assert status == 400 and answer["error"]["param"] == "prompt"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=NAME, messages=HELLO, temperature=-1)
    assert e.value.status_code == 400 and "temperature: expected a number in [0, 2], got -1" in e.value.message
    assert post(server, "/chat/completions", json.dumps(good).encode())[0] == 200


def test_a_wrong_or_missing_api_key_is_refused_401(server):
    wrong = openai.OpenAI(base_url=server.url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        wrong.models.list()
    assert e.value.status_code == 401 and "invalid API key" in e.value.message
    status, answer = post(server, "/completions", b"{}", key=None)
    assert status == 401 and answer["error"]["code"] == "invalid_api_key"


def test_a_client_that_disconnects_mid_stream_stops_its_generation(server, client):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    conn.request("POST", "/v1/completions", json.dumps({"model": NAME, "prompt": "Go on:", "max_tokens": 3000,
                                                        "temperature": 0, "stream": True}),
                 {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    response = conn.getresponse()
    assert response.status == 200 and response.readline().startswith(b"data: ")
    conn.sock.shutdown(2)                       # the client goes away mid-stream
    conn.close()
    deadline = time.monotonic() + 10
    while (server.app.state.stats["last"] or {}).get("finish_reason") != "disconnected":
        assert time.monotonic() < deadline, server.app.state.stats
        time.sleep(0.05)
    assert server.app.state.stats["last"]["completion_tokens"] < 3000
    assert client.completions.create(model=NAME, prompt="Still there?", max_tokens=2).choices[0].text  # lock freed


def test_serve_command_rejects_bad_arguments(capsys):
    from smollm2.cli import main

    with pytest.raises(SystemExit) as e:
        main(["serve", "--port", "eighty"])
    assert e.value.code == 2 and "--port" in capsys.readouterr().err
