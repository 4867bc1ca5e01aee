"""The vendored vLLM 0.32 flag table and the policy written against it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from sovereign_worker.engine_flag_policy import DENIED, JSON_KEY_ALLOWLIST, VALUE_ALLOWLIST
from sovereign_worker.vllm_flags import TABLE_RESOURCE, flag_table, get_flag

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[3]
PACKAGED_TABLE = REPO_ROOT / "worker" / "sovereign_worker" / "data" / TABLE_RESOURCE


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_vllm_flags", REPO_ROOT / "scripts" / "gen_vllm_flags.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_table_matches_the_captured_help() -> None:
    generator = _generator()
    help_path = generator.find_help()
    if help_path is None:
        pytest.skip("the shared vLLM 0.32 fixtures are not in this checkout")
    regenerated = generator.render(generator.generate(help_path.read_text(encoding="utf-8")))
    assert PACKAGED_TABLE.read_text(encoding="utf-8") == regenerated, (
        "run scripts/gen_vllm_flags.py and commit the table"
    )


def test_table_is_read_from_package_data() -> None:
    table = flag_table()
    assert table.vllm_version == "0.32.0"
    assert len(table.flags) > 300


@pytest.mark.parametrize(
    ("name", "takes_value", "multiple", "negatable"),
    [
        ("max-num-seqs", True, False, False),
        ("enable-prefix-caching", False, False, True),
        ("served-model-name", True, True, False),
        ("cudagraph-capture-sizes", True, True, False),
        ("disable-log-stats", False, False, False),
        ("headless", False, False, False),
    ],
)
def test_value_shapes(name: str, takes_value: bool, multiple: bool, negatable: bool) -> None:
    flag = get_flag(name)
    assert (flag.takes_value, flag.multiple, flag.negatable) == (takes_value, multiple, negatable)


def test_choices_in_both_help_formats() -> None:
    assert get_flag("dtype").choices == ("auto", "bfloat16", "float", "float16", "float32", "half")
    # argparse prints some choices as a Python list: ['auto', 'hf', 'mistral'].
    assert get_flag("config-format").choices == ("auto", "hf", "mistral")
    assert get_flag("max-num-seqs").choices is None


def test_aliases_and_special_shapes() -> None:
    assert get_flag("tensor-parallel-size").short_aliases == ("-tp",)
    assert get_flag("enable-expert-parallel").short_aliases == ("-ep",)
    assert get_flag("gpu-memory-utilization").long_aliases == ("device-memory-utilization",)
    assert get_flag("hf-token").value_optional
    assert get_flag("middleware").repeatable
    assert get_flag("compilation-config").json
    assert not get_flag("max-num-seqs").json


def test_lookup_resolves_negations_and_aliases() -> None:
    table = flag_table()
    negation = table.lookup("--no-enable-prefix-caching")
    assert negation is not None
    assert negation.flag.name == "enable-prefix-caching"
    assert negation.negated
    alias = table.lookup("--device-memory-utilization")
    assert alias is not None
    assert alias.flag.name == "gpu-memory-utilization"
    assert table.lookup("--no-max-num-seqs") is None
    assert table.lookup("max-num-seqs") is None
    owner = table.short_alias_owner("-q")
    assert owner is not None
    assert owner.name == "quantization"


def test_every_policy_entry_names_a_real_flag() -> None:
    names = set(flag_table().flags)
    assert set(DENIED) <= names, set(DENIED) - names
    assert set(VALUE_ALLOWLIST) <= names
    assert set(JSON_KEY_ALLOWLIST) <= names


def test_key_allowlists_are_for_json_flags_that_are_not_refused() -> None:
    for name in JSON_KEY_ALLOWLIST:
        assert get_flag(name).json
        assert name not in DENIED


def test_value_allowlists_are_for_flags_that_take_free_values() -> None:
    for name in VALUE_ALLOWLIST:
        flag = get_flag(name)
        assert flag.takes_value
        assert flag.choices is None
        assert name not in DENIED


def test_negation_is_only_allowed_where_the_flag_has_one() -> None:
    for name, denial in DENIED.items():
        if denial.negation_allowed:
            assert get_flag(name).negatable, name
