"""Evidence packs for auditors: ask for one (period and scope), watch it build (a progress bar the page
polls with htmx; a plain reload works too), download it, and get what verifying it needs (the signing
public key and the standalone verifier). Packs are invisible (404) to everyone but auditors; the list
page is a 403 for them, like the audit trail."""

from pathlib import Path

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_safe

from accessgov import permissions
from accessgov.evidence import builder, signing, verify
from accessgov.exceptions import AccessGovError
from accessgov.forms import EvidencePackForm
from accessgov.http import PortalRequest
from accessgov.models import EvidencePack
from accessgov.services import evidence as services
from accessgov.views.common import refused

LIST_SIZE = 50


def _ensure_auditor(request: PortalRequest) -> None:
    if not permissions.can_build_evidence_pack(request.user):
        raise PermissionDenied("Evidence packs are for auditors.")


def _pack(request: PortalRequest, pk: int) -> EvidencePack:
    if not permissions.can_build_evidence_pack(request.user):
        raise Http404("No such evidence pack.")
    pack = EvidencePack.objects.select_related("requested_by").prefetch_related("systems").filter(pk=pk).first()
    if pack is None:
        raise Http404("No such evidence pack.")
    return pack


@require_http_methods(["GET", "HEAD", "POST"])
def evidence_list_view(request: PortalRequest) -> HttpResponse:
    _ensure_auditor(request)
    form = EvidencePackForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            pack = services.evidence_pack_request(
                request.user,
                since=data["since"],
                until=data["until"],
                systems=list(data["systems"]),
                client_address=request.client_address,
            )
        except AccessGovError as error:
            form.add_error(None, str(error))
        else:
            messages.success(
                request,
                f"Evidence pack #{pack.pk} requested: it is built in the background, and its state below says when it is ready.",
            )
            return redirect("evidence_detail", pk=pack.pk)
    packs = list(EvidencePack.objects.select_related("requested_by").prefetch_related("systems")[:LIST_SIZE])
    return render(
        request,
        "accessgov/evidence/list.html",
        {"form": form, "packs": packs, "key": signing.public_key_info()},
        status=400 if form.errors else 200,
    )


@require_safe
def evidence_detail_view(request: PortalRequest, pk: int) -> HttpResponse:
    pack = _pack(request, pk)
    return render(request, "accessgov/evidence/detail.html", {"pack": pack, "key": signing.public_key_info()})


@require_safe
def evidence_progress_view(request: PortalRequest, pk: int) -> HttpResponse:
    """The progress partial the detail page polls every second while the pack builds."""
    return render(request, "accessgov/evidence/_progress.html", {"pack": _pack(request, pk)})


@require_GET
def evidence_download_view(request: PortalRequest, pk: int) -> HttpResponseBase:
    pack = _pack(request, pk)
    path = builder.evidence_dir() / pack.file_name if pack.file_name else None
    if pack.status != EvidencePack.Status.READY or path is None or not path.is_file():
        return refused(
            request, "This pack is not ready to download.", back=reverse("evidence_detail", args=[pk]), status=409
        )
    try:
        services.evidence_pack_record_download(request.user, pack, client_address=request.client_address)
    except AccessGovError as error:
        return refused(request, error, back=reverse("evidence"))
    return FileResponse(path.open("rb"), as_attachment=True, filename=pack.file_name, content_type="application/zip")


@require_safe
def evidence_public_key_view(request: PortalRequest) -> HttpResponse:
    _ensure_auditor(request)
    key = signing.public_key_info()
    if key is None:
        raise Http404("No signing key is configured.")
    response = HttpResponse(key["pem"], content_type="application/x-pem-file")
    response["Content-Disposition"] = 'attachment; filename="accessgov-evidence-key.pem"'
    return response


@require_safe
def evidence_verifier_view(request: PortalRequest) -> HttpResponse:
    """The auditor's standalone verifier (standard library + cryptography), as a file to keep."""
    _ensure_auditor(request)
    response = HttpResponse(Path(verify.__file__).read_bytes(), content_type="text/x-python; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="verify_evidence_pack.py"'
    return response
