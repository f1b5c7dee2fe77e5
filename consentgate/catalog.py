"""The purpose catalog: which purposes exist, what each may use and keep, and its terms."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from consentgate.errors import CatalogError
from consentgate.usefulness.reference import ReferenceSet, parse_reference

# Names become ledger keys (VARCHAR(120) and (60)), topic names and metric labels: bounded here once.
PURPOSE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,120}")
CATEGORY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,60}")


@dataclass(frozen=True)
class CategoryUse:
    """How one purpose uses one data category."""

    keep: tuple[str, ...]
    rate: float


@dataclass(frozen=True)
class UsefulnessSpec:
    """A purpose's reference set (SPEC §11): contributions are valued by how much they help match it."""

    reference: ReferenceSet
    source: str  # the file it came from, as the catalog names it
    k: int
    cap: float  # the highest usefulness multiplier


@dataclass(frozen=True)
class Purpose:
    name: str
    title: str
    description: dict[str, str]
    terms_version: int
    retention_days: int
    sink_topic: str
    categories: dict[str, CategoryUse]
    usefulness: UsefulnessSpec | None = None

    def accepts(self, category: str) -> bool:
        return category in self.categories


@dataclass(frozen=True)
class Category:
    name: str
    fideslang: str
    title: str
    fields: tuple[str, ...]


@dataclass(frozen=True)
class Catalog:
    version: int
    currency: str
    categories: dict[str, Category]
    purposes: dict[str, Purpose]
    credits_per_currency_unit: int = 100

    _by_category: dict[str, tuple[Purpose, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_category = {name: tuple(p for p in self.purposes.values() if p.accepts(name))
                       for name in self.categories}
        object.__setattr__(self, "_by_category", by_category)

    def purposes_for(self, category: str) -> tuple[Purpose, ...]:
        """Purposes that accept ``category``, in catalog order."""
        return self._by_category.get(category, ())


DEFAULT_CATALOG = "catalog.yaml"
# A file the catalog names with this prefix is one shipped with consentgate (so a copy of the
# shipped catalog, edited elsewhere, still finds it); any other name is read beside the catalog.
SHIPPED = "consentgate:"


def load_catalog(path: Path | None = None) -> Catalog:
    """Load and validate a catalog; the shipped one when ``path`` is None."""
    if path is None:
        text = resources.files("consentgate").joinpath(DEFAULT_CATALOG).read_text()
        where = "shipped catalog.yaml"
    else:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise CatalogError(f"cannot read catalog {path}: {exc.strerror}") from exc
        where = str(path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(f"{where}: not valid YAML: {exc}") from exc
    return parse_catalog(raw, where, _files_beside(path))


def _files_beside(catalog: Path | None) -> Callable[[str], bytes]:
    """Reads a file the catalog names (a reference set), relative to the catalog's own folder."""

    def read(name: str) -> bytes:
        if catalog is None:
            return _shipped(name)
        return (Path(catalog).parent / name).read_bytes()

    return read


def _shipped(name: str) -> bytes:
    return resources.files("consentgate").joinpath(name).read_bytes()


def _usefulness(body: Any, at: str, read: Callable[[str], bytes]) -> UsefulnessSpec | None:
    if not isinstance(body, dict) or "usefulness" not in body:
        return None
    spec = _field(body, "usefulness", dict, at)
    at = f"{at}.usefulness"
    source = _field(spec, "reference", str, at)
    k = _field(spec, "k", int, at)
    if not 1 <= k <= 1000:
        raise CatalogError(f"{at}.k: expected 1..1000, got {k}")
    cap = spec.get("cap", 3.0)
    if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 1 <= cap <= 100:
        raise CatalogError(f"{at}.cap: expected a number in 1..100")
    try:
        data = _shipped(source.removeprefix(SHIPPED)) if source.startswith(SHIPPED) else read(source)
    except OSError as exc:
        raise CatalogError(f"{at}.reference: cannot read {source}: {exc.strerror or exc}") from exc
    return UsefulnessSpec(parse_reference(data, f"{at}.reference {source}"), source, k, float(cap))


def _field(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise CatalogError(f"{where}: missing field '{key}'")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise CatalogError(f"{where}.{key}: expected {names}, got {type(value).__name__}")
    return value


def _names(obj: Any, key: str, where: str) -> tuple[str, ...]:
    values = _field(obj, key, list, where)
    if not values or not all(isinstance(v, str) and v for v in values):
        raise CatalogError(f"{where}.{key}: expected a non-empty list of names")
    return tuple(values)


def parse_catalog(raw: Any, where: str = "catalog", read: Callable[[str], bytes] = _shipped) -> Catalog:
    """Validate a catalog given as parsed YAML; errors name the offending field.

    ``read`` opens the files the catalog names (reference sets); by default, files shipped with consentgate.
    """
    version = _field(raw, "catalog_version", int, where)
    currency = _field(raw, "currency", str, where)
    categories: dict[str, Category] = {}
    for name, body in _field(raw, "categories", dict, where).items():
        at = f"{where}.categories.{name}"
        if not isinstance(name, str) or not CATEGORY_NAME.fullmatch(name):
            raise CatalogError(f"{at}: a category name is 1..60 of A-Z a-z 0-9 _ . -")
        categories[name] = Category(name, _field(body, "fideslang", str, at), _field(body, "title", str, at),
                                    _names(body, "fields", at))
    purposes: dict[str, Purpose] = {}
    sinks: dict[str, str] = {}
    for name, body in _field(raw, "purposes", dict, where).items():
        at = f"{where}.purposes.{name}"
        if not isinstance(name, str) or not PURPOSE_NAME.fullmatch(name):
            raise CatalogError(f"{at}: a purpose name is 1..120 of A-Z a-z 0-9 _ . -")
        description = _field(body, "description", dict, at)
        for part in ("collected", "use", "who_sees"):
            _field(description, part, str, f"{at}.description")
        terms = _field(body, "terms_version", int, at)
        retention = _field(body, "retention_days", int, at)
        if terms < 1 or retention < 1:
            raise CatalogError(f"{at}: terms_version and retention_days must be at least 1")
        sink = _field(body, "sink_topic", str, at)
        if sink in sinks:
            raise CatalogError(f"{at}.sink_topic: '{sink}' is already the sink of {sinks[sink]}")
        sinks[sink] = name
        uses: dict[str, CategoryUse] = {}
        for category, use in _field(body, "categories", dict, at).items():
            cat_at = f"{at}.categories.{category}"
            if category not in categories:
                raise CatalogError(f"{cat_at}: unknown category '{category}'")
            keep = _names(use, "keep", cat_at)
            unknown = [f for f in keep if f not in categories[category].fields]
            if unknown:
                raise CatalogError(f"{cat_at}.keep: {unknown} are not fields of category '{category}'")
            rate = _field(use, "rate", (int, float), cat_at)
            if rate < 0:
                raise CatalogError(f"{cat_at}.rate: must not be negative")
            uses[category] = CategoryUse(keep, float(rate))
        if not uses:
            raise CatalogError(f"{at}.categories: a purpose must accept at least one category")
        purposes[name] = Purpose(name, _field(body, "title", str, at), dict(description), terms, retention,
                                 sink, uses, _usefulness(body, at, read))
    if not purposes:
        raise CatalogError(f"{where}.purposes: no purposes defined")
    credits = raw.get("credits_per_currency_unit", 100)
    if not isinstance(credits, int) or isinstance(credits, bool) or credits < 1:
        raise CatalogError(f"{where}.credits_per_currency_unit: expected a whole number of at least 1")
    return Catalog(version, currency, categories, purposes, credits)
