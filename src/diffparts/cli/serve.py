"""``diffparts serve``: serve every deployment of prefect.yaml, with its schedules."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the deployments of prefect.yaml (schedules included) against the configured Prefect API",
        description=(
            "Register every deployment of prefect.yaml (or those named) with the Prefect API this shell is "
            "configured for (PREFECT_API_URL; `prefect server start` runs one on http://127.0.0.1:4200) and "
            "serve them from this process with prefect.serve: their schedules fire here, and runs started "
            "from the dashboard or `prefect deployment run` execute here, each in its own subprocess. No work "
            "pool or worker is needed. First the GPU concurrency limit named in prefect.yaml is created or set "
            "to --gpus, so no more GPU tasks run at once than there are GPUs. Ctrl-C stops serving."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--file", default=None, metavar="PATH", help="deployment file (default: the repository's prefect.yaml)")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME", help="serve only these deployments")
    parser.add_argument("--gpus", type=int, default=None, metavar="N",
                        help="GPU tasks allowed at once across all runs (default: prefect.yaml's limit)")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="flow runs at once in this process")
    parser.add_argument("--list", action="store_true", help="print the deployments and their schedules, serve nothing")
    parser.set_defaults(handler=run_serve)


def run_serve(args) -> int:
    from flows import serve as serving

    path = args.file or serving.PREFECT_YAML
    if args.gpus is not None and args.gpus < 1:
        raise ValueError(f"--gpus must be >= 1, got {args.gpus}")
    if args.list:
        spec = serving.read_spec(path)
        for deployment in serving.build_deployments(spec, args.only):
            crons = [f"cron '{s.schedule.cron}' {getattr(s.schedule, 'timezone', None) or 'UTC'} "
                     f"({'on' if s.active else 'off'})" for s in deployment.schedules or []]
            print(f"{deployment.flow_name}/{deployment.name}: {', '.join(crons) or 'no schedule'}")
        print(f"GPU concurrency limit: {serving.gpu_limit_spec(spec)}")
        return 0
    serving.serve(path, args.only, args.gpus, args.limit)
    return 0
