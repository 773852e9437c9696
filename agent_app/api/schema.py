"""OpenAPI descriptions of the strict fields and the API-key scheme (drf-spectacular extensions)."""

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerFieldExtension


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "agent_app.api.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <API key>"}


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
        bounds = self.target.get_bounds()
        return {"type": "array", "minItems": len(bounds), "maxItems": len(bounds),
                "items": {"type": "number", "minimum": min(lo for lo, _ in bounds),
                          "maximum": max(hi for _, hi in bounds)}}
