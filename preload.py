"""Command-line flags for Profile Studio, added by the WebUI before it parses its arguments."""


def preload(parser):
    """Add ``--profile-studio-dir`` to the WebUI's argument parser."""
    parser.add_argument(
        "--profile-studio-dir",
        type=str,
        default=None,
        help=(
            "Profile Studio: folder where identities, photos, LoRAs in progress and job records live "
            "(default: <WebUI data dir>/profile-studio; never inside the extension folder)."
        ),
    )
