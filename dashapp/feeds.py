"""The supplier feed API: suppliers POST drop files over HTTPS with a bearer token and read back the outcome.

``POST /api/feeds/v1/<supplier>/drops`` takes a multipart upload (field ``file``) with
``Authorization: Bearer <token>`` (a token from ``safestats tokens create <supplier>``; see
``safestats.feed_tokens``), saves it under a safe name (at most ``MAX_UPLOAD_BYTES``; the name must be one
the supplier's format claims), loads it through the same pipeline as the incoming folders
(``safestats.ingest.ingest_files``, synchronously, files it under processed/ or rejected/ of the supplier's
incoming folder) and answers with the drop id. ``GET /api/feeds/v1/<supplier>/drops/<id>`` reports that
drop's outcome. These routes authenticate by token alone: they are declared ``guard.SUPPLIER_TOKEN`` (the
login guard lets them through), never look at the session cookie, and so need no CSRF token (a browser's cookies
cannot authorise anything here). A missing, malformed, wrong or revoked token is 401; a good token of
another supplier is 403; every error is JSON saying what to do. Serve it behind TLS: the token is a password.
"""
from __future__ import annotations

import shutil
import uuid

from flask import Blueprint, current_app, jsonify, request, url_for
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.utils import secure_filename

from dashapp import guard
from safestats.feed_tokens import verify_token
from safestats.ingest import claimed_by, expected_names, ingest_files, supplier_folder
from safestats.supplier_status import drop_outcome

bp = Blueprint("feeds", __name__, url_prefix="/api/feeds/v1")
# The largest police.uk month for the Met is about 20 MB; other suppliers' yearly files stay well below this.
MAX_UPLOAD_BYTES = 200 * 1024 * 1024
UPLOAD_FOLDER = ".feed-uploads"    # inside the supplier's incoming folder; hidden, so the scheduler ignores it


def _error(status: int, message: str, **extra):
    return guard.json_error(status, message, realm="safestats-feeds", **extra)


def _engine():
    # The owner's engine: a feed upload loads a drop (incidents, rollup refresh), which the web role may not.
    return current_app.extensions["safestats_loader_engine"]


def _authorise(supplier: str):
    """None when the request carries an active token of ``supplier``; otherwise the error response."""
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return _error(401, "missing bearer token: send 'Authorization: Bearer <token>' with the token the SafeStats "
                           "administrators gave you")
    token = verify_token(_engine(), presented.strip())
    if token is None:
        return _error(401, "token not recognised or revoked: check it was copied whole, or ask the SafeStats "
                           "administrators for a new one")
    if token.supplier != supplier:
        return _error(403, f"this token is for supplier {token.supplier!r}, not {supplier!r}: send to "
                           f"/api/feeds/v1/{token.supplier}/drops, or ask for a token for {supplier!r}")
    return None


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(_exc):
    return _error(413, f"the upload is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB: split it (one file per "
                       "month) or compress it (.csv.gz)")


@bp.post("/<supplier>/drops", endpoint="upload_drop")
@guard.endpoint(guard.SUPPLIER_TOKEN, audit=False)
def upload_drop(supplier: str):
    denied = _authorise(supplier)
    if denied is not None:
        return denied
    if request.content_length is not None and request.content_length > MAX_UPLOAD_BYTES:
        raise RequestEntityTooLarge()
    # Also stops a chunked upload with no Content-Length once it passes the limit.
    request.max_content_length = MAX_UPLOAD_BYTES
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return _error(400, "no file: send the drop as multipart/form-data in a field named 'file'")
    name = secure_filename(upload.filename)
    if not name or not claimed_by(supplier, name):
        return _error(400, f"{supplier} drops are named like {expected_names(supplier)}; got "
                           f"{upload.filename!r}: rename the file and send it again")
    supplier_dir = supplier_folder(supplier, current_app.config.get("SAFESTATS_INCOMING"))
    staging = supplier_dir / UPLOAD_FOLDER / uuid.uuid4().hex
    staging.mkdir(parents=True)
    try:
        path = staging / name
        upload.save(path)
        if path.stat().st_size > MAX_UPLOAD_BYTES:
            raise RequestEntityTooLarge()
        url = _engine().url.render_as_string(hide_password=False)
        [outcome] = ingest_files(url, supplier, [path], supplier_dir=supplier_dir)
    finally:
        # Filed away under processed/ or rejected/ when it was handled; anything left here was not.
        shutil.rmtree(staging, ignore_errors=True)

    if outcome.status not in ("loaded", "skipped", "rejected") or outcome.drop_id is None:
        return _error(503, f"the drop could not be loaded ({outcome.message or outcome.status}); nothing was "
                           "stored: send the same file again later")
    body = drop_outcome(_engine(), supplier, outcome.drop_id).as_json()
    body["status"] = outcome.status          # "skipped": the same content was loaded before, as drop_id
    body["message"] = outcome.message
    body["status_url"] = url_for("feeds.drop_status", supplier=supplier, drop_id=outcome.drop_id)
    response = jsonify(body)
    response.status_code = {"loaded": 201, "skipped": 200, "rejected": 422}[outcome.status]
    response.headers["Location"] = body["status_url"]
    return response


@bp.get("/<supplier>/drops/<int:drop_id>", endpoint="drop_status")
@guard.endpoint(guard.SUPPLIER_TOKEN, audit=False)
def drop_status(supplier: str, drop_id: int):
    denied = _authorise(supplier)
    if denied is not None:
        return denied
    outcome = drop_outcome(_engine(), supplier, drop_id)
    if outcome is None:
        return _error(404, f"no drop {drop_id} for {supplier}: use the drop_id the upload answered with")
    return jsonify(outcome.as_json())
