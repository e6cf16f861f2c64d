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


# Batched decoding across requests: the Scheduler (no HTTP), then through the server.
from smollm2.generation import GenerationConfig  # noqa: E402
from smollm2.serve import Generation, Job, Scheduler, parse_request  # noqa: E402

PROMPTS = ["Hi", "The capital of France is", "Once upon a time, in a small village by the sea, there lived a",
           "def fibonacci(n):", "Water boils at", "List three colours:", "1, 2, 3, 4,", "Q: Why is the sky blue?\nA:"]


def completion_job(tok, lm, prompt, **body):
    return parse_request({"prompt": prompt, **body}, "completion", tok, lm.config, body.get("model", "m"))


def alone(model, tok, job):
    run = Generation(model, tok, job)
    return "".join(run), run.finish_reason, run.completion_tokens


def answers(rows):
    return [("".join(r), r.finish_reason, r.completion_tokens) for r in rows]


def test_eight_greedy_rows_decoded_together_equal_each_alone(tiny, real_tok):
    jobs = [completion_job(real_tok, tiny, p, temperature=0, max_tokens=4 + 3 * i) for i, p in enumerate(PROMPTS)]
    with Scheduler(tiny, real_tok, max_batch=8) as s:
        rows = [s.submit(job) for job in jobs]
        got = answers(rows)
    assert s.stats["largest_batch"] == 8
    assert got == [alone(tiny, real_tok, job) for job in jobs]
    assert [r[2] for r in got] == [4 + 3 * i for i in range(8)]       # each row its own max_tokens


def test_rows_keep_their_own_sampling_stops_and_seeds_in_a_batch(tiny, real_tok):
    bodies = [dict(temperature=1.0, seed=1, max_tokens=12), dict(temperature=0.7, top_p=0.9, seed=2, max_tokens=9),
              dict(temperature=0, max_tokens=15, stop=[" the", "e"]), dict(temperature=1.3, seed=3, max_tokens=5)]
    jobs = [completion_job(real_tok, tiny, PROMPTS[i + 2], **b) for i, b in enumerate(bodies)]
    with Scheduler(tiny, real_tok, max_batch=4) as s:
        got = answers([s.submit(job) for job in jobs])
    assert s.stats["largest_batch"] == 4
    assert got == [alone(tiny, real_tok, job) for job in jobs]
    assert {g[1] for g in got} >= {"length"}


def test_requests_that_arrive_mid_batch_join_it_and_are_answered_as_alone(tiny, real_tok):
    first = completion_job(real_tok, tiny, "Go on:", temperature=0, max_tokens=30)
    later = [completion_job(real_tok, tiny, PROMPTS[2] + " long prompt, longer than the batch", temperature=0,
                            max_tokens=10), completion_job(real_tok, tiny, "Hi", temperature=0, max_tokens=40)]
    joined, rows = [], []
    with Scheduler(tiny, real_tok, max_batch=4) as s:
        def send(piece):                           # the first row's 3rd piece: two more requests arrive
            pieces.append(piece)
            if len(pieces) == 3:
                joined.extend(s.submit(job) for job in later)
        pieces = []
        rows.append(s.submit(first, send))
        deadline = time.monotonic() + 10
        while rows[0].finish_reason is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        got = answers(joined)
    assert s.stats["largest_batch"] == 3 and rows[0].completion_tokens == 30
    assert "".join(p for p in pieces if p) == alone(tiny, real_tok, first)[0]
    assert got == [alone(tiny, real_tok, job) for job in later]


def test_a_cancelled_row_leaves_the_batch_and_the_others_go_on(tiny, real_tok):
    jobs = [completion_job(real_tok, tiny, p, temperature=0, max_tokens=200) for p in PROMPTS[:3]]
    with Scheduler(tiny, real_tok, max_batch=3) as s:
        rows = [s.submit(job) for job in jobs]
        next(iter(rows[1]))
        rows[1].cancel()
        got = answers([rows[0], rows[2]])
    assert rows[1].finish_reason == "disconnected" and rows[1].completion_tokens < 200
    assert got == [alone(tiny, real_tok, jobs[0]), alone(tiny, real_tok, jobs[2])]


def test_max_batch_is_validated(tiny, real_tok, capsys):
    from smollm2.cli import main

    for bad in (0, -1, 2.5, True, "8"):
        with pytest.raises(ValueError, match="max_batch: expected an integer >= 1"):
            create_app(tiny, real_tok, max_batch=bad)
    with pytest.raises(SystemExit) as e:
        main(["serve", "--max-batch", "0"])
    assert e.value.code == 2 and "--max-batch: expected an integer >= 1, got 0" in capsys.readouterr().err


def test_eight_concurrent_greedy_requests_through_the_server_equal_each_alone(server, client, tiny, real_tok):
    def ask(i):
        return client.completions.create(model=NAME, prompt=PROMPTS[i], temperature=0, max_tokens=20 + 5 * i)

    server.app.state.scheduler.stats["largest_batch"] = 0
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(ask, range(8)))
    expected = [alone(tiny, real_tok, completion_job(real_tok, tiny, PROMPTS[i], model=NAME, temperature=0,
                                                     max_tokens=20 + 5 * i)) for i in range(8)]
    assert [(r.choices[0].text, r.choices[0].finish_reason, r.usage.completion_tokens) for r in replies] == expected
    assert server.app.state.scheduler.stats["largest_batch"] >= 2      # decoded together, not one by one


def test_a_failing_step_ends_its_rows_with_error_and_the_scheduler_goes_on(tiny, real_tok, monkeypatch, caplog):
    import smollm2.batching as serve

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    job = completion_job(real_tok, tiny, "Hi", temperature=0, max_tokens=5)
    with Scheduler(tiny, real_tok) as s:
        monkeypatch.setattr(serve, "decode_one_token", broken)
        failed = s.submit(job)
        list(failed)                                    # the pieces until the row ends
        assert failed.finish_reason == "error" and failed.completion_tokens == 1    # the step after the prefill
        assert "batched decoding failed" in caplog.text
        monkeypatch.undo()
        assert answers([s.submit(job)]) == [alone(tiny, real_tok, job)]


def test_a_failing_generation_is_answered_500_and_the_server_keeps_serving(server, client, monkeypatch):
    import smollm2.batching as serve

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(serve, "decode_one_token", broken)
    status, answer = post(server, "/completions", json.dumps({"model": NAME, "prompt": "Hi", "max_tokens": 3}).encode())
    monkeypatch.undo()
    assert status == 500 and answer["error"]["type"] == "server_error" and "failed" in answer["error"]["message"]
    assert client.completions.create(model=NAME, prompt="Hi", max_tokens=3).usage.completion_tokens == 3


@pytest.mark.slow
def test_real_model_greedy_answers_are_the_same_batched_as_alone(real_ours, real_tok):
    """SmolLM2-135M-Instruct: 8 completions of different lengths decoded as one batch, token for token the
    answers each gets alone (batch float sums differ by ~1e-6; a near-tie could flip a token: none here)."""
    jobs = [completion_job(real_tok, real_ours, p, temperature=0, max_tokens=4 + i) for i, p in enumerate(PROMPTS)]
    with Scheduler(real_ours, real_tok, max_batch=8) as s:
        got = answers([s.submit(job) for job in jobs])
    assert s.stats["largest_batch"] == 8
    assert got == [alone(real_ours, real_tok, job) for job in jobs]
