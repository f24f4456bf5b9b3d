"""Where a user's identities live on disk, and how every trace of one is removed."""
