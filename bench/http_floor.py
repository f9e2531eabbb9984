"""The HTTP floor: a FastAPI app whose routes answer a constant, served by
uvicorn with the settings ``citylake serve`` uses (one process, the same
``uvicorn.run`` call). Under the same load as the query service it shows what
the framework, the server and the client cost before any query runs.

    .venv/bin/python bench/http_floor.py --port 8090
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI

# About the size of one device's latest answer (10 metrics).
CONSTANT: dict[str, object] = {
    "device_id": "dev-000000",
    "readings": [
        {
            "metric": f"m{i}",
            "ts": "2026-11-20T23:50:00.000Z",
            "value": 1.5,
            "text": None,
            "unit": "u",
            "quality": 0,
        }
        for i in range(10)
    ],
}


def create_app() -> FastAPI:
    app = FastAPI(title="http floor")

    @app.get("/dapr/subscribe")
    def subscriptions() -> list[object]:
        return []  # daprd asks at start; this app subscribes to nothing

    @app.get("/{path:path}")
    def constant(path: str) -> dict[str, object]:
        return CONSTANT

    return app


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # As citylake/cli/serve.py runs every service.
    uvicorn.run(create_app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
