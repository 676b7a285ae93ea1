"""W3C Trace Context: the router is a span of every request; OpenTelemetry export is optional.

Every request forwarded carries a `traceparent` (W3C Trace Context, version 00) whose
parent id is the router's own span, new for each request:
- the caller sent a valid one: same trace id and flags, the router's span id
  (`tracestate` passes on unchanged, as any other header);
- none, or an invalid one: a new trace id and span id; sampled only when the router
  exports its spans (the flag says the caller "may have recorded" the trace).
Ids must be unique, not secret: a new trace id is a random part drawn once per process
and 64 bits from `random.getrandbits` (as OpenTelemetry's own generator), a span id a
random per-process part and 48 random bits the caller gives: the request's own random id's
(router.front.scoring draws them in batches), so a span id costs no draw of its own and,
as the request ids, tells nothing of the requests before it.

Export (`SpanExport`) is off by default and needs the `otel` extra
(`pip install -e '.[otel]'` in the checkout); the OpenTelemetry SDK is imported only here,
only when export is on. Spans are built from finished requests off the hot path, with
the exact ids sent upstream, and exported by the SDK's batch processor in its thread;
OTLP is configured by the standard `OTEL_EXPORTER_OTLP_*` and `OTEL_SERVICE_NAME`
variables.
"""

from __future__ import annotations

import random
import re
import secrets
from collections.abc import Iterable
from typing import Any

from router.errors import ConfigError

EXPORTERS = ("off", "otlp", "console")
# version, trace id, parent id, flags; lower-case hex only (W3C Trace Context §3.2)
_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE, _ZERO_SPAN = b"0" * 32, b"0" * 16
# new trace ids: 16 hex digits drawn once per process, then 16 drawn per trace (samplers such as
# OpenTelemetry's TraceIdRatioBased decide on the low 64 bits); span ids: 4 random (never zero), then 12
# random ones per request
_TRACE_PREFIX = b"%016x" % (secrets.randbits(64) | 1)
_bits = random.getrandbits
_SPAN_PREFIX = b"%04x" % (secrets.randbelow(0xFFFF) + 1)


new_trace_flags = b"00"  # b"01" while spans are exported: see `SpanExport`


def traceparent(incoming: bytes, span: bytes) -> bytes:
    """The `traceparent` the router sends upstream for a new request: the caller's trace (`incoming`, if
    valid) with the router's span, else a new trace. `span`: 12 random hex digits, the span's own."""
    if incoming:
        incoming = incoming.strip()
        m = _TRACEPARENT.match(incoming)
        # version 00 is exactly 55 characters; a later version may append fields after a dash; ff is invalid
        if m is not None and m[1] != b"ff" and (len(incoming) == 55 if m[1] == b"00" else
                                                len(incoming) == 55 or incoming[55:56] == b"-"):
            trace_id = m[2]
            if trace_id != _ZERO_TRACE and m[3] != _ZERO_SPAN:
                return b"00-%s-%s%s-%s" % (trace_id, _SPAN_PREFIX, span, m[4])
    return b"00-%s%016x-%s%s-%s" % (_TRACE_PREFIX, _bits(64), _SPAN_PREFIX, span, new_trace_flags)


def parent_span_id(incoming: bytes, outgoing: bytes) -> bytes:
    """The caller's span id when the router's span continues the caller's trace, else b""."""
    incoming = incoming.strip()
    return incoming[36:52] if incoming[3:35] == outgoing[3:35] and len(incoming) >= 55 else b""


class SpanExport:
    """Finished requests as OpenTelemetry server spans, handed to the SDK's batch processor."""

    def __init__(self, exporter: str) -> None:
        global new_trace_flags
        if exporter not in EXPORTERS[1:]:
            raise ConfigError([f"trace_export: must be one of {', '.join(EXPORTERS)}, got {exporter!r}"])
        try:
            from opentelemetry import trace
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider, sampling
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
            from opentelemetry.sdk.trace.id_generator import IdGenerator
        except ImportError:
            raise ConfigError(["trace_export: the OpenTelemetry SDK is not installed: "
                               "pip install -e '.[otel]' in the checkout"]) from None
        if exporter == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError:
                raise ConfigError(["trace_export: the OTLP exporter is not installed: "
                                   "pip install -e '.[otel]' in the checkout"]) from None
            span_exporter: SpanExporter = OTLPSpanExporter()
        else:
            span_exporter = ConsoleSpanExporter()

        class _Preset(IdGenerator):
            """Hands out the ids the router already sent upstream, so the exported span matches them."""

            trace_id = span_id = 0

            def generate_trace_id(self) -> int:
                return self.trace_id

            def generate_span_id(self) -> int:
                return self.span_id

        self._trace = trace
        self._ids = _Preset()
        # the router decided already (the flags it sent upstream): record every span it is handed
        self._provider = TracerProvider(resource=Resource.create({"service.name": "inference-router"}),
                                        sampler=sampling.ALWAYS_ON, id_generator=self._ids)
        self._processor = BatchSpanProcessor(span_exporter)
        self._provider.add_span_processor(self._processor)
        self._tracer = self._provider.get_tracer("inference-router")
        new_trace_flags = b"01"

    def export(self, spans: Iterable[tuple[bytes, bytes, int, int, str, dict[str, Any], bool]]) -> None:
        """(outgoing traceparent, incoming traceparent, start ns, end ns, name, attributes, error) each."""
        trace, ids = self._trace, self._ids
        server = trace.SpanKind.SERVER
        for outgoing, incoming, start, end, name, attributes, error in spans:
            if outgoing[53:55] == b"00":
                continue  # not sampled
            ids.trace_id, ids.span_id = int(outgoing[3:35], 16), int(outgoing[36:52], 16)
            context = None
            parent = parent_span_id(incoming, outgoing)
            if parent:
                remote = trace.SpanContext(ids.trace_id, int(parent, 16), is_remote=True,
                                           trace_flags=trace.TraceFlags(int(outgoing[53:55], 16)))
                context = trace.set_span_in_context(trace.NonRecordingSpan(remote))
            span = self._tracer.start_span(name, context, server, attributes, start_time=start)
            if error:
                span.set_status(trace.Status(trace.StatusCode.ERROR))
            span.end(end_time=end)

    def shutdown(self) -> None:
        global new_trace_flags
        new_trace_flags = b"00"
        self._provider.shutdown()  # exports what is left
