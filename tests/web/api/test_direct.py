"""DirectRoute and OnDemand: a route without FastAPI's dependency solving behaves like one
with it (documented, authenticated, its unit of work committed or rolled back)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from web.api.direct import DirectDispatch, DirectRoute, documented, parameters
from web.deps import OnDemand, async_database, get_session
from web.errors import ApiError, install_error_handlers


class Where(BaseModel):
    name: str = Field(max_length=5, description="A short name.")
    count: int = Field(default=1, ge=1)


class TestDirectRoute:
    def test_refuses_a_plain_function(self) -> None:
        def endpoint(request: Request) -> Response:
            return Response()

        with pytest.raises(TypeError, match="coroutine function taking only the request"):
            DirectRoute("/x", endpoint, methods=["GET"])

    def test_refuses_anything_fastapi_would_solve(self) -> None:
        async def with_parameter(request: Request, count: int) -> Response:
            return Response()

        async def with_dependency(request: Request,
                                  session: object = Depends(get_session)) -> Response:
            return Response()

        async def without_request() -> Response:
            return Response()

        for endpoint, named in ((with_parameter, "['count']"), (with_dependency, "['session']"),
                                (without_request, "[]")):
            with pytest.raises(TypeError, match=re.escape(f"(it declares {named})")):
                DirectRoute("/x/{key}", endpoint, methods=["GET"])

    def test_parameters_read_validated_and_documented(self) -> None:
        async def endpoint(request: Request) -> Response:
            errors: list[dict] = []
            path = parameters(request.path_params, Where, "path", ("name",), errors)
            query = parameters(request.query_params, Where, "query", ("name", "count"), errors)
            if errors or path is None or query is None:
                raise RequestValidationError(errors)
            return Response(f"{path.name} {query.name} {query.count}")

        router = APIRouter()
        router.add_api_route("/things/{name}", endpoint, methods=["GET"],
                             route_class_override=DirectRoute, openapi_extra={"parameters": [
                                 *documented(Where, "path", ("name",)),
                                 *documented(Where, "query", ("name", "count"))]})
        app = FastAPI()
        install_error_handlers(app)
        app.include_router(router)
        with TestClient(app) as client:
            assert client.get("/things/ab?name=cd&count=2").text == "ab cd 2"
            bad = client.get("/things/abcdefg?name=cd&count=0")
            assert bad.status_code == 422
            assert [e["loc"] for e in bad.json()["errors"]] == [["path", "name"],
                                                                ["query", "count"]]
            assert bad.json()["message"] == "invalid request: path.name, query.count"
        parameters_doc = app.openapi()["paths"]["/things/{name}"]["get"]["parameters"]
        assert [(p["name"], p["in"], p["required"]) for p in parameters_doc] == [
            ("name", "path", True), ("name", "query", False), ("count", "query", False)]
        assert parameters_doc[0]["schema"]["maxLength"] == 5
        assert parameters_doc[0]["description"] == "A short name."


class TestOnDemand:
    """What the tests' override of get_session sees: opened only when asked for, committed
    when the route returns, rolled back when it raises."""

    @pytest.fixture
    def world(self) -> Iterator[tuple[TestClient, list[str]]]:
        events: list[str] = []

        def recording_session() -> Iterator[str]:
            events.append("open")
            try:
                yield "the session"
                events.append("commit")
            except BaseException:
                events.append("rollback")
                raise

        async def endpoint(request: Request) -> Response:
            async with OnDemand(request) as on_demand:
                if "session" in request.query_params:
                    events.append(f"got {await on_demand.session()}")
                    events.append(f"again {await on_demand.session()}")
                database = await on_demand.database()
                if "fail" in request.query_params:
                    raise RuntimeError("the route failed")
                events.append("responding")
            return Response(str(database))

        app = FastAPI()
        app.router.add_api_route("/x", endpoint, methods=["GET"],
                                 route_class_override=DirectRoute)
        app.dependency_overrides[get_session] = recording_session
        app.dependency_overrides[async_database] = lambda: "the database"
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client, events

    def test_no_session_unless_asked(self, world) -> None:
        client, events = world
        assert client.get("/x").text == "the database"
        assert events == ["responding"]

    def test_one_session_committed_before_the_response(self, world) -> None:
        client, events = world
        assert client.get("/x?session").status_code == 200
        assert events == ["open", "got the session", "again the session", "responding",
                          "commit"]

    def test_rolled_back_when_the_route_raises(self, world) -> None:
        client, events = world
        assert client.get("/x?session&fail").status_code == 500
        assert events == ["open", "got the session", "again the session", "rollback"]


class TestDirectDispatch:
    """Direct routes answered before FastAPI's router, their errors by the app's handlers."""

    @pytest.fixture
    def client(self) -> Iterator[TestClient]:
        async def endpoint(request: Request) -> Response:
            problem = request.query_params.get("raise")
            if problem == "api":
                raise ApiError(409, "taken", "already taken", headers={"X-Why": "taken"})
            if problem == "validation":
                raise RequestValidationError([{"loc": ("query", "n"), "msg": "bad n",
                                               "type": "value_error"}])
            if problem == "http":
                raise HTTPException(418, "a teapot")
            if problem == "unexpected":
                raise RuntimeError("boom")
            route = request.scope["route"]
            return Response(f"{route.path} {request.path_params['key']}")

        # Routed only through the dispatch layer: the router itself has no such route.
        direct = DirectRoute("/direct/{key}", endpoint, methods=["GET"])
        app = FastAPI()
        install_error_handlers(app)

        @app.post("/direct/{key}")
        def post(key: str) -> dict[str, str]:
            return {"posted": key}

        app.add_middleware(DirectDispatch, routes=[direct], handlers=app.exception_handlers)
        with TestClient(app, raise_server_exceptions=False) as test_client:
            yield test_client

    def test_answered_before_the_router(self, client) -> None:
        answer = client.get("/direct/abc")
        assert (answer.status_code, answer.text) == (200, "/direct/{key} abc")

    def test_other_methods_and_paths_go_on_to_the_router(self, client) -> None:
        assert client.post("/direct/abc").json() == {"posted": "abc"}
        assert client.get("/direct/abc/more").status_code == 404
        assert client.delete("/direct/abc").status_code == 405

    def test_behind_a_root_path_the_router_answers(self, client) -> None:
        # The router strips the root path; the router has no GET route here, so 405.
        with TestClient(client.app, root_path="/prefix") as behind:
            assert behind.get("/prefix/direct/abc").status_code == 405

    def test_errors_answered_by_the_apps_handlers(self, client) -> None:
        taken = client.get("/direct/abc?raise=api")
        assert (taken.status_code, taken.json()["code"], taken.headers["x-why"]) == (
            409, "taken", "taken")
        invalid = client.get("/direct/abc?raise=validation")
        assert (invalid.status_code, invalid.json()["errors"][0]["loc"]) == (422, ["query", "n"])
        teapot = client.get("/direct/abc?raise=http")
        assert (teapot.status_code, teapot.json()["message"]) == (418, "a teapot")

    def test_an_unexpected_error_reaches_the_500_handler(self, client) -> None:
        answer = client.get("/direct/abc?raise=unexpected")
        assert (answer.status_code, answer.json()["code"]) == (500, "internal_error")
