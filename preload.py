"""Command-line flags for Profile Studio, added by the WebUI before it parses its arguments."""


def preload(parser):
    """Add ``--profile-studio-dir``, ``--profile-studio-allow-open-api`` and the cluster mode's
    ``--profile-studio-queue``, ``--profile-studio-no-worker``, ``--profile-studio-worker-timeout`` (docs/cluster.md)
    to the WebUI's argument parser."""
    parser.add_argument(
        "--profile-studio-dir",
        type=str,
        default=None,
        help=(
            "Profile Studio: folder where identities, photos, LoRAs in progress and job records live "
            "(default: <WebUI data dir>/profile-studio; never inside the extension folder)."
        ),
    )
    parser.add_argument(
        "--profile-studio-allow-open-api",
        action="store_true",
        default=False,
        help=(
            "Profile Studio: serve its API (/sdapi/v1/profile-studio/) without credentials even when the WebUI "
            "can be reached from other machines (--listen, --share, --server-name). Without this flag such a "
            "WebUI answers 401 on those routes unless --api-auth is given."
        ),
    )
    parser.add_argument(
        "--profile-studio-queue",
        type=str,
        default=None,
        metavar="POSTGRESQL_URL",
        help=(
            "Profile Studio cluster mode (docs/cluster.md): keep its jobs in this PostgreSQL database "
            "(postgresql://user:password@host:port/db), shared with every WebUI and serve given the same URL and the "
            "same --profile-studio-dir; this WebUI then runs jobs sent to any of them. Default: jobs stay here."
        ),
    )
    parser.add_argument(
        "--profile-studio-no-worker",
        action="store_true",
        default=False,
        help="Profile Studio, with --profile-studio-queue: accept and answer for jobs, but let other WebUIs run them.",
    )
    parser.add_argument(
        "--profile-studio-worker-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help=(
            "Profile Studio, with --profile-studio-queue: a worker silent this long (killed, its machine gone) has "
            "its running job taken up by another (default 30)."
        ),
    )
