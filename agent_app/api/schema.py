"""OpenAPI descriptions of the strict fields and the API-key scheme (drf-spectacular extensions).

The schema states what the serializers enforce, no more and no less: tests/api/test_schema_fuzz.py
runs schemathesis against it and fails on any disagreement.
"""

from django.conf import settings
from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerExtension,
    OpenApiSerializerFieldExtension,
)


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "agent_app.api.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer",
                "description": "Authorization: Bearer <API key> (or X-API-Key: <API key>)"}

    def get_security_requirement(self, auto_schema):
        # OPEN_ENDPOINTS answer without a key as well (a key that is sent must still be valid).
        if getattr(auto_schema.view, "endpoint", None) in settings.OPEN_ENDPOINTS:
            return [{self.name: []}, {}]
        return {self.name: []}


class StrictFloatSchema(OpenApiSerializerFieldExtension):
    target_class = "agent_app.api.fields.StrictFloatField"

    def map_serializer_field(self, auto_schema, direction):
        return {"type": "number", "minimum": self.target.min_value, "maximum": self.target.max_value}


class StrictIntegerSchema(OpenApiSerializerFieldExtension):
    target_class = "agent_app.api.fields.StrictIntegerField"

    def map_serializer_field(self, auto_schema, direction):
        return {"type": "integer", "minimum": self.target.min_value, "maximum": self.target.max_value}


class ActionSchema(OpenApiSerializerFieldExtension):
    target_class = "agent_app.api.serializers.ActionField"

    def map_serializer_field(self, auto_schema, direction):
        return {"type": "integer", "minimum": 0, "maximum": settings.NUM_REPLICAS - 1}


class StrictBooleanSchema(OpenApiSerializerFieldExtension):
    target_class = "agent_app.api.fields.StrictBooleanField"

    def map_serializer_field(self, auto_schema, direction):
        return {"type": "boolean"}


class VectorSchema(OpenApiSerializerFieldExtension):
    target_class = "agent_app.api.fields.VectorField"
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        # Each position has bounds of its own (the state's success rate is 0-1, its rps up to 1e7).
        bounds = self.target.get_bounds()
        return {"type": "array", "minItems": len(bounds), "maxItems": len(bounds), "items": False,
                "prefixItems": [{"type": "number", "minimum": lo, "maximum": hi} for lo, hi in bounds]}


class ReplicaListSchema(OpenApiSerializerFieldExtension):
    target_class = "agent_app.api.cluster_fields.ReplicaListField"

    def map_serializer_field(self, auto_schema, direction):
        from agent_app.api.cluster_fields import MAX_REPLICAS_PER_BODY, REPLICA_NAME_PATTERN, REPLICA_SIGNALS

        signals = {key: {"type": "number", "minimum": low, "maximum": high}
                   for key, (low, high) in REPLICA_SIGNALS.items()}
        replica = {"type": "object", "required": ["name", "load"], "properties": {
            "name": {"type": "string", "pattern": REPLICA_NAME_PATTERN},
            "load": {"type": "number", "minimum": 0, "maximum": 1e6}, **signals}}
        # Names must be unique; JSON Schema cannot say that of one property, the service does.
        return {"type": "array", "minItems": 1, "maxItems": MAX_REPLICAS_PER_BODY, "items": replica}


class RequestFeaturesSchema(OpenApiSerializerFieldExtension):
    target_class = "agent_app.api.cluster_fields.RequestFeaturesField"

    def map_serializer_field(self, auto_schema, direction):
        from agent_app.api.cluster_fields import MAX_TOKENS, REQUEST_FEATURES

        count = {"type": "integer", "minimum": 0, "maximum": MAX_TOKENS}
        return {"type": "object", "properties": {key: count for key in REQUEST_FEATURES}}


