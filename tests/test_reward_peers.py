"""The reward service as stock trainers use it: OpenRLHF's own reward client and post-processing
(the released wheel, downloaded at test time), and veRL-style custom reward calls."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import types
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from reward_service_fixtures import start_service

OPENRLHF_VERSION = "0.11.2"
VERL_VERSION = "0.9.1"
CACHE = Path(__file__).resolve().parents[1] / ".cache" / "openrlhf"
TOKEN = "peer-token-0123456789-abcdefghijklmnop"


def _released(package: str, version: str, marker: str) -> Path:
    """A released wheel (no dependencies), unpacked; downloaded once into .cache/ (a failure fails
    the test). Returns the directory that holds the package, found by one of its files."""
    cache = CACHE.parent / package
    wheels = sorted(cache.glob(f"{package}-{version}-*.whl"))
    if not wheels:
        cache.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", f"{package}=={version}", "-d", str(cache)],
            capture_output=True,
            text=True,
        )
        wheels = sorted(cache.glob(f"{package}-{version}-*.whl"))
        if r.returncode or not wheels:
            pytest.fail(f"could not download {package}=={version}: {r.stderr[-2000:]}")
    dest = cache / f"unpacked-{version}"
    if not dest.exists():
        with zipfile.ZipFile(wheels[0]) as z:
            z.extractall(dest)
    depth = marker.count("/")
    return next(p.parents[depth] for p in dest.rglob(marker))


def _openrlhf_root() -> Path:
    return _released("openrlhf", OPENRLHF_VERSION, "openrlhf/utils/agent.py")


@pytest.fixture
def openrlhf(monkeypatch):
    """OpenRLHF's modules, imported from its own files. Package __init__s that pull in deepspeed/vLLM
    are skipped (packages registered with their real __path__); vLLM, absent on CPU, is stubbed
    with the one name the samples generator imports at module level."""
    root = _openrlhf_root() / "openrlhf"
    for name in [n for n in sys.modules if n == "openrlhf" or n.startswith("openrlhf.")]:
        monkeypatch.delitem(sys.modules, name)
    for pkg in ("", ".utils", ".trainer", ".trainer.ray", ".trainer.ppo_utils"):
        mod = types.ModuleType("openrlhf" + pkg)
        mod.__path__ = [str(root / pkg.lstrip(".").replace(".", "/"))]
        monkeypatch.setitem(sys.modules, "openrlhf" + pkg, mod)
    if "vllm" not in sys.modules:
        monkeypatch.setitem(sys.modules, "vllm", SimpleNamespace(SamplingParams=object))
    monkeypatch.setitem(sys.modules, "openrlhf.trainer.ray.vllm_engine", SimpleNamespace(batch_vllm_engine_call=None))
    import importlib

    agent = importlib.import_module("openrlhf.utils.agent")
    gen = importlib.import_module("openrlhf.trainer.ppo_utils.samples_generator")
    assert Path(agent.__file__).is_relative_to(root)
    return agent, gen


@pytest.fixture
def service(committed_em):
    srv = start_service(committed_em, TOKEN)
    yield srv.url, committed_em
    srv.shutdown()


class CharTokenizer:
    """One token per character, so OpenRLHF's decoded query is exactly prompt + response."""

    def __call__(self, text, add_special_tokens=False, return_tensors=None):
        import torch

        return {"input_ids": torch.tensor([[ord(c) for c in text]])}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(i) for i in ids)


class FixedEngine:
    def __init__(self, response: str) -> None:
        self.response = response

    async def generate(self, prompt_token_ids, params, multi_modal_data=None):
        out = SimpleNamespace(token_ids=[ord(c) for c in self.response], finish_reason="stop", logprobs=None)
        return SimpleNamespace(outputs=[out])


def _rollout(agent, gen, rm_url, prompt, response, label):
    """OpenRLHF's single-turn executor (reward fetched by its own code) and its conversion of the
    answer into an Experience (extra_logs -> tensors)."""
    executor = agent.SingleTurnAgentExecutor(remote_rm_url=rm_url)
    params = SimpleNamespace(max_tokens=64, logprobs=None)
    output = asyncio.run(executor.execute(prompt, label, params, 256, CharTokenizer(), FixedEngine(response)))
    return output, gen.SamplesGenerator._process_response_into_experience(None, output, max_len=256)


