"""Small stand-ins for the hosts Profile Studio runs in, for tests."""
