"""Start the audit trail inside `sovereign run`: the key, the trail, the published public key.

The parts of auditing that talk to the API server live here, apart from the mapping in
`audit_hooks.py`: reading the signing key from a Secret (when it is not mounted as a file)
and publishing the public key, and the newest signed checkpoint as an anchor, in a
ConfigMap in the operator's namespace, so anyone with read access can verify the log.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from sovereign_operator.audit.checkpoint import Signer, public_key_configmap
from sovereign_operator.audit.record import AuditRecord
from sovereign_operator.audit_hooks import SECRET_DATA_KEY, AuditSettings, OperatorAudit, open_trail
from sovereign_operator.hooks import Hooks
from sovereign_operator.kube import FIELD_MANAGER

log = logging.getLogger(__name__)


class AuditStartError(RuntimeError):
    """The audit trail cannot start; the message names the setting to fix."""


async def read_signing_key(api: client.ApiClient, namespace: str, secret: str) -> Signer:
    """The ed25519 key in Secret `namespace/secret`, data key `key.pem`."""
    try:
        found = await client.CoreV1Api(api).read_namespaced_secret(secret, namespace)
    except ApiException as error:
        raise AuditStartError(
            f"audit signing key: cannot read Secret {namespace}/{secret} ({error.status} "
            f"{error.reason}); create it with `sovereign audit keygen` or fix "
            "--audit-signing-key-secret"
        ) from None
    encoded = (found.data or {}).get(SECRET_DATA_KEY)
    if not encoded:
        raise AuditStartError(
            f"audit signing key: Secret {namespace}/{secret} has no {SECRET_DATA_KEY!r} entry"
        )
    return Signer.from_pem(base64.b64decode(encoded), source=f"Secret {namespace}/{secret}")


class KeyPublisher:
    """Keeps the public-key ConfigMap current: the key, and the newest checkpoint line.

    Checkpoints are signed on the audit writer thread; `checkpointed` hands the line to the
    event loop, where at most one apply runs at a time and only the newest line is sent.
    """

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        signer: Signer,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._core = client.CoreV1Api(api)
        self._namespace, self._name, self._signer = namespace, name, signer
        self._loop = loop
        self._latest: bytes | None = None
        self._task: asyncio.Task[None] | None = None

    async def publish(self) -> None:
        body: Any = public_key_configmap(self._name, self._namespace, self._signer, self._latest)
        await self._core.patch_namespaced_config_map(
            self._name,
            self._namespace,
            body,
            field_manager=FIELD_MANAGER,
            force=True,
            # Server-side apply; the generated client takes it, its stubs do not list it.
            _content_type="application/apply-patch+yaml",  # type: ignore[call-arg]
        )

    def checkpointed(self, record: AuditRecord) -> None:
        """Called on the audit writer thread with each durable checkpoint."""
        line = record.line.rstrip(b"\n")
        self._loop.call_soon_threadsafe(self._update, line)

    def _update(self, line: bytes) -> None:
        self._latest = line
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._publish_latest())

    async def _publish_latest(self) -> None:
        sent: bytes | None = None
        while self._latest != sent:
            sent = self._latest
            try:
                await self.publish()
            except (ApiException, aiohttp.ClientError, OSError, TimeoutError) as error:
                # The anchor is a convenience for auditors; the log itself is complete.
                log.warning("audit: could not publish the newest checkpoint: %s", error)
                return

    async def flush(self) -> None:
        """Wait for the newest checkpoint (e.g. the seal at shutdown) to be published."""
        await asyncio.sleep(0)  # let a checkpoint handed over just now start its publish
        if self._task is not None:
            await self._task


@dataclass
class RunningAudit:
    """The audit trail of a running operator and the publisher of its public key."""

    audit: OperatorAudit
    publisher: KeyPublisher | None

    def hooks(self, base: Hooks) -> Hooks:
        return self.audit.hooks(base)

    async def aclose(self) -> None:
        """Seal the log, then publish the seal as the newest anchor."""
        await asyncio.to_thread(self.audit.close)
        if self.publisher is not None:
            await self.publisher.flush()


async def start_audit(
    settings: AuditSettings, api: client.ApiClient, namespace: str
) -> RunningAudit:
    """Open the trail (continuing an existing log) and publish the public key."""
    signer = None
    if settings.signing_key_secret is not None:
        signer = await read_signing_key(api, namespace, settings.signing_key_secret)
    try:
        if signer is None and settings.signing_key is not None:
            signer = Signer.from_file(settings.signing_key)
        trail = await asyncio.to_thread(open_trail, settings, signer)
    except (ValueError, OSError, RuntimeError) as error:
        raise AuditStartError(f"audit trail in {settings.log_dir}: {error}") from error
    audit = OperatorAudit(trail)
    if signer is None:
        return RunningAudit(audit, None)
    publisher = KeyPublisher(
        api, namespace, settings.public_key_configmap, signer, asyncio.get_running_loop()
    )
    trail.on_checkpoint = publisher.checkpointed
    try:
        await publisher.publish()
    except ApiException as error:
        await asyncio.to_thread(audit.close)
        raise AuditStartError(
            f"cannot publish the audit public key in ConfigMap {namespace}/"
            f"{settings.public_key_configmap} ({error.status} {error.reason}); "
            "the operator's role needs create and patch on configmaps in its namespace"
        ) from None
    log.info(
        "audit: recording to %s from seq %d; public key %s in ConfigMap %s/%s",
        settings.log_file,
        trail.head.next_seq,
        signer.key_id,
        namespace,
        settings.public_key_configmap,
    )
    return RunningAudit(audit, publisher)
