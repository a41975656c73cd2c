"""Signing a Flask test client in as a user, second factor included, for tests of any tier.

ISTV analysts, admins and organisation admins sign in with a TOTP code after their password (issue 7).
``sign_in`` does what the browser and the authenticator app would: posts the login form with its CSRF
token and, when the portal asks for a code, reads the user's TOTP secret (made at the first such sign-in)
from the database and posts its current code. Codes are accepted once per 30 s step, so it forgets the
last used step first: a test may sign the same user in several times in a row. Test-only: the app never
reads a secret back except to check a code.
"""
from __future__ import annotations

import re

import pyotp
from sqlalchemy import text


def csrf_from(client, path: str = "/login") -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True)).group(1)


def sign_in(client, email: str, password: str, next_path: str | None = None):
    """Sign ``client`` in; returns the last response (302 to ``next`` on success)."""
    url = "/login" + (f"?next={next_path}" if next_path else "")
    response = client.post(url, data={"email": email, "password": password, "csrf_token": csrf_from(client)})
    if response.status_code != 302 or not response.headers["Location"].endswith("/login/second-factor"):
        return response
    token = csrf_from(client, "/login/second-factor")   # (this GET also makes the secret of a new enrolment)
    engine = client.application.extensions["safestats_engine"]
    with engine.begin() as conn:
        secret = conn.execute(text("UPDATE users SET totp_last_step = NULL WHERE lower(email) = lower(:e) "
                                   "RETURNING totp_secret"), {"e": email}).scalar_one()
    return client.post("/login/second-factor", data={"code": pyotp.TOTP(secret).now(), "csrf_token": token})