class LoadListSchema(OpenApiSerializerFieldExtension):
    target_class = "agent_app.api.cluster_fields.LoadListField"

    def map_serializer_field(self, auto_schema, direction):
        from agent_app.api.cluster_fields import MAX_REPLICAS_PER_BODY

        return {"type": "array", "minItems": 1, "maxItems": MAX_REPLICAS_PER_BODY,
                "items": {"type": "number", "minimum": 0, "maximum": 1e6}}


class SelectReplicaSchema(OpenApiSerializerExtension):
    """The original body (replica_loads) or the named one (replicas), never both."""

    target_class = "agent_app.api.serializers.SelectReplicaRequest"

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        schema["oneOf"] = [{"required": ["replica_loads"], "not": {"required": ["replicas"]}},
                           {"required": ["replicas"], "not": {"required": ["replica_loads"]}}]
        return schema


class ExperienceSchema(OpenApiSerializerExtension):
    """One report: state and action (or replica), or the decision_id /select_replica returned."""

    target_class = "agent_app.api.serializers.ExperienceRequest"

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        schema["properties"]["replica"] = {**schema["properties"]["replica"], "enum": settings.REPLICA_NAMES}
        # With state, the loads are NUM_REPLICAS; with a decision_id, one per replica of the
        # decision, a count the token carries and the schema cannot state.
        positional = {"properties": {"replica_loads": {"minItems": settings.NUM_REPLICAS,
                                                       "maxItems": settings.NUM_REPLICAS}}}
        schema["oneOf"] = [
            {"required": ["state", "action"], "not": {"anyOf": [{"required": ["decision_id"]},
                                                                {"required": ["replica"]}]}, **positional},
            {"required": ["state", "replica"], "not": {"anyOf": [{"required": ["decision_id"]},
                                                                 {"required": ["action"]}]}, **positional},
            {"required": ["decision_id"], "not": {"anyOf": [{"required": [name]}
                                                            for name in ("state", "action", "replica")]}},
        ]
        return schema


class ExperienceBatchSchema(OpenApiSerializerExtension):
    target_class = "agent_app.api.serializers.ExperienceBatchRequest"

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        experiences = self.target.fields["experiences"]  # drf-spectacular leaves out a list's bounds
        schema["properties"]["experiences"].update(
            minItems=0 if experiences.allow_empty else 1, maxItems=experiences.max_length
        )
        return schema


class ValidationErrorSchema(OpenApiSerializerExtension):
    target_class = "agent_app.api.serializers.ValidationErrorResponse"

    def map_serializer(self, auto_schema, direction):
        messages = {"type": "array", "items": {"type": "string"}}
        fields = {"type": "object", "additionalProperties": messages}
        return {
            "type": "object",
            "description": "Each refused field with its messages (`non_field_errors`: the body as a whole), "
                           "`experiences` of a batch: the refused ones by index, or `detail`: not JSON.",
            "minProperties": 1,
            "additionalProperties": {"anyOf": [
                {"type": "string"}, messages,
                {"type": "object", "additionalProperties": {"anyOf": [messages, fields]}},
            ]},
        }


def require_request_bodies(result, generator, request, public):
    """Postprocessing hook: every body this API takes is required (an empty one is a 400), which
    drf-spectacular cannot tell for /record_experience's oneOf of the single and the batch form."""
    for path in result.get("paths", {}).values():
        for operation in path.values():
            if isinstance(operation, dict) and "requestBody" in operation:
                operation["requestBody"]["required"] = True
    return result


def single_report_excludes_batch(result, generator, request, public):
    """Postprocessing hook: a /record_experience body with `experiences` is read as the batch form
    (api/views.py), whatever else it holds; the single form of the oneOf says so, or a body valid
    in both forms would be schema-invalid yet accepted."""
    report = result.get("components", {}).get("schemas", {}).get("ExperienceReport")
    if report:
        single = {"$ref": "#/components/schemas/ExperienceRequest"}
        report["oneOf"] = [
            {"allOf": [single], "not": {"required": ["experiences"]}} if branch == single else branch
            for branch in report["oneOf"]
        ]
    return result
