"""``serve``: the API and the tab without a WebUI (diffusers host)."""

from __future__ import annotations


from lib_profile.cli.common import add_lora_dir_argument, lora_dirs


def add_serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve the API and the tab without a WebUI (diffusers host)")
    p.add_argument("--checkpoint", required=True, help="an SD1.5 checkpoint file, or 'tiny'")
    p.add_argument("--port", type=int, default=7870)
    p.add_argument("--listen", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--api-auth", help="user:password[,user2:password2] required on every route and the tab")
    p.add_argument("--allow-open-api", action="store_true",
                   help="serve without --api-auth on an address other machines reach (refused otherwise)")
    p.add_argument("--controlnet-pose", help="OpenPose ControlNet model file ('tiny' with --checkpoint tiny)")
    p.add_argument("--controlnet-tile", help="tile ControlNet model file ('tiny' with --checkpoint tiny)")
    add_lora_dir_argument(p)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--queue", metavar="POSTGRESQL_URL",
                   help="cluster mode (docs/cluster.md): keep jobs in this PostgreSQL database "
                        "(postgresql://user@host:port/db), shared with every other serve given the same URL and the "
                        "same --data-dir (a WebUI joins with --profile-studio-queue); default: jobs stay in this process (SQLite under the data folder)")
    p.add_argument("--no-worker", action="store_true",
                   help="with --queue: a front only; accepts and answers for jobs, other processes run them")
    p.add_argument("--worker-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="with --queue: a worker silent this long (killed, its machine gone) has its running job "
                        "taken up by another worker (default 30; heartbeats every third of it)")


def cmd_serve(args) -> int:
    from lib_profile.serve import serve

    if not 1 <= args.worker_timeout <= 86400:  # NaN fails this too
        raise SystemExit("--worker-timeout must be 1 to 86400 seconds")
    if args.no_worker and not args.queue:
        raise SystemExit("--no-worker needs --queue postgresql://...: without a shared queue nothing would run "
                         "the jobs")
    serve(args.checkpoint, args.port, args.listen, args.data_dir, args.api_auth, args.device, args.controlnet_pose,
          args.controlnet_tile, args.allow_open_api, lora_dirs=lora_dirs(args), queue=args.queue,
          worker=not args.no_worker, worker_timeout_s=args.worker_timeout)
    return 0
