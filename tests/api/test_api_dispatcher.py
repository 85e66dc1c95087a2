"""The send dispatcher is built with the app, shared with the console, closed at shutdown."""

from __future__ import annotations

from fastapi.testclient import TestClient

from mailveil.api.app import create_app
from mailveil.notify.queue import Dispatcher
from mailveil.runtime import Runtime


def test_one_dispatcher_per_app_closed_when_it_shuts_down(runtime: Runtime) -> None:
    app = create_app(runtime)
    dispatcher = app.state.notify_dispatcher
    assert isinstance(dispatcher, Dispatcher)
    with TestClient(app):
        assert app.state.notify_dispatcher is dispatcher
        assert not dispatcher.stop.is_set()
    # Shutdown told in-process sends to stop (a worker resumes them) and joined them.
    assert dispatcher.stop.is_set()
    assert create_app(runtime).state.notify_dispatcher is not dispatcher
