"""OpenAPI generation: every operation documents the error answers it can give, in the one format."""

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from rest_framework import serializers

ERROR_CODES = {
    "400": (
        "Invalid input (a body field, or a query parameter the operation does not take or with a value it cannot "
        "take), or against the role's policy"
    ),
    "401": "No token, or an unknown, expired or revoked token",
    "403": "The token lacks the scope, or the caller may not do this",
    "404": "No such object, or not visible to the caller",
    # OpenAPI has no place for a path's answer to the methods it does not offer: every operation lists it.
    "405": "A method this path does not offer, OPTIONS included (method_not_allowed; Allow lists the methods)",
    "429": "Too many requests for this token",
}
ALLOW_HEADER = {"Allow": {"schema": {"type": "string"}, "description": "The methods this path offers."}}


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable machine-readable code, e.g. policy_violation, token_expired.")
    message = serializers.CharField(help_text="A sentence fit to show the person or the CI log.")
    fields = serializers.DictField(required=False, help_text="Per-field problems, for invalid input.")


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


# Answers of every operation that takes a body (the parser's and Django's refusals, before the view runs).
BODY_ERROR_CODES = {
    "409": "The object is not in a state that allows this (already decided, ended, …)",
    "413": "The body is larger than the server accepts (too_large)",
    "415": "The body is not application/json (unsupported_media_type)",
}


class AutoSchema(SpectacularAutoSchema):
    def get_override_parameters(self):
        """The query parameters the view declares for this method (``query_parameters``): the ones
        ``api.query`` accepts, besides a paged list's cursor and page_size (documented by the paginator)."""
        declared = getattr(self.view, "query_parameters", {}).get(self.method, [])
        return [*super().get_override_parameters(), *declared]

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        codes = dict(ERROR_CODES)
        if self.method == "POST":
            codes.update(BODY_ERROR_CODES)
        for code, description in codes.items():
            if code not in responses:
                responses[code] = self._get_response_for_code(ErrorSerializer, code, direction=direction)
                responses[code]["description"] = description
        if direction == "response" and "405" in responses:
            responses["405"]["headers"] = {**responses["405"].get("headers", {}), **ALLOW_HEADER}
        return responses
