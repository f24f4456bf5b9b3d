"""Selfie intake: reading any photo, finding the face, checking it, and making training crops."""
