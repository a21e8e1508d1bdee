"""OpenLineage events as outside tools see them: read from the home, checked against a JSON
Schema of the OpenLineage RunEvent.

openlineage-python ships no JSON Schema file, so the schema is built here from the package's
own attrs models (`openlineage.client.event_v2`, generated from spec/OpenLineage.json and
spec/facets/*.json): every attrs class becomes an object whose attributes are its properties
(required when they have no default), enums their values, `list`/`dict` arrays and maps. The
facets we emit are pinned by the keys the facet specs give them (`schema`, `inputStatistics`,
`outputStatistics`, `errorMessage`, `processing_engine`, `jobType`), any other facet by its
base class. Formats come from the spec's BaseEvent, BaseFacet and Run (which also require
these, where the models give defaults): `eventTime` is a date-time, `runId` a UUID,
`producer`, `schemaURL`, `_producer` and `_schemaURL` URIs.
"""

from __future__ import annotations

import enum
import functools
import json
import types
import typing
from pathlib import Path
from typing import Any

import attr
from jsonschema import Draft202012Validator, FormatChecker
from openlineage.client import event_v2
from openlineage.client.facet_v2 import (
    error_message_run,
    input_statistics_input_dataset,
    job_type_job,
    output_statistics_output_dataset,
    processing_engine_run,
    schema_dataset,
)

from consentry.jobs.lineage import LINEAGE_FILE

FACETS: dict[str, dict[str, type]] = {
    "RunFacets": {
        "processing_engine": processing_engine_run.ProcessingEngineRunFacet,
        "errorMessage": error_message_run.ErrorMessageRunFacet,
    },
    "JobFacets": {"jobType": job_type_job.JobTypeJobFacet},
    "DatasetFacets": {"schema": schema_dataset.SchemaDatasetFacet},
    "InputDatasetFacets": {
        "inputStatistics": input_statistics_input_dataset.InputStatisticsInputDatasetFacet
    },
    "OutputDatasetFacets": {
        "outputStatistics": output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet
    },
}
"""Facet key -> model, per facet map (the keys the OpenLineage facet specs define)."""

_FACET_MAPS = {
    ("Run", "facets"): "RunFacets",
    ("Job", "facets"): "JobFacets",
    ("InputDataset", "facets"): "DatasetFacets",
    ("OutputDataset", "facets"): "DatasetFacets",
    ("InputDataset", "inputFacets"): "InputDatasetFacets",
    ("OutputDataset", "outputFacets"): "OutputDatasetFacets",
}
_FORMATS = {
    "eventTime": "date-time",
    "runId": "uuid",
    "producer": "uri",
    "schemaURL": "uri",
    "_producer": "uri",
    "_schemaURL": "uri",
}


class _Builder:
    def __init__(self) -> None:
        self.defs: dict[str, Any] = {}

    def ref(self, cls: type) -> dict[str, Any]:
        name = cls.__name__
        if name not in self.defs:
            self.defs[name] = {}  # recursion guard
            self.defs[name] = self.model(cls)
        return {"$ref": f"#/$defs/{name}"}

    def model(self, cls: type) -> dict[str, Any]:
        attr.resolve_types(cls)
        properties: dict[str, Any] = {}
        required = []
        for field in attr.fields(cls):
            key = (cls.__name__, field.name)
            if key in _FACET_MAPS:
                properties[field.name] = self.facet_map(_FACET_MAPS[key], field.type)
            else:
                properties[field.name] = self.of(field.type)
            if field.name in _FORMATS:
                properties[field.name] = {**properties[field.name], "format": _FORMATS[field.name]}
            if field.default is attr.NOTHING or field.name in _FORMATS:
                required.append(field.name)
        return {"type": "object", "properties": properties, "required": required}

    def facet_map(self, name: str, annotation: Any) -> dict[str, Any]:
        base = self.of(annotation)  # dict[str, <base facet>]
        if name not in self.defs:
            known = {key: self.ref(cls) for key, cls in FACETS[name].items()}
            self.defs[name] = {
                "type": "object",
                "properties": known,
                "additionalProperties": base["additionalProperties"],
            }
        return {"$ref": f"#/$defs/{name}"}

    def of(self, annotation: Any) -> dict[str, Any]:
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin in (typing.Union, types.UnionType):
            # Serde drops None values: an optional member is either absent or its type.
            members = [a for a in args if a is not type(None)]
            if len(members) == 1:
                return self.of(members[0])
            return {"anyOf": [self.of(a) for a in members]}
        if origin is list:
            return {"type": "array", "items": self.of(args[0])}
        if origin is dict:
            return {"type": "object", "additionalProperties": self.of(args[1])}
        if annotation is str:
            return {"type": "string"}
        if annotation is bool:
            return {"type": "boolean"}
        if annotation is int:
            return {"type": "integer"}
        if annotation is float:
            return {"type": "number"}
        if annotation is Any:
            return {}
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            return {"enum": [m.value for m in annotation]}
        if attr.has(annotation):
            return self.ref(annotation)
        raise TypeError(f"no schema for {annotation!r}")


@functools.cache
def run_event_schema() -> dict[str, Any]:
    """The JSON Schema of an OpenLineage RunEvent, from openlineage-python's models."""
    builder = _Builder()
    root = builder.ref(event_v2.RunEvent)
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **root}
    schema["$defs"] = builder.defs
    Draft202012Validator.check_schema(schema)
    return schema


def problems(event: dict[str, Any]) -> list[str]:
    """Where `event` breaks the RunEvent schema (empty: valid)."""
    validator = Draft202012Validator(run_event_schema(), format_checker=FormatChecker())
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(event)
    ]


def read_events(home: Path) -> list[dict[str, Any]]:
    """Every event the file transport appended to the home's lineage file, in order."""
    path = home / LINEAGE_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def runs(events: list[dict[str, Any]], job: str) -> list[list[dict[str, Any]]]:
    """The events of each run of `job`, runs in order of their first event."""
    by_run: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        if event["job"]["name"] == job:
            by_run.setdefault(event["run"]["runId"], []).append(event)
    return list(by_run.values())


def dataset(datasets: list[dict[str, Any]], name_ends: str) -> dict[str, Any]:
    """The one dataset whose name ends with `name_ends`."""
    (found,) = [d for d in datasets if d["name"].endswith(name_ends)]
    return found


def check_run(events: list[dict[str, Any]], end: str = "COMPLETE") -> dict[str, Any]:
    """A run is a valid START then a valid `end` with the same run id, job and datasets
    named; returns the end event."""
    assert [e["eventType"] for e in events] == ["START", end]
    for event in events:
        assert problems(event) == [], problems(event)
    start, last = events
    assert start["run"]["runId"] == last["run"]["runId"]
    assert start["job"] == last["job"]
    for side in ("inputs", "outputs"):
        assert [d["name"] for d in start[side]] == [d["name"] for d in last[side]]
    return last
