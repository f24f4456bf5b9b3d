"""Command-line flags for Profile Studio, added by the WebUI before it parses its arguments."""


def preload(parser):
    """Add ``--profile-studio-dir`` and ``--profile-studio-allow-open-api`` to the WebUI's argument parser."""
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
