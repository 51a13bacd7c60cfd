"""Views of the example project (POST views are csrf-exempt: a demo, not a template)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from sessionkeeper.django import get_manager


def show(request: HttpRequest) -> HttpResponse:
    s = request.session
    return JsonResponse({"n": s.get("n", 0), "user": s.get("user"), "node": get_manager().node})


@csrf_exempt
def incr(request: HttpRequest) -> HttpResponse:
    request.session["n"] = request.session.get("n", 0) + 1
    return JsonResponse({"n": request.session["n"], "node": get_manager().node})


@csrf_exempt
def login(request: HttpRequest) -> HttpResponse:
    request.session.cycle_key()  # what django.contrib.auth.login does
    request.session["user"] = request.GET.get("user", "ann")
    return JsonResponse({"user": request.session["user"], "node": get_manager().node})


@csrf_exempt
def logout(request: HttpRequest) -> HttpResponse:
    request.session.flush()  # what django.contrib.auth.logout does
    return JsonResponse({"user": None, "node": get_manager().node})
