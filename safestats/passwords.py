"""The password rule: long enough and not a common password (NIST SP 800-63B), instead of complexity rules.

A new password needs at least ``MIN_PASSWORD_LENGTH`` characters and must not be on the common-password
blocklist: the 30,000 most common passwords from real breaches that ship in the ``zxcvbn`` package
(Dropbox's password-strength estimator; ``zxcvbn.frequency_lists.FREQUENCY_LISTS["passwords"]``), compared
case-insensitively, also with trailing digits and punctuation removed ("Password123!" is "password"). A
password that is the user's own email address or its part before the @ is refused too. ``password_problem``
says what is wrong in words a user can act on, or returns None.
"""
from __future__ import annotations

import re
from functools import lru_cache

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024   # argon2 takes any length; this only stops megabyte "passwords" tying up a worker
_TRAILING_NOISE = re.compile(r"[\d\W_]+$")


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """zxcvbn's list of common passwords from breach corpora, lower-case."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(word.lower() for word in FREQUENCY_LISTS["passwords"])


def is_common(password: str) -> bool:
    lowered = password.lower()
    stripped = _TRAILING_NOISE.sub("", lowered)
    blocklist = common_passwords()
    return lowered in blocklist or (len(stripped) >= 4 and stripped in blocklist)


def password_problem(password: str, email: str = "") -> str | None:
    """Why ``password`` may not be used (a sentence for the user), or None when it is fine."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        return f"A password needs at least {MIN_PASSWORD_LENGTH} characters; a few words together make a good one."
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"A password may have at most {MAX_PASSWORD_LENGTH} characters."
    if is_common(password):
        return "That password is on the list of common passwords attackers try first; choose another."
    email = (email or "").strip().lower()
    if email and password.lower() in (email, email.split("@", 1)[0]):
        return "A password may not be your email address; choose another."
    return None
