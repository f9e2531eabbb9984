"""The pinned Dapr SDK imports in this environment (issue 18).

Its generated protobuf modules check the runtime at import time and the
wheels' metadata does not say which protobuf they need, so pip accepts a pin
that cannot be imported; these tests are where such a pin fails.
"""

from __future__ import annotations

from importlib.metadata import version

from fastapi import FastAPI
from fastapi.testclient import TestClient


def test_the_sdk_and_its_fastapi_extension_import() -> None:
    from dapr.clients import DaprClient
    from dapr.ext.fastapi import DaprApp

    assert callable(DaprClient.invoke_method) and callable(DaprApp.subscribe)
    assert version("dapr") == version("dapr-ext-fastapi"), "the SDK and its extension are one release"


def test_the_generated_protobuf_code_loads_under_the_locked_runtime() -> None:
    # The modules the gRPC client is built from: the import raises VersionError
    # when their gencode is newer than the installed protobuf runtime.
    from dapr.proto.common.v1 import common_pb2
    from dapr.proto.runtime.v1 import dapr_pb2

    item = common_pb2.StateItem(key="k", value=b"v", etag=common_pb2.Etag(value="1"))
    request = dapr_pb2.SaveStateRequest(store_name="citylake-state", states=[item])
    assert dapr_pb2.SaveStateRequest.FromString(request.SerializeToString()).states[0].etag.value == "1"


def test_dapr_app_announces_its_subscriptions_and_routes_events() -> None:
    from dapr.ext.fastapi import DaprApp

    app = FastAPI()
    dapr_app = DaprApp(app)
    seen: list[dict[str, object]] = []

    # DaprApp.subscribe has no type hints in the SDK.
    @dapr_app.subscribe(pubsub="citylake-pubsub", topic="alerts", route="/events/alerts")  # type: ignore[untyped-decorator]
    def on_alert(event: dict[str, object]) -> dict[str, str]:
        seen.append(event)
        return {"status": "SUCCESS"}

    client = TestClient(app)
    assert client.get("/dapr/subscribe").json() == [
        {"pubsubname": "citylake-pubsub", "topic": "alerts", "route": "/events/alerts", "metadata": {}}
    ]
    assert client.post("/events/alerts", json={"id": "a:opened"}).json() == {"status": "SUCCESS"}
    assert seen == [{"id": "a:opened"}]
