"""OpenAPI and the offline docs page."""

from __future__ import annotations

import re


class TestDocs:
    def test_docs_page_uses_only_local_assets(self, client) -> None:
        page = client.get("/docs")
        assert page.status_code == 200
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
        urls += re.findall(r"""url: ?'([^']+)'""", page.text)
        assert urls, page.text
        for url in urls:
            assert url.startswith("/"), f"external asset {url}"
            assert client.get(url).status_code == 200, url

    def test_every_route_has_a_summary_and_request_examples(self, client) -> None:
        schema = client.get("/openapi.json").json()
        components = schema.get("components", {}).get("schemas", {})

        def has_example(node) -> bool:
            if isinstance(node, dict):
                if "example" in node or "examples" in node:
                    return True
                ref = node.get("$ref")
                if ref and has_example(components[ref.rsplit("/", 1)[-1]]):
                    return True
                return any(has_example(v) for k, v in node.items() if k != "$ref")
            if isinstance(node, list):
                return any(has_example(v) for v in node)
            return False

        problems = []
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                if not operation.get("summary"):
                    problems.append(f"{method} {path}: no summary")
                body = operation.get("requestBody")
                if body and not has_example(body):
                    problems.append(f"{method} {path}: request body without example")
        assert problems == []

    def test_oversized_body_is_refused(self, client, storefront_key) -> None:
        response = client.post("/api/v1/coupons/validate", headers=storefront_key,
                               content=b"{" + b" " * (17 * 1024 * 1024) + b"}")
        assert response.status_code == 413
        assert response.json()["code"] == "payload_too_large"

    def test_streamed_oversized_body_is_refused(self, client, storefront_key) -> None:
        def chunks():
            for _ in range(17):
                yield b" " * (1024 * 1024)

        response = client.post("/api/v1/coupons/validate", headers=storefront_key,
                               content=chunks())
        assert response.status_code == 413
        assert response.json()["code"] == "payload_too_large"
