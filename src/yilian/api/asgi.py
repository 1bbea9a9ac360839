"""The app of one worker process of ``yilian serve --workers N``.

Uvicorn runs several worker processes only for an app it can import by name: each worker
calls :func:`app_from_env`, which opens the database named in ``YILIAN_DATABASE_URL``, installs
its keyring and reads the platform settings from the environment, exactly as ``yilian serve``
does in one process. Everything the workers share lives in the database (tokens, sessions,
jti, audit chain, outbox, bulk jobs, leases); what each keeps in memory is a cache (tokens for a
few seconds, compiled validators, statements).
"""

from __future__ import annotations

import os

import orjson

from yilian.api.app import YilianApp, create_app
from yilian.api.wiring import install_keys, platform_settings
from yilian.db import open_database

DATABASE_VAR = "YILIAN_DATABASE_URL"
FRONT_PAGE_VAR = "YILIAN_FRONT_PAGE_EXTRA"  # JSON: what the front page shows besides (demo logins)


def app_from_env() -> YilianApp:
    url = os.environ.get(DATABASE_VAR)
    if not url:
        raise RuntimeError(f"{DATABASE_VAR} is not set: `yilian serve --workers N` sets it for its workers")
    db = open_database(url)
    install_keys(db)
    extra = orjson.loads(os.environ.get(FRONT_PAGE_VAR) or "{}")
    return create_app(db, platform_settings(), extra=extra)