def test_openrlhf_credential_in_url(openrlhf, service) -> None:
    agent, gen = openrlhf
    url, em = service
    rm = url.replace("http://", f"http://trainer:{TOKEN}@") + "/get_reward"
    output, exp = _rollout(agent, gen, [rm], "Q: 6*7? A:", " it is #### 42", "42")
    assert output["reward"] == [1.0] and output["scores"] == [1.0]
    assert float(exp.rewards.flatten()[0]) == 1.0 and float(exp.info["score"].flatten()[0]) == 1.0
    assert {"valid", "verifiable"} <= set(exp.info) and float(exp.info["valid"].flatten()[0]) == 1.0
    # a wrong answer and an item the service cannot score both post-process cleanly
    _, exp = _rollout(agent, gen, [rm, rm], "Q: 6*7? A:", " 1 2 3 41 43", "42")
    assert float(exp.rewards.flatten()[0]) == 0.0
    _, exp = _rollout(agent, gen, [rm], "Q: name? A:", " Bob", None)
    assert float(exp.info["valid"].flatten()[0]) == 0.0 and float(exp.rewards.flatten()[0]) == 0.0
    from sqlalchemy import text

    with em.session() as s:
        assert s.scalar(text("SELECT count(*) FROM serving_events WHERE token_name = 'env'")) == 3


def test_openrlhf_without_credential_gets_401(openrlhf, service, monkeypatch) -> None:
    agent, _ = openrlhf
    url, _ = service
    statuses = []
    real_sleep = asyncio.sleep
    monkeypatch.setattr(agent.asyncio, "sleep", lambda s: real_sleep(0))  # its 5 retries, without the waits
    orig = agent.logger.info
    monkeypatch.setattr(agent.logger, "info", lambda msg, *a: (statuses.append(str(msg)), orig(msg, *a)))
    executor = agent.SingleTurnAgentExecutor(remote_rm_url=[url + "/get_reward"])
    with pytest.raises(RuntimeError, match="Request error for 5 times"):
        asyncio.run(executor._fetch_rewards_via_http(["Q 4"], ["Q"], ["4"]))
    assert statuses and all("401" in s for s in statuses)


def test_openrlhf_file_mode(openrlhf, service, monkeypatch) -> None:
    agent, gen = openrlhf
    url, _ = service
    monkeypatch.setenv("EARMARK_REWARD_URL", url + "/get_reward")
    monkeypatch.setenv("EARMARK_REWARD_TOKEN", TOKEN)
    path = Path(__file__).resolve().parents[1] / "reward_models" / "openrlhf_reward_func.py"
    output, exp = _rollout(agent, gen, [str(path)], "Q: 2+2? A:", " \\boxed{4}", 4)
    assert float(exp.rewards.flatten()[0]) == 1.0 and float(exp.info["verifiable"].flatten()[0]) == 1.0


# ---------------------------------------------------------------- veRL


@pytest.fixture
def verl(service, monkeypatch):
    from reward_models import remote

    url, em = service
    monkeypatch.setenv("EARMARK_REWARD_URL", url + "/get_reward")
    monkeypatch.setenv("EARMARK_REWARD_TOKEN", TOKEN)
    monkeypatch.setattr(remote, "_client", None)
    return remote, em


# (data_source, solution_str, ground_truth, expected score) in the forms of veRL's example datasets
VERL_CASES = [
    ("openai/gsm8k", "Natalia sold 48/2 = 24 clips in May.\n#### 72", "72", 1.0),
    ("openai/gsm8k", "so 48 + 24 = 72, hence #### 71", "72", 0.0),
    ("lighteval/MATH", "The answer is $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}", 1.0),
    ("DigitalLearningGmbH/MATH-lighteval", "Thus \\boxed{0.5}", "\\frac{1}{2}", 1.0),
    ("HuggingFaceH4/MATH-500", "\\boxed{10}", 10, 1.0),
    ("math_dapo", "Answer: 1,000", np.int64(1000), 1.0),
    ("aime2024", "\\boxed{204}", np.array(["204"]), 1.0),
    ("searchR1_nq", "the answer is Paris", {"target": np.array(["Paris", "paris, france"])}, 1.0),
    (
        "toolace",
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>',
        [{"name": "get_weather", "arguments": {"city": "Paris"}}],
        1.0,
    ),
    ("custom/unknown", "42", [41.0, 42.0], 1.0),
]


@pytest.mark.parametrize("ds, sol, gt, want", VERL_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(VERL_CASES)])
def test_verl_compute_score(verl, ds, sol, gt, want) -> None:
    remote, _ = verl
    out = remote.compute_score(ds, sol, gt, extra_info={"index": 3, "split": "train"})
    assert out["score"] == want and out["valid"] == 1.0
    assert set(out) == {"score", "valid", "verifiable", "preference"}


def test_verl_batch_and_provenance(verl) -> None:
    from sqlalchemy import text

    remote, em = verl
    ds, sols, gts, _ = zip(*VERL_CASES, strict=True)
    extras = [{"index": i, "global_step": 5, "run_id": "ppo-1"} for i in range(len(sols))]
    extras[-1]["regime"] = "reasoning"
    out = remote.compute_score_batch(list(ds), list(sols), list(gts), extras)
    assert [o["score"] for o in out] == [c[3] for c in VERL_CASES]
    with em.session() as s:
        rows = s.execute(
            text("SELECT run_id, global_step, sample_uid FROM serving_events ORDER BY sample_uid::int")
        ).all()
    assert [tuple(r) for r in rows] == [("ppo-1", 5, str(i)) for i in range(len(sols))]


