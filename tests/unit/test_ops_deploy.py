"""deploy/: the Grafana dashboard and the Prometheus rules name only metrics the workers export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from consentgate.catalog import Catalog
from consentgate.streams.metrics import AuditMetrics, ConsentMetrics, GateMetrics, MeteringMetrics, SinkMetrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "gauge": ("",), "summary": ("_count", "_sum", "_created")}
NAME = re.compile(r"\b(consentgate[_:][A-Za-z0-9_:]*)")


def exported(catalog: Catalog) -> set[str]:
    """Every sample name any worker's registry can export (labelled families included before first use)."""
    names: set[str] = set()
    for metrics in (GateMetrics(catalog), MeteringMetrics(catalog), ConsentMetrics(), SinkMetrics(catalog),
                    AuditMetrics()):
        for family in metrics.registry.collect():
            names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def rules() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text()))


def recorded() -> set[str]:
    return {r["record"] for g in rules()["groups"] for r in g["rules"] if "record" in r}


def dashboard_exprs() -> list[str]:
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "consentgate.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def unknown_names(exprs: list[str], known: set[str]) -> set[str]:
    return {name for expr in exprs for name in NAME.findall(expr)} - known


def test_the_dashboard_is_valid_json_and_names_only_exported_metrics(catalog: Catalog) -> None:
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "consentgate.json").read_text())
    assert dash["uid"] == "consentgate"
    titles = [p["title"] for p in dash["panels"]]
    for wanted in ("Funnel (per second)", "Drop reasons over time", "Passes per purpose", "Consumer lag per partition",
                   "Revocation → enforcement", "Dead letters by class"):
        assert wanted in titles
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    exprs = dashboard_exprs()
    assert all(NAME.search(e) for e in exprs), "every query names a consentgate metric"
    assert unknown_names(exprs, exported(catalog) | recorded()) == set()


def test_the_name_check_catches_a_metric_nobody_exports(catalog: Catalog) -> None:
    known = exported(catalog) | recorded()
    assert unknown_names(["rate(consentgate_records_in_total[5m])", "sum(consentgate_made_up_total)"],
                         known) == {"consentgate_made_up_total"}
    assert "consentgate_outcomes_total" in known and "consentgate_sink_rows_written_total" in known


def test_every_rule_names_only_exported_metrics_and_every_alert_says_what_to_do(catalog: Catalog) -> None:
    all_rules = [r for g in rules()["groups"] for r in g["rules"]]
    assert unknown_names([r["expr"] for r in all_rules], exported(catalog) | recorded()) == set()
    alerts = {r["alert"]: r for r in all_rules if "alert" in r}
    assert set(alerts) == {"ConsentgateConsumerLagHigh", "ConsentgateDeadLetterRateHigh",
                           "ConsentgateRevocationEnforcementSlow", "ConsentgateTransactionAborts",
                           "ConsentgateConsentViewStale", "ConsentgateConsentRecordsCorrupt",
                           "ConsentgatePassedContributionsMismatch", "ConsentgateMeteringDeadLetters",
                           "ConsentgateAuditFindings", "ConsentgateWorkerDown"}
    for alert in alerts.values():
        assert alert["labels"]["severity"] in {"warning", "critical"}
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]


def test_compose_provisions_prometheus_and_grafana_from_deploy(tmp_path: Path) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    mounts = [v.split(":")[0] for name in ("prometheus", "grafana") for v in services[name]["volumes"]]
    assert sorted(mounts) == ["./deploy/grafana/dashboards", "./deploy/grafana/provisioning",
                              "./deploy/prometheus/prometheus.yml", "./deploy/prometheus/rules.yml"]
    assert all((ROOT / m).exists() for m in mounts)
    assert services["gate"]["environment"]["CONSENTGATE_METRICS_HOST"] == "0.0.0.0"  # scraped across containers
    source = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uids = {t["datasource"]["uid"] for p in json.loads(
        (DEPLOY / "grafana" / "dashboards" / "consentgate.json").read_text())["panels"] for t in p["targets"]}
    assert uids == {source["datasources"][0]["uid"]}
    promtool = shutil.which("promtool")
    if promtool is not None:  # the compose config is valid once its rule file is where the container mounts it
        config = (DEPLOY / "prometheus" / "prometheus.yml").read_text().replace(
            "/etc/prometheus/rules.yml", str(DEPLOY / "prometheus" / "rules.yml"))
        (tmp_path / "prometheus.yml").write_text(config)
        out = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True,
                             text=True)
        assert out.returncode == 0, out.stdout + out.stderr
