"""The cluster source: custom resources, EndpointSlices and Secrets from the Kubernetes API.

- `api` is the only module that imports the `kubernetes` client (its asyncio half); it
  speaks JSON and turns every client or connection failure into `errors.KubeError`.
- `reflector` keeps a local copy of what one list/watch selects: list, watch from that
  version with bookmarks, resume after a cut, list again after 410 Gone, back off on errors.
- `assembly` turns the copies into routed `Resources` and Service replicas, validating each
  object alone and resolving references leniently; it reports on every custom resource.
- `status` writes those reports to the resources' status; `lease` makes sure only one
  router replica writes.
- `source` runs it all as the `KubernetesSource` the server starts, like the file source.
"""

from router.discovery.kubernetes.settings import KubernetesSettings
from router.discovery.kubernetes.source import KubernetesSource

__all__ = ["KubernetesSettings", "KubernetesSource"]
