"""The judge behind an OpenAI-compatible server, against a local fake server (real HTTP, canned answers): the expected
score equals the hand computation from the returned log-probabilities, parse mode reads "Score: N", a malformed
judgement gives None (counted), transient failures are retried and a dead or refusing server is named."""

import json
import math
import pickle
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from trl_rewards.inference.judge_scoring import expected_score_from_logprobs
from trl_rewards.rewards.implicit_rewards import JudgeRewardFunction
from trl_rewards.rewards.openai_judge import EndpointError, OpenAIJudgeScorer
from trl_rewards.testing import tiny_llama_tokenizer

# p("3") = 0.5, p(" 4") + p("4") = 0.3, p("0") = 0.05, and a non-score token: E = (3·0.5 + 4·0.3) / 0.85 = 2.7 / 0.85
GOOD = {"3": math.log(0.5), " 4": math.log(0.2), "4": math.log(0.1), "x": math.log(0.15), "0": math.log(0.05)}
NO_SCORE = {"The": -0.1, "I": -2.0}


class FakeServer:
    """`/v1/completions` and `/v1/chat/completions` with answers chosen by the response text; the first `fail`
    requests get a 503, and any request for the model "wrong" a 400."""

    def __init__(self, fail: int = 0):
        self.requests, self.fail = [], fail
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append((self.path, body))
                if len(owner.requests) <= owner.fail:
                    return self._send(503, {"error": "warming up"})
                if body["model"] == "wrong":
                    return self._send(400, {"error": "model 'wrong' does not exist"})
                if self.path == "/v1/chat/completions":
                    content = body["messages"][0]["content"]
                    text = "Helpful. Score: 4" if "good" in content else "I cannot rate this."
                    return self._send(200, {"choices": [{"index": 0, "message": {"content": text}}]})
                choices = []
                for i, prompt in enumerate(body["prompt"]):
                    if body.get("logprobs"):
                        top = GOOD if "good" in prompt else NO_SCORE
                        choices.append({"index": i, "text": "3", "logprobs": {"top_logprobs": [top]}})
                    else:
                        choices.append({"index": i, "text": "Score: 2" if "good" in prompt else "no idea"})
                self._send(200, {"choices": choices[::-1]})  # out of order: the client sorts by index

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    fake = FakeServer()
    yield fake
    fake.close()


def test_expected_score_from_logprobs_by_hand():
    assert expected_score_from_logprobs(GOOD) == pytest.approx(2.7 / 0.85, abs=1e-12)
    assert expected_score_from_logprobs({"5": 0.0}) == 5.0
    assert expected_score_from_logprobs(NO_SCORE) is None
    assert expected_score_from_logprobs({"10": -0.1, "55": -0.2, "2": math.log(0.1)}) == 2.0  # only single digits


def test_expected_mode_reads_the_logprobs_and_counts_malformed(server):
    logged = {}
    reward = JudgeRewardFunction("judge-7b", endpoint=server.url, batch_size=2, name="judge")
    rewards = reward(
        prompts=["Q1", "Q2", "Q3"], completions=["good", "junk", "good too"], log_metric=logged.__setitem__
    )
    assert rewards == pytest.approx([2.7 / 0.85, None, 2.7 / 0.85], abs=1e-12)
    assert logged == {"judge/num_unparsable": 1.0}
    assert [path for path, _ in server.requests] == ["/v1/completions"] * 2  # 3 prompts in batches of 2
    # the two batches are sent concurrently, so they may arrive in either order
    body = next(body for _, body in server.requests if len(body["prompt"]) == 2)
    assert (body["model"], body["max_tokens"], body["logprobs"], body["temperature"]) == ("judge-7b", 1, 20, 0.0)
    assert body["prompt"][0].endswith("Response: good\n\n" + 'Explain your total score in at most 100 words, then '
                                      'end with the line "Score: <total points>".\nScore: ')  # fmt: skip


def test_expected_mode_renders_the_served_models_chat_template(server):
    scorer = OpenAIJudgeScorer(server.url, "judge", tokenizer=tiny_llama_tokenizer())
    assert scorer.score(["Q"], ["good"]) == pytest.approx([2.7 / 0.85])
    prompt = server.requests[0][1]["prompt"][0]
    assert prompt.startswith("<|user|>Review the user's question") and prompt.endswith("</s><|assistant|>Score: ")


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_parse_mode_reads_score_lines_and_counts_the_rest(server, api):
    scorer = OpenAIJudgeScorer(server.url, "judge", mode="parse", api=api)
    assert scorer.score(["Q1", "Q2"], ["good", "junk"]) == [4 if api == "chat" else 2, None]
    assert scorer.n_unparsable == 1
    assert {path for path, _ in server.requests} == {f"/v1/{'chat/' if api == 'chat' else ''}completions"}


def test_transient_failures_are_retried_with_backoff():
    fake = FakeServer(fail=2)
    try:
        scorer = OpenAIJudgeScorer(fake.url, "judge", retries=2, backoff=0.01)
        assert scorer.score(["Q"], ["good"]) == pytest.approx([2.7 / 0.85])
        assert len(fake.requests) == 3
    finally:
        fake.close()


def test_refusing_and_dead_servers_are_named(server):
    with pytest.raises(EndpointError, match=r"/v1/completions refused the request: HTTP 400.*does not exist"):
        OpenAIJudgeScorer(server.url, "wrong", retries=3).score(["Q"], ["good"])
    assert len(server.requests) == 1  # a 4xx is not retried
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    with pytest.raises(EndpointError, match=rf"{dead}/chat/completions failed after 2 attempts: ConnectError"):
        OpenAIJudgeScorer(dead, "judge", mode="parse", retries=1, backoff=0.01, timeout=2).score(["Q"], ["a"])


def test_endpoint_judge_checks_options_and_pickles(server):
    with pytest.raises(ValueError, match="use api='completions'"):
        OpenAIJudgeScorer(server.url, "judge", api="chat")
    with pytest.raises(ValueError, match="endpoint must be an http"):
        OpenAIJudgeScorer("localhost:8000", "judge")
    with pytest.raises(ValueError, match="model must be the served model's name"):
        OpenAIJudgeScorer(server.url, None)
    with pytest.raises(TypeError, match="options of a judge endpoint"):
        JudgeRewardFunction("path", retries=2)
    reward = pickle.loads(pickle.dumps(JudgeRewardFunction("judge", endpoint=server.url, mode="parse")))
    assert reward.__name__ == "judge" and reward(prompts=["Q"], completions=["good"]) == [4]
