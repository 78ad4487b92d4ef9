"""botkit.app.http: the one exception -> HTTP answer mapping of the console and KB editor APIs."""

from __future__ import annotations

import json

import pytest

from botkit.app.http import Refused, error_response, status_for
from botkit.errors import (
    ArticleNotFound,
    BotkitError,
    DatabaseLocked,
    DiskFull,
    EmbeddingError,
    KnowledgeError,
    MessageRejected,
    QueryError,
)
from botkit.store import ConflictError, StoreError
from training.gaps import ProposalError


def _body(exc: BaseException) -> tuple[int, dict]:
    answer = error_response(exc)
    assert answer is not None
    return answer.status, json.loads(answer.text or "{}")


@pytest.mark.parametrize("exc, status", [
    (Refused(403, "not yours"), 403),
    (ProposalError("already reviewed"), 409),
    (ProposalError("no proposal 7", status=404), 404),
    (DatabaseLocked("locked"), 503),
    (DiskFull("full"), 507),
    (ArticleNotFound("no article 'x'"), 404),
    (ConflictError("taken"), 409),
    (StoreError("no hand-off to take"), 400),
    (MessageRejected("empty message"), 400),
    (QueryError("too long"), 400),
    (KnowledgeError("no revision 9"), 400),
    (BotkitError("no conversation 'c'"), 400),
    (EmbeddingError("model could not be loaded"), 500),
])
def test_status_for(exc: BaseException, status: int) -> None:
    assert status_for(exc) == status
    assert _body(exc)[0] == status


def test_bugs_are_not_answered_they_propagate() -> None:
    assert status_for(ValueError("a bug")) is None
    assert error_response(KeyError("a bug")) is None


def test_bodies_name_what_to_fix() -> None:
    assert _body(Refused(400, "give a number", "rev", current=3))[1] == {
        "error": "give a number", "field": "rev", "reason": "give a number", "current": 3}
    assert _body(Refused(409, "taken"))[1] == {"error": "taken"}
    assert _body(MessageRejected("empty message"))[1] == {"error": "empty message", "field": "text"}
    assert _body(QueryError("too long"))[1] == {"error": "too long", "field": "q", "reason": "too long"}
    assert _body(DatabaseLocked("locked, retry"))[1] == {"error": "locked, retry", "retry": True}
    assert _body(DiskFull("disk full"))[1] == {"error": "disk full", "retry": False}
