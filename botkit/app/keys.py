"""The aiohttp keys every page of the served app shares.

They live here, apart from the server that fills them, so that a page (console, KB editor,
sign-in) imports the keys and not the server: the server imports the pages, never the reverse.
"""

from __future__ import annotations

from aiohttp import web

from botkit.app.accounts import Auth, Identity
from botkit.engine import Engine
from botkit.project import Project
from connectors.base import Connector

ENGINE = web.AppKey("engine", Engine)
PROJECT = web.AppKey("project", Project)
CONNECTORS = web.AppKey("connectors", dict[str, Connector])  # name -> Connector
METRICS = web.AppKey("metrics", object)
KB = web.AppKey("kb", object)  # the engine's KnowledgeBase, for the editor
AUTH = web.AppKey("auth", Auth)
USER = web.RequestKey("botkit_user", Identity)
