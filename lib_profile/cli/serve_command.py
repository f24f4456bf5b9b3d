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


def cmd_serve(args) -> int:
    from lib_profile.serve import serve

    serve(args.checkpoint, args.port, args.listen, args.data_dir, args.api_auth, args.device, args.controlnet_pose,
          args.controlnet_tile, args.allow_open_api, lora_dirs=lora_dirs(args))
    return 0
