"""Autoscaling of model deployments by utilization (`scaleSettings.type: target_utilization`).

- `decision` is the pure rule: from recent demand samples and a deployment's settings, its size.
- `demand` is what the routers hold per deployment (in flight plus queued), read from the routing
  table without touching the request path, and summed across routers.
- `controller` samples each deployment every `pollingInterval` and, on the router that leads,
  has its `ScaleTarget` read the current size, decide and write. The cluster's target is
  `discovery.kubernetes.scaling`; local mode has none and scales nothing.
"""

from router.autoscale.controller import Autoscaler, ScaleTarget
from router.autoscale.decision import Decision, Outcome, Policy, Sample, Windows, decide
from router.autoscale.demand import CombinedDemand, Demand, DemandSource, TableDemand, combine

__all__ = ["Autoscaler", "CombinedDemand", "Decision", "Demand", "DemandSource", "Outcome", "Policy", "Sample",
           "ScaleTarget", "TableDemand", "Windows", "combine", "decide"]
