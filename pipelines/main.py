"""Entry point Flink's ``flink run --python`` executes on the client side."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from citylake.config import load_config
from citylake.pipelines.catalog import job_catalog
from citylake.pipelines.runner import start


def main() -> None:
    parser = argparse.ArgumentParser(description="citylake job, as submitted by `citylake pipeline submit`")
    parser.add_argument(
        "--job", required=True, help="a job, or several comma-separated, run as one Flink job"
    )
    parser.add_argument("--mode", choices=("streaming", "batch"), required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--from", dest="from_", type=datetime.fromisoformat, help="batch: first event time")
    parser.add_argument("--to", type=datetime.fromisoformat, help="batch: end of event time")
    parser.add_argument("--rules-from", help="alerts: the alerts service's URL or Dapr app id")
    args = parser.parse_args()
    if (args.from_ is None) != (args.to is None):
        parser.error("give both --from and --to")
    config = load_config(args.config).config
    job_set = job_catalog(config, args.config).job_set(args.job.split(","))
    if "alerts" in job_set.names:
        # Read once: a job on the session cluster is planned from the rules of
        # its submission (see `citylake pipeline submit --help`).
        from citylake.pipelines.alerts.follow import with_rules
        from citylake.pipelines.alerts.rulesource import rule_source

        source = rule_source(args.rules_from or config.pipelines.alerts_from, config, Path(args.config))
        config = with_rules(config, source.rules())
    time_range = (args.from_, args.to) if args.from_ is not None else None
    start(config, job_set, args.mode, time_range=time_range)


if __name__ == "__main__":
    main()
