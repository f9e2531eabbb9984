"""Entry point Flink's ``flink run --python`` executes on the client side."""

from __future__ import annotations

import argparse

from citylake.config import load_config
from citylake.pipelines.runner import start


def main() -> None:
    parser = argparse.ArgumentParser(description="citylake job, as submitted by `citylake pipeline submit`")
    parser.add_argument("--job", required=True)
    parser.add_argument("--mode", choices=("streaming", "batch"), required=True)
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    config = load_config(args.config).config
    start(config, args.job, args.mode)


if __name__ == "__main__":
    main()
