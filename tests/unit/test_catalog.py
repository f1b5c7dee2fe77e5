from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from consentgate.catalog import load_catalog, parse_catalog
from consentgate.errors import CatalogError


def shipped_raw() -> dict[str, Any]:
    from importlib import resources

    raw: dict[str, Any] = yaml.safe_load(resources.files("consentgate").joinpath("catalog.yaml").read_text())
    return raw


def test_shipped_catalog_has_the_spec_purposes_and_categories() -> None:
    catalog = load_catalog()
    assert set(catalog.categories) == {"post", "search", "conversation", "click", "signal"}
    accepted = {name: set(p.categories) for name, p in catalog.purposes.items()}
    assert accepted == {
        "train_ai_system.recommendation": {"post", "search", "click", "signal"},
        "train_ai_system.generative": {"post", "conversation"},
        "train_ai_system.ads_ranking": {"search", "click", "signal"},
    }
    assert catalog.categories["conversation"].fideslang == "user.content.private.messages"
    assert [p.name for p in catalog.purposes_for("conversation")] == ["train_ai_system.generative"]
    assert catalog.purposes_for("voice") == ()
    gen = catalog.purposes["train_ai_system.generative"]
    assert gen.categories["conversation"].keep == ("text",)
    assert gen.sink_topic == "training.train_ai_system.generative"
    assert all(set(p.description) == {"collected", "use", "who_sees"} for p in catalog.purposes.values())


def _mutate(path: list[str], value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(shipped_raw())
    node = raw
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return raw


REC = "train_ai_system.recommendation"


@pytest.mark.parametrize(("path", "value", "message"), [
    (["purposes", REC, "terms_version"], KeyError,
     f"catalog.purposes.{REC}: missing field 'terms_version'"),
    (["purposes", REC, "terms_version"], "3", f"catalog.purposes.{REC}.terms_version: expected int, got str"),
    (["purposes", REC, "terms_version"], 0, f"catalog.purposes.{REC}: terms_version and retention_days "
                                            "must be at least 1"),
    (["purposes", REC, "categories", "voice"], {"keep": ["x"], "rate": 1},
     f"catalog.purposes.{REC}.categories.voice: unknown category 'voice'"),
    (["purposes", REC, "categories", "click", "keep"], ["item_id", "ssn"],
     f"catalog.purposes.{REC}.categories.click.keep: ['ssn'] are not fields of category 'click'"),
    (["purposes", REC, "categories", "click", "rate"], -1,
     f"catalog.purposes.{REC}.categories.click.rate: must not be negative"),
    (["purposes", REC, "sink_topic"], "training.train_ai_system.generative",
     f"catalog.purposes.{REC}.sink_topic: 'training.train_ai_system.generative' is already the sink of "
     "train_ai_system.generative"),
    (["purposes", REC, "description", "who_sees"], KeyError,
     f"catalog.purposes.{REC}.description: missing field 'who_sees'"),
    (["categories", "post", "fields"], [], "catalog.categories.post.fields: expected a non-empty list of names"),
    (["catalog_version"], True, "catalog.catalog_version: expected int, got bool"),
])
def test_bad_catalog_is_rejected_naming_the_field(path: list[str], value: Any, message: str) -> None:
    raw = _mutate(path, value)
    if path[-1] == "sink_topic":  # make the duplicate land after the purpose it collides with
        raw["purposes"] = dict(reversed(list(raw["purposes"].items())))
        message = (f"catalog.purposes.{REC}.sink_topic: 'training.train_ai_system.generative' is already the "
                   "sink of train_ai_system.generative")
    with pytest.raises(CatalogError) as info:
        parse_catalog(raw)
    assert str(info.value) == message


def test_unreadable_and_invalid_yaml_files(tmp_path: Any) -> None:
    with pytest.raises(CatalogError, match="cannot read catalog .*nope.yaml: No such file"):
        load_catalog(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("purposes: [unclosed\n")
    with pytest.raises(CatalogError, match="bad.yaml: not valid YAML"):
        load_catalog(bad)


def test_usefulness_reference_sets(tmp_path: Any) -> None:
    gen = load_catalog().purposes["train_ai_system.generative"].usefulness
    assert gen is not None and (gen.source, gen.k, gen.cap, len(gen.reference)) == (
        "consentgate:references/generative.jsonl", 5, 3.0, 34)
    assert "the harbour" in gen.reference.topics
    assert load_catalog().purposes[REC].usefulness is None
    raw = shipped_raw()
    (tmp_path / "copy.yaml").write_text(yaml.safe_dump(raw))  # a copy of the shipped catalog, elsewhere
    copied = load_catalog(tmp_path / "copy.yaml").purposes["train_ai_system.generative"].usefulness
    assert copied is not None and copied.reference == gen.reference  # still finds the shipped set
    raw["purposes"][REC]["usefulness"] = {"reference": "mine.jsonl", "k": 3}
    raw["purposes"]["train_ai_system.generative"]["usefulness"]["reference"] = "references/generative.jsonl"
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "references").mkdir()
    (tmp_path / "references" / "generative.jsonl").write_text('{"text": "a local reference"}\n')
    (tmp_path / "mine.jsonl").write_text('{"text": "what the recommender needs"}\n')
    catalog = load_catalog(tmp_path / "catalog.yaml")  # files are read beside the catalog
    rec = catalog.purposes[REC].usefulness
    assert rec is not None and (rec.reference.texts, rec.k, rec.cap) == (("what the recommender needs",), 3, 3.0)
    gen_local = catalog.purposes["train_ai_system.generative"].usefulness
    assert gen_local is not None and gen_local.reference.texts == ("a local reference",)
    at = f"catalog.purposes.{REC}.usefulness"
    for spec, message in [({"reference": "missing.jsonl", "k": 3}, f"{at}.reference: cannot read missing.jsonl"),
                          ({"reference": "mine.jsonl", "k": 0}, f"{at}.k: expected 1..1000, got 0"),
                          ({"reference": "mine.jsonl", "k": 3, "cap": 0.5}, f"{at}.cap: expected a number"),
                          ({"k": 3}, f"{at}: missing field 'reference'")]:
        raw["purposes"][REC]["usefulness"] = spec
        with pytest.raises(CatalogError) as info:
            parse_catalog(raw, "catalog", lambda name: (tmp_path / name).read_bytes())
        assert str(info.value).startswith(message)


@pytest.mark.parametrize(("where", "name"), [("purposes", "train ai"), ("purposes", "p" * 121),
                                             ("categories", "post\n"), ("categories", "c" * 61)])
def test_names_are_bounded(where: str, name: str) -> None:
    raw = shipped_raw()
    raw[where][name] = raw[where]["post" if where == "categories" else REC]
    with pytest.raises(CatalogError, match=f"a {where[:-1].replace('ie', 'y')} name is 1..(120|60) of"):
        parse_catalog(raw)
