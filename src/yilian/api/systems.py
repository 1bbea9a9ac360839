"""Every system's JSON API under ``/api``, each built on the one adapter in :mod:`yilian.api.rest`.

A system adds its routes module here (one line) and nowhere else.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from yilian.api import card_routes, mpi_routes, payment_routes
from yilian.api.rest import ApiRoutes


def system_routes(api: ApiRoutes) -> list[BaseRoute]:
    routes: list[BaseRoute] = []
    routes += mpi_routes.routes(api)
    routes += card_routes.routes(api)
    routes += payment_routes.routes(api)
    return routes
