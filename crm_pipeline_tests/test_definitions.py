"""The code location loads, and every asset is described, grouped by its schema and checked."""

from __future__ import annotations

import dagster as dg

from crm_pipeline.definitions import defs
from crm_pipeline.dictionary import TABLES as DICTIONARY_TABLES
from crm_pipeline.dictionary import data_dictionary
from crm_pipeline.mining.schemas import MINING_MODELS
from crm_pipeline.raw.schemas import RAW_MODELS


def _graph() -> dg.AssetGraph:
    return defs.resolve_asset_graph()


def test_definitions_load_with_every_raw_table() -> None:
    keys = {key.to_user_string() for key in _graph().get_all_asset_keys()}
    assert {f"raw/{table}" for table in RAW_MODELS} <= keys


def test_every_asset_has_a_description_and_its_schema_as_group() -> None:
    graph = _graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description and node.description.strip(), key
        assert node.group_name == key.path[0], key


def test_every_asset_has_a_check() -> None:
    graph = _graph()
    checked = {check.asset_key for check in graph.asset_check_keys}
    assert checked == set(graph.get_all_asset_keys())


def test_every_contract_column_has_a_description() -> None:
    for table, model in RAW_MODELS.items():
        for name, column in model.to_schema().columns.items():
            assert column.description, f"raw.{table}.{name}"


def test_every_table_asset_shows_its_columns_with_personal_data_tagged() -> None:
    graph = _graph()
    whole_files = {dg.AssetKey(["mining", "report"]), dg.AssetKey(["warehouse", "published"])}
    tables = [key for key in graph.get_all_asset_keys() if key not in whole_files]
    assert len(tables) == len(graph.get_all_asset_keys()) - 2
    for key in tables:
        schema = graph.get(key).metadata["dagster/column_schema"]
        assert all(column.description for column in schema.columns), key
    feedback = graph.get(dg.AssetKey(["raw", "feedback"])).metadata["dagster/column_schema"]
    personal = {c.name for c in feedback.columns if c.tags.get("personal_data") == "true"}
    assert personal == {"email", "phone", "comment", "extra_columns"}


def test_data_dictionary_lists_every_table_with_grain_and_personal_columns() -> None:
    text = data_dictionary()
    for table in RAW_MODELS:
        assert f"## raw.{table}\n\n{RAW_MODELS[table].__doc__.splitlines()[0]}" in text
    # A grain written over several lines of its docstring is shown whole, as one sentence.
    for table, (model, _) in DICTIONARY_TABLES.items():
        shown = text.split(f"## {table}\n\n")[1].split("\n")[0]
        assert shown.endswith((".", ")")), (table, shown)
        assert shown.split()[:4] == model.__doc__.split()[:4], table
    assert (
        "## mining.recommendations\n\n"
        + " ".join(MINING_MODELS["recommendations"].__doc__.split("\n\n")[0].split())
        + "\n"
    ) in text
    assert "## quarantine.raw_rejects" in text
    assert "| email | VARCHAR | yes | Respondent email. Personal data. |" in text
    assert "| source_line | BIGINT |  |" in text


def test_every_mart_waits_for_the_order_lines_that_set_its_day() -> None:
    graph = _graph()
    # The report reads only marts, and waits for them.
    report = dg.AssetKey(["mining", "report"])
    marts = [
        k
        for k in graph.get_all_asset_keys()
        if k.path[0] in ("analytics", "mining") and k != report
    ]
    assert len(marts) > 10
    for key in marts:
        assert dg.AssetKey(["core", "order_lines"]) in graph.get(key).parent_keys, key
