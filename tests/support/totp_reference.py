"""An independent RFC 6238 TOTP implementation (standard library only), used by tests in place of an
authenticator app so that codes are not produced by the same library that checks them."""

import base64
import hashlib
import hmac
import struct
import time


def totp(secret_b32: str, at: float | None = None, step: int = 30, digits: int = 6) -> str:
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    counter = int((time.time() if at is None else at) // step)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 10**digits:0{digits}d}"


def time_step(at: float | None = None, step: int = 30) -> int:
    return int((time.time() if at is None else at) // step)


def wait_for_next_step(after_step: int, step: int = 30) -> None:
    """Sleep until the authenticator shows a new code (a used code is never accepted twice)."""
    while time_step() <= after_step:
        time.sleep(0.5)
