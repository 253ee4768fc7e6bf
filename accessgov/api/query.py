"""Query parameters: an /api/v1/ operation reads those it documents and refuses any other with a 400.

A typo is not a filter: ``/api/v1/grants/?stauts=active`` used to answer every grant, and whoever typed it
believed the list was filtered. Each view declares what each method reads (``query_parameters``, by method
like ``required_scopes``); the schema documents exactly those (``api.schema.AutoSchema``) plus the
paginator's ``cursor`` and ``page_size`` on a paged list, and ``QueryParametersMixin`` accepts exactly the
same names. Unknown names are a 400 ``invalid`` whose ``fields`` names each one and whose message lists
the accepted ones. The portal's HTML pages stay tolerant (bookmarks and htmx add parameters); the CSV
exports refuse unknown parameters too (``accessgov.exports.unknown_parameters``)."""

from typing import ClassVar

from drf_spectacular.utils import OpenApiParameter
from rest_framework.exceptions import ValidationError

from accessgov.exports import SHOWN_NAME_LENGTH, SHOWN_NAMES


class QueryParametersMixin:
    """For an APIView: refuse query parameters the operation does not document, after authentication,
    permissions and throttling (an anonymous caller learns nothing) and only for a method the view offers
    (any other is a 405, whatever its query string)."""

    query_parameters: ClassVar[dict[str, list[OpenApiParameter]]] = {}

    def accepted_query_parameters(self, method: str) -> list[str]:
        """The names ``method`` reads: its declared parameters and, on a paged GET, the paginator's."""
        method = "GET" if method == "HEAD" else method
        names = {parameter.name for parameter in self.query_parameters.get(method, [])}
        paginator = getattr(self, "paginator", None)
        if method == "GET" and paginator is not None:
            names.update(parameter["name"] for parameter in paginator.get_schema_operation_parameters(self))
        return sorted(names)

    def check_query_parameters(self, request) -> None:
        if request.method == "OPTIONS" or not hasattr(self, request.method.lower()):
            return  # a method the view does not offer (OPTIONS answers 405 too: the schema describes the API)
        accepted = self.accepted_query_parameters(request.method)
        unknown = sorted(set(request.query_params) - set(accepted))
        if not unknown:
            return
        takes = f"this operation takes {', '.join(accepted)}" if accepted else "this operation takes none"
        problem = f"Unknown query parameter: {takes}."
        fields = {name[:SHOWN_NAME_LENGTH]: [problem] for name in unknown[:SHOWN_NAMES]}
        if len(unknown) > SHOWN_NAMES:
            fields["…"] = [f"{len(unknown) - SHOWN_NAMES} more unknown query parameters."]
        raise ValidationError(fields)

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        self.check_query_parameters(request)
