"""API extensions installed into one apiserver: CRDs and admission webhooks.

``Extensions(registry)`` adds the apiextensions.k8s.io and admissionregistration.k8s.io
kinds to the registry's index with their strategies, and (unless the app was given its
own admission policy) makes webhooks the registry's admission. ``start()`` loads what is
stored (so a restarted apiserver serves its CRDs before it answers) and follows changes;
``close()`` stops following.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from apiserver.admission import WebhookAdmission, WebhookConfigurations
from apiserver.admission_seam import NoAdmission
from apiserver.custom_resources import CrdController
from apiserver.storage.interface import NotFound

if TYPE_CHECKING:
    from apiserver.registry import Registry


class Extensions:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.crds = CrdController(registry)
        self.webhooks: WebhookConfigurations | None = None
        if isinstance(registry.admission, NoAdmission):
            admission = WebhookAdmission(
                self._namespace_labels, service_address=self._service_address
            )
            registry.admission = admission
            self.webhooks = WebhookConfigurations(registry, admission)

    async def start(self) -> None:
        await self.crds.start()
        if self.webhooks is not None:
            await self.webhooks.start()

    async def close(self) -> None:
        await self.crds.close()
        if self.webhooks is not None:
            await self.webhooks.close()

    async def _namespace_labels(self, namespace: str) -> Mapping[str, str]:
        """For namespaceSelector: the registry's namespace cache, else the store."""
        obj = self.registry.namespaces.get(namespace)
        resource = self.registry.index.lookup("", "v1", "namespaces")
        if obj is None and resource is not None:
            try:
                obj = await self.registry.storage.get(self.registry.key(resource, None, namespace))
            except NotFound:
                return {}
        if obj is None:
            return {}
        labels = (obj.get("metadata") or {}).get("labels")
        return labels if isinstance(labels, dict) else {}

    async def _service_address(self, namespace: str, name: str) -> str | None:
        """For ``clientConfig.service``: the Service's ClusterIP (None if it has none)."""
        resource = self.registry.index.lookup("", "v1", "services")
        if resource is None:
            return None
        try:
            obj = await self.registry.storage.get(self.registry.key(resource, namespace, name))
        except NotFound:
            return None
        address = (obj.get("spec") or {}).get("clusterIP")
        return str(address) if address else None
