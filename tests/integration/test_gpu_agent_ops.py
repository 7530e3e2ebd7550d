"""The agent's operations surface against real servers: the wall-clock run loop with a
real broker, its Prometheus endpoint, and token counters from an inference server's
metrics endpoint (a real HTTP server on 127.0.0.1 speaking vLLM's and TGI's formats)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents.gpu.run import SourceSetup, build_agent, run
from agents.gpu.sources import SimSource
from agents.settings import GpuAgentSettings
from agents.tokens import TokenScraper, counter_values
from schemas.settings import KafkaSettings
from schemas.topics import Topics, spec
from streams.embedded.broker import free_port
from tests.kafka_read import read_topic
from tests.scripted_http import ScriptedServer, scripted_server

VLLM = """# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{{model_name="meta-llama/Llama-3.1-8B-Instruct"}} {prompt}
vllm:prompt_tokens_total{{model_name="Qwen/Qwen2.5-0.5B"}} 5.0
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{{model_name="meta-llama/Llama-3.1-8B-Instruct"}} {generation}
# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{model_name="meta-llama/Llama-3.1-8B-Instruct"}} 3.0
"""

TGI = """# TYPE tgi_request_input_length histogram
tgi_request_input_length_bucket{le="10"} 1
tgi_request_input_length_bucket{le="+Inf"} 4
tgi_request_input_length_sum 812
tgi_request_input_length_count 4
# TYPE tgi_request_generated_tokens histogram
tgi_request_generated_tokens_bucket{le="+Inf"} 4
tgi_request_generated_tokens_sum 233
tgi_request_generated_tokens_count 4
"""


class InferenceServer:
    """vLLM's /metrics on a real HTTP server; ``status`` other than 200 simulates a failure."""

    def __init__(self, server: ScriptedServer) -> None:
        self._server = server
        self.url = f"{server.url}/metrics"
        self.status = 200
        self.set(0, 0)

    def set(self, prompt: float, generation: float) -> None:
        self._body = VLLM.format(prompt=float(prompt), generation=float(generation))
        self._server.script("/metrics", (self.status, self._body))

    def fail(self, status: int) -> None:
        self.status = status
        self._server.script("/metrics", (status, "<html>busy</html>"))


@pytest.fixture
def inference() -> Iterator[InferenceServer]:
    with scripted_server() as server:
        yield InferenceServer(server)


def test_token_deltas_survive_failures_and_counter_resets(inference: InferenceServer) -> None:
    scraper = TokenScraper(
        inference.url, "vllm:prompt_tokens_total", "vllm:generation_tokens_total"
    )
    inference.set(1000, 100)
    assert not scraper.take()  # the first scrape is the baseline: earlier tokens are not ours
    inference.set(1600, 180)
    first = scraper.take()
    assert (first.prompt, first.generation) == (600, 80)
    inference.fail(503)
    assert not scraper.take() and scraper.errors == 1
    inference.status = 200
    inference.set(2000, 200)  # the gap is covered by the next good scrape
    gap = scraper.take()
    assert (gap.prompt, gap.generation) == (400, 20)
    inference.set(50, 7)  # the server restarted: counters began again at zero
    reset = scraper.take()
    assert (reset.prompt, reset.generation) == (50, 7)
    scraper.close()
    down = TokenScraper(f"http://127.0.0.1:{free_port()}/metrics", "a", "b")
    assert not down.take() and down.errors == 1  # nothing listening: an error, not a crash
    down.close()


def test_tgi_metric_names_are_read_too() -> None:
    values = counter_values(
        TGI, ("tgi_request_input_length_sum", "tgi_request_generated_tokens_sum")
    )
    assert sorted(values.values()) == [233.0, 812.0]


def _metrics(url: str) -> dict[str, float]:
    text = httpx.get(url, timeout=2).text
    return {
        sample.name + str(sorted(sample.labels.items()) or ""): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_run_loop_publishes_exact_energy_serves_metrics_and_attaches_tokens(
    kafka: KafkaSettings, topics: Topics, tmp_path: Path, inference: InferenceServer
) -> None:
    port = free_port()
    settings = GpuAgentSettings(
        kafka=kafka,
        spool_dir=tmp_path,
        host="h1",
        zone="DE",
        site="s1",
        source="sim",
        job="serving",
        tenant="acme",
        metrics_port=port,
        metrics_addr="127.0.0.1",
        inference_metrics_url=inference.url,
        sample_interval_s=0.25,
        publish_interval_s=0.5,
    )
    sim = SimSource(gpus=2, seed=9, host="h1")
    start = sim.counters()
    agent = build_agent(settings, SourceSetup(sim, "sim"))
    stop = threading.Event()
    done: dict[str, Any] = {}

    def loop() -> None:
        done["publisher"] = run(settings, agent, stop, duration_s=60)

    thread = threading.Thread(target=loop)
    thread.start()
    inference.set(100, 10)  # baseline may be 0 or 100: only later increases count
    deadline = time.monotonic() + 20
    while agent.counters.batches < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    inference.set(5100, 710)
    mark = agent.counters.batches
    deadline = time.monotonic() + 20
    # two batches later, a whole publish tick ran after the new values were set: scraped
    while agent.counters.batches < mark + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    seen = _metrics(f"http://127.0.0.1:{port}/metrics")
    stop.set()
    thread.join(30)
    publisher = done["publisher"]
    assert publisher.stats.delivered == agent.counters.batches >= 3

    batches = read_topic(
        kafka.bootstrap_servers,
        topics.name("samples"),
        "gpu_sample_batch",
        publisher.stats.delivered,
        partitions=spec("samples").partitions,
    )
    samples = [s for b in batches for s in b["samples"]]
    for uuid, before in start.items():
        mine = [s for s in samples if s["gpu_uuid"] == uuid]
        assert [s["seq"] for s in sorted(mine, key=lambda s: s["seq"])] == list(range(len(mine)))
        assert sum(s["energy_mj"] for s in mine) == sim.counters()[uuid] - before
    shares = [j for s in samples for j in s["jobs"]]
    assert {(j["job_id"], j["tenant"]) for j in shares} == {("serving", "acme")}
    # Every increase after the baseline scrape, once: (5100, 710) when the baseline scrape
    # came before set(100, 10), else (5000, 700).
    totals = (sum(j["prompt_tokens"] for j in shares), sum(j["generation_tokens"] for j in shares))
    assert totals in {(5100, 710), (5000, 700)}

    label = str(
        [
            ("Hostname", "h1"),
            ("UUID", "GPU-sim-h1-0"),
            ("gpu", "0"),
            ("modelName", "NVIDIA A40 (sim)"),
        ]
    )
    assert seen["llcr_gpu_energy_joules_total" + label] > 0
    assert seen["llcr_agent_samples_total"] >= 4
    assert 0 <= seen["llcr_agent_spool_batches"] <= agent.counters.batches  # a live gauge
    # a scrape can time out (0.5 s) on a loaded machine: it is counted, and the next good
    # scrape covers the gap, which the exact totals above check
    assert seen["llcr_agent_token_scrape_errors_total"] <= 2
    assert seen["process_cpu_seconds_total"] > 0