def test_verl_client_error_is_clear(verl, monkeypatch) -> None:
    remote, _ = verl
    monkeypatch.setenv("EARMARK_REWARD_TOKEN", "wrong-token-0123456789abcdef")
    monkeypatch.setattr(remote, "_client", None)
    with pytest.raises(remote.RemoteRewardError, match="401"):
        remote.compute_score("openai/gsm8k", "#### 1", "1")
    assert remote.regime_for("openai/gsm8k") == "reasoning" and remote.regime_for("x", {"regime": "asr"}) == "asr"


@pytest.fixture
def verl_own(monkeypatch):
    """veRL's own reward-function loader (verl.trainer.ppo.reward.get_custom_reward_fn) and rule
    scorers (verl.utils.reward_score), imported from the released wheel. Package __init__s that
    pull in torch/tensordict/transformers are skipped (packages registered with their real
    __path__); ``verl.DataProto``, only a type name for these modules, is a placeholder."""
    import importlib

    root = _released("verl", VERL_VERSION, "verl/trainer/ppo/reward.py") / "verl"
    for name in [n for n in sys.modules if n == "verl" or n.startswith("verl.")]:
        monkeypatch.delitem(sys.modules, name)
    for pkg in ("", ".utils", ".trainer", ".trainer.ppo"):
        mod = types.ModuleType("verl" + pkg)
        mod.__path__ = [str(root / pkg.lstrip(".").replace(".", "/"))]
        monkeypatch.setitem(sys.modules, "verl" + pkg, mod)
    sys.modules["verl"].DataProto = type("DataProto", (), {})
    reward = importlib.import_module("verl.trainer.ppo.reward")
    scores = importlib.import_module("verl.utils.reward_score")
    assert Path(reward.__file__).is_relative_to(root)
    return reward, scores


def _verl_config(name: str) -> SimpleNamespace:
    path = Path(__file__).resolve().parents[1] / "reward_models" / "remote.py"
    return SimpleNamespace(reward={"custom_reward_function": {"path": str(path), "name": name, "reward_kwargs": {}}})


def test_verl_loads_and_calls_the_custom_reward_file_itself(verl, verl_own) -> None:
    """veRL 0.9.1 loads reward_models/remote.py by path (as a fresh module) and calls it as its
    NaiveRewardManager (per sample, keyword arguments) and BatchRewardManager do."""
    reward, _ = verl_own
    fn = reward.get_custom_reward_fn(_verl_config("compute_score"))
    for ds, sol, gt, want in VERL_CASES:
        out = fn(data_source=ds, solution_str=sol, ground_truth=gt, extra_info={"index": 0, "split": "train"})
        assert out["score"] == want and set(out) == {"score", "valid", "verifiable", "preference"}, (ds, out)
    batch = reward.get_custom_reward_fn(_verl_config("compute_score_batch"))
    ds, sols, gts, wants = zip(*VERL_CASES, strict=True)
    extras = np.array([{"index": i, "split": "train"} for i in range(len(sols))], dtype=object)
    out = batch(
        data_sources=np.array(ds, dtype=object), solution_strs=list(sols), ground_truths=list(gts), extra_infos=extras
    )
    assert [o["score"] for o in out] == list(wants)


# veRL's own example answer formats (examples/data_preprocess: GSM8K ground truth = the number after
# '####' as a string, MATH = the boxed answer's LaTeX), where its own rule scorer is defined
VERL_AGREE = [
    ("openai/gsm8k", "48 + 24 = 72 clips.\n#### 72", "72"),
    ("openai/gsm8k", "48 + 24 = 72 clips.\n#### 71", "72"),
    ("openai/gsm8k", "#### 1,000", "1000"),
    ("lighteval/MATH", "The answer is $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
    ("DigitalLearningGmbH/MATH-lighteval", "so \\boxed{\\dfrac{3}{4}}", "\\frac{3}{4}"),
    ("HuggingFaceH4/MATH-500", "so \\boxed{5}", "7"),
]


@pytest.mark.parametrize("ds, sol, gt", VERL_AGREE, ids=[f"{c[0]}-{i}" for i, c in enumerate(VERL_AGREE)])
def test_verl_scores_agree_with_verls_own_rule_scorers(verl, verl_own, ds, sol, gt) -> None:
    remote, _ = verl
    _, own = verl_own
    theirs = own.default_compute_score(ds, sol, gt)
    assert remote.compute_score(ds, sol, gt)["score"] == float(theirs)
