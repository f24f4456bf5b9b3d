"""HTTP Basic credentials for the API (the WebUI's ``--api-auth`` format), and the refusal of a server exposed
without them."""

from __future__ import annotations

import secrets
from typing import Optional

from fastapi import Depends, HTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials


def parse_auth(text: Optional[str]) -> list[tuple[str, str]]:
    """``"user:pass,user2:pass2"`` (the WebUI's ``--api-auth`` format) as pairs."""
    pairs = []
    for item in (text or "").split(","):
        if ":" in item:
            user, _, password = item.strip().partition(":")
            pairs.append((user, password))
    return pairs


def auth_dependency(credentials: list[tuple[str, str]]):
    basic = HTTPBasic(auto_error=False)

    def check(creds: Optional[HTTPBasicCredentials] = Depends(basic)) -> None:
        if creds is not None:
            for user, password in credentials:
                if secrets.compare_digest(creds.username.encode(), user.encode()) and \
                        secrets.compare_digest(creds.password.encode(), password.encode()):
                    return
        raise HTTPException(status_code=401, detail="Incorrect username or password",
                            headers={"WWW-Authenticate": "Basic"})

    return check


def refusal_dependency(message: str):
    def refuse() -> None:
        raise HTTPException(status_code=401, detail=message, headers={"WWW-Authenticate": 'Basic realm="Profile Studio"'})

    return refuse
