"""Reading vLLM 0.32's real /metrics pages (captured in tests/fixtures/vllm) into EngineLoad."""

from __future__ import annotations

from pathlib import Path

import pytest

from sovereign_operator.autoscaling.evidence import EngineLoad
from sovereign_operator.autoscaling.exposition import ExpositionError, parse_engine_load

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "vllm"


def page(name: str) -> str:
    return (FIXTURES / f"vllm-metrics-{name}.txt").read_text()


@pytest.mark.parametrize(
    ("name", "running", "waiting"),
    [("idle", 0, 0), ("busy", 4, 8), ("after", 0, 0)],
)
def test_real_pages_give_the_gauges_vllm_reported(name: str, running: int, waiting: int) -> None:
    load = parse_engine_load(page(name))

    assert (load.running, load.waiting) == (running, waiting)
    assert 0 <= load.kv_cache_usage < 0.01


def test_the_busy_page_reports_its_kv_cache_usage_exactly() -> None:
    assert parse_engine_load(page("busy")).kv_cache_usage == pytest.approx(0.0004883110541414881)


def test_samples_of_the_served_model_only_count() -> None:
    assert parse_engine_load(page("busy"), model_name="tiny").waiting == 8
    with pytest.raises(ExpositionError, match="for model 'llama'"):
        parse_engine_load(page("busy"), model_name="llama")


def two_engines(page_text: str) -> str:
    """The page as a data-parallel server with two engines would expose it."""
    lines = []
    for line in page_text.splitlines():
        lines.append(line)
        for family, value in (
            ("vllm:num_requests_running{", "3.0"),
            ("vllm:num_requests_waiting{", "5.0"),
            ("vllm:kv_cache_usage_perc{", "0.5"),
        ):
            if line.startswith(family):
                labels = line[len(family) : line.index("}")].replace('engine="0"', 'engine="1"')
                lines.append(f"{family}{labels}}} {value}")
    return "\n".join(lines) + "\n"


def test_engines_are_summed_and_kv_usage_is_averaged() -> None:
    load = parse_engine_load(two_engines(page("busy")))

    assert (load.running, load.waiting) == (4 + 3, 8 + 5)
    assert load.kv_cache_usage == pytest.approx((0.0004883110541414881 + 0.5) / 2)


def test_other_families_with_the_same_prefix_are_not_counted() -> None:
    # vllm:num_requests_waiting_by_reason (8 capacity + 0 deferred) follows the gauge.
    assert parse_engine_load(page("busy")).waiting == 8


def test_the_older_kv_cache_name_is_read_when_the_new_one_is_absent() -> None:
    text = page("busy").replace("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")

    assert parse_engine_load(text).kv_cache_usage == pytest.approx(0.0004883110541414881)


def test_help_and_type_lines_may_come_in_either_order() -> None:
    text = (
        "# TYPE vllm:num_requests_running gauge\n"
        "# HELP vllm:num_requests_running Running.\n"
        'vllm:num_requests_running{engine="0",model_name="m"} 2.0\n'
        'vllm:num_requests_waiting{engine="0",model_name="m"} 1.0\n'
        'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25\n'
    )

    assert parse_engine_load(text) == EngineLoad(waiting=1.0, running=2.0, kv_cache_usage=0.25)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no vllm:num_requests_running, vllm:num_requests_waiting, vllm:kv_cache_usage_perc"),
        ("# HELP up Up.\n# TYPE up gauge\nup 1.0\n", "no vllm:num_requests_running"),
        (page("busy").replace("vllm:num_requests_waiting{", "other{"), "num_requests_waiting"),
        (page("busy").replace('model_name="tiny"} 8.0', 'model_name="tiny"} NaN'), "nan"),
        (page("busy").replace('model_name="tiny"} 4.0', 'model_name="tiny"} -1.0'), "-1.0"),
        (page("busy").replace('model_name="tiny"} 4.0', 'model_name="tiny"} +Inf'), "inf"),
        ('vllm:num_requests_running{engine="0" 4.0\n', "unparsable"),
    ],
)
def test_a_page_without_usable_gauges_is_an_error_not_zero_load(text: str, message: str) -> None:
    with pytest.raises(ExpositionError, match=message):
        parse_engine_load(text)
