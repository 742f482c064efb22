"""Fixtures for the chart tests: renders of the chart with its defaults and with each ci values file.

The tests run helm themselves ($HELM, set by scripts/check-chart).
"""
import functools
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import render as chart  # noqa: E402


class Render:
    """One `helm template` of the chart: its values and the objects it made."""

    def __init__(self, name: str, values_file, sets: tuple = ()):
        self.name = name
        self.values = merged_values(values_file, sets)
        files = (values_file,) if values_file else ()
        self.docs = chart.documents(chart.render(*files, sets=sets).stdout)

    def kind(self, kind: str) -> list:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str) -> dict:
        found = [d for d in self.kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: {kind}/{name} rendered {len(found)} times"
        return found[0]

    def workers(self) -> list:
        return [d for d in self.kind("Deployment")
                if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"]

    def routers(self) -> list:
        return [d for d in self.kind("Deployment")
                if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "router"]

    def gateways(self) -> list:
        return [d for d in self.kind("Deployment")
                if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "gateway"]


def merged_values(values_file, sets: tuple = ()) -> dict:
    """The chart's defaults with a values file over them (lists replaced, maps merged, as Helm does)."""
    def merge(base, over):
        if isinstance(base, dict) and isinstance(over, dict):
            out = dict(base)
            for k, v in over.items():
                out[k] = merge(base.get(k), v) if k in base else v
            return out
        return over
    values = yaml.safe_load((chart.CHART / "values.yaml").read_text())
    if values_file:
        values = merge(values, yaml.safe_load(Path(values_file).read_text()) or {})
    assert not sets, "merged_values does not apply --set; give values in a file"
    return values


RENDER_NAMES = ["defaults"] + [p.name for p in chart.CI_VALUES]


@functools.lru_cache(maxsize=None)
def rendered(name: str) -> Render:
    if name == "defaults":
        return Render(name, None)
    return Render(name, chart.CHART / "ci" / name)


@pytest.fixture(params=RENDER_NAMES)
def each(request) -> Render:
    """The chart rendered with its defaults, then with each ci/*-values.yaml."""
    return rendered(request.param)


@pytest.fixture
def defaults() -> Render:
    return rendered("defaults")


@pytest.fixture
def everything() -> Render:
    return rendered("everything-values.yaml")


@pytest.fixture
def gateway() -> Render:
    return rendered("gateway-values.yaml")


def pod_specs(docs: list):
    """(where, pod spec, pod metadata) of every pod the objects make."""
    for d in docs:
        where = f"{d['kind']}/{d['metadata']['name']}"
        if d["kind"] == "Pod":
            yield where, d["spec"], d["metadata"]
        elif d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield where, d["spec"]["template"]["spec"], d["spec"]["template"]["metadata"]


def env_of(container: dict) -> dict:
    """A container's environment as name -> value (or the valueFrom map)."""
    out = {}
    for e in container.get("env", []):
        assert e["name"] not in out, f"{container['name']}: {e['name']} is set twice"
        out[e["name"]] = e["value"] if "value" in e else e["valueFrom"]
    return out


def container(pod_spec: dict, name: str) -> dict:
    found = [c for c in pod_spec["containers"] if c["name"] == name]
    assert len(found) == 1, f"no single container {name}"
    return found[0]
