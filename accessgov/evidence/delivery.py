"""Delivering scheduled packs: to a directory (EVIDENCE_DELIVERY_DIR: a mounted share, a backup volume)
or to S3-compatible storage (EVIDENCE_DELIVERY_S3_BUCKET, with EVIDENCE_DELIVERY_S3_ENDPOINT_URL for
MinIO, Ceph, R2 …; credentials from the standard AWS environment variables or instance role, never from
settings). Each delivery is checked after writing: the directory copy is re-hashed, the stored object's
size and recorded SHA-256 are read back. Called by services.evidence, outside any transaction."""

import contextlib
import hashlib
import os
import shutil
from pathlib import Path

from django.conf import settings

from accessgov import net


class DeliveryError(Exception):
    """The pack could not be delivered (the message says where and why, without secrets)."""


def configured() -> bool:
    return bool(settings.EVIDENCE_DELIVERY_DIR or settings.EVIDENCE_DELIVERY_S3_BUCKET)


def target_label() -> str:
    if settings.EVIDENCE_DELIVERY_S3_BUCKET:
        return f"s3://{settings.EVIDENCE_DELIVERY_S3_BUCKET}/{settings.EVIDENCE_DELIVERY_S3_PREFIX}"
    return settings.EVIDENCE_DELIVERY_DIR


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def deliver(path: Path, name: str, sha256: str) -> str:
    """Deliver the file; returns where it now is. Raises DeliveryError."""
    if not path.exists():
        raise DeliveryError(f"The pack file {name} is missing from EVIDENCE_DIR.")
    if settings.EVIDENCE_DELIVERY_S3_BUCKET:
        return _to_s3(path, name, sha256)
    return _to_directory(path, name, sha256)


def _to_directory(path: Path, name: str, sha256: str) -> str:
    target_dir = Path(settings.EVIDENCE_DELIVERY_DIR)
    target = target_dir / name
    partial = target_dir / f".{name}.part"
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        with path.open("rb") as source, partial.open("wb") as copy:
            shutil.copyfileobj(source, copy, 1 << 20)
            copy.flush()
            os.fsync(copy.fileno())
        if _sha256(partial) != sha256:
            raise DeliveryError(f"The copy in {target_dir} does not have the pack's SHA-256.")
        os.replace(partial, target)
    except OSError as exc:
        raise DeliveryError(f"Could not write to {target_dir}: {exc.strerror or exc}.") from exc
    finally:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
    return str(target)


def _to_s3(path: Path, name: str, sha256: str) -> str:
    """Upload and read back within EVIDENCE_DELIVERY_S3_TIMEOUT_SECONDS in all (``net.deadline``; botocore's own
    timeouts bound one socket read, so storage trickling its answers held the worker as long as it trickled), plus
    at most botocore's backoff between its attempts (1 s, then 2 s): an attempt after the limit fails at once. In
    this thread: no transfer threads, so the deadline watches every connection the upload opens."""
    import boto3
    from boto3.exceptions import Boto3Error
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    bucket = settings.EVIDENCE_DELIVERY_S3_BUCKET
    key = f"{settings.EVIDENCE_DELIVERY_S3_PREFIX}{name}"
    limit = settings.EVIDENCE_DELIVERY_S3_TIMEOUT_SECONDS
    client = boto3.client(
        "s3",
        endpoint_url=settings.EVIDENCE_DELIVERY_S3_ENDPOINT_URL or None,
        region_name=settings.EVIDENCE_DELIVERY_S3_REGION or None,
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=60),
    )
    try:
        with net.deadline(limit):
            client.upload_file(
                str(path),
                bucket,
                key,
                ExtraArgs={"ContentType": "application/zip", "Metadata": {"sha256": sha256}},
                Config=TransferConfig(use_threads=False),
            )
            stored = client.head_object(Bucket=bucket, Key=key)
    except TimeoutError as exc:
        raise DeliveryError(
            f"Could not upload to s3://{bucket}/{key} within {limit:g} s (the storage is too slow)."
        ) from exc
    except (Boto3Error, BotoCoreError, ClientError) as exc:
        raise DeliveryError(f"Could not upload to s3://{bucket}/{key}: {exc.__class__.__name__}: {exc}") from exc
    finally:
        client.close()
    if stored.get("ContentLength") != path.stat().st_size or stored.get("Metadata", {}).get("sha256") != sha256:
        raise DeliveryError(f"s3://{bucket}/{key} does not hold the pack as sent (size or SHA-256 differ).")
    return f"s3://{bucket}/{key}"
