"""The routing preview (`ddm route`, ddm.tools.route): node, physical database and physical tables per statement, from a
configuration with table rules, without any data node."""

from __future__ import annotations

from pathlib import Path

import pytest

from ddm import config as config_mod
from ddm.tools import cli, route

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    p = tmp_path / "ddm.yaml"
    p.write_text(f"""\
users: [{{name: ddm, password: ddm}}]
nodes:
  n0: {{host: 127.0.0.1, port: 3310, user: u, password: p}}
  n1: {{host: 127.0.0.1, port: 3311, user: u, password: p}}
databases:
  sbtest: {{node: n0, database: sbtest_phys}}
include: [{ROOT / "examples/rules/sbshard-2x2.yaml"}]
""")
    return p


@pytest.fixture
def cfg(config_file: Path) -> config_mod.Config:
    return config_mod.load(str(config_file))


def _where(r: route.Route) -> list[tuple[str, str, str]]:
    return [(s.node, s.database, s.sql) for s in r.units]


def test_point_select_goes_to_one_physical_table(cfg: config_mod.Config) -> None:
    # id 7: data source 7 % 2 = 1 (n1, sbshard_1), table 7 / 2 % 2 = 1
    r = route.preview(cfg, "sbshard", "SELECT c FROM sbtest1 WHERE id = 7")
    assert r.error is None and r.sharded
    assert _where(r) == [("n1", "sbshard_1", "SELECT c FROM sbtest1_1 WHERE id = 7")]
    assert [(s.node, s.sql) for s in r.sent] == [("n1", "SELECT c FROM sbtest1_1 WHERE id = 7")]
    assert r.merge.startswith("none")


def test_in_list_split_per_shard_and_sent_once_per_node(cfg: config_mod.Config) -> None:
    r = route.preview(cfg, "sbshard", "SELECT id, k FROM sbtest1 WHERE id IN (1, 2, 3, 4)")
    assert _where(r) == [("n0", "sbshard_0", "SELECT id, k FROM sbtest1_0 WHERE id IN (4)"),
                         ("n0", "sbshard_0", "SELECT id, k FROM sbtest1_1 WHERE id IN (2)"),
                         ("n1", "sbshard_1", "SELECT id, k FROM sbtest1_0 WHERE id IN (1)"),
                         ("n1", "sbshard_1", "SELECT id, k FROM sbtest1_1 WHERE id IN (3)")]
    assert [s.node for s in r.sent] == ["n0", "n1"]
    assert "sbtest1_0" in r.sent[0].sql and "UNION ALL" in r.sent[0].sql and "sbtest1_1" in r.sent[0].sql
    text = route.format_route(r)
    assert "4 shards:" in text and "sent as 2 statement(s)" in text and "\n)" not in text


def test_aggregate_scatter_is_merged_by_ddm(cfg: config_mod.Config) -> None:
    r = route.preview(cfg, "sbshard", "SELECT COUNT(*) FROM sbtest2")
    assert {(n, db, sql.split(" FROM ")[1]) for n, db, sql in _where(r)} == {
        ("n0", "sbshard_0", "sbtest2_0"), ("n0", "sbshard_0", "sbtest2_1"),
        ("n1", "sbshard_1", "sbtest2_0"), ("n1", "sbshard_1", "sbtest2_1")}
    assert "COUNT" in r.merge and "4 shards" in r.merge


def test_insert_rows_split_and_writes_summed(cfg: config_mod.Config) -> None:
    r = route.preview(cfg, "sbshard", "INSERT INTO sbtest3 (id, k, c, pad) VALUES (100, 1, 'a', 'b'), "
                                      "(101, 2, 'c', 'd')")
    assert _where(r) == [("n0", "sbshard_0", "INSERT INTO sbtest3_0 (id, k, c, pad) VALUES (100, 1, 'a', 'b')"),
                         ("n1", "sbshard_1", "INSERT INTO sbtest3_0 (id, k, c, pad) VALUES (101, 2, 'c', 'd')")]
    assert r.merge == "affected rows summed over the shards"
    generated = route.preview(cfg, "sbshard", "INSERT INTO sbtest3 (k, c, pad) VALUES (1, 'a', 'b')")
    assert not generated.units and "segment" in generated.note and generated.error is None


def test_passthrough_refusals_and_unknown_database(cfg: config_mod.Config) -> None:
    r = route.preview(cfg, "sbtest", "SELECT c FROM sbtest1 WHERE id = 7")
    assert _where(r) == [("n0", "sbtest_phys", "SELECT c FROM sbtest1 WHERE id = 7")] and not r.sharded
    for db in ("sbtest", "sbshard"):
        refused = route.preview(cfg, db, "CREATE DATABASE newdb")
        assert refused.error is not None and refused.error[0] == 1235 and "ddm reload" in refused.error[1]
    union = route.preview(cfg, "sbshard", "SELECT c FROM sbtest1 WHERE id = 1 UNION SELECT c FROM sbtest1 WHERE id = 2")
    assert union.error is not None and union.error[0] == 1235
    assert route.preview(cfg, "nope", "SELECT 1").error[0] == 1049  # type: ignore[index]


def test_cli_prints_nodes_and_physical_tables(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["route", "--config", str(config_file), "-D", "sbshard",
                     "SELECT c FROM sbtest1 WHERE id = 7", "UPDATE sbtest2 SET k = k + 1 WHERE id = 5"]) == 0
    out = capsys.readouterr().out
    assert "sbshard> SELECT c FROM sbtest1 WHERE id = 7\n  n1.sbshard_1  SELECT c FROM sbtest1_1 WHERE id = 7" in out
    assert "n1.sbshard_1  UPDATE sbtest2_0 SET k = k + 1 WHERE id = 5" in out
    assert cli.main(["route", "--config", str(config_file), "-D", "sbshard", "DROP DATABASE sbshard"]) == 1
    assert "refused: ERROR 1235" in capsys.readouterr().out
    assert cli.main(["route", "--config", str(config_file), "-D", "missing", "SELECT 1"]) == 2
