"""The HTTP face of Yilian: thin adapters from HTTP to the systems below."""

from yilian.api.app import create_app

__all__ = ["create_app"]
