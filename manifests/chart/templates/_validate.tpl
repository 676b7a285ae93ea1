{{/*
Combinations a schema cannot check, each refused with what to do instead.
The router refuses the same TLS mistakes at start; here they fail at install time.
*/}}
{{- define "inference-router.validate" -}}
{{- $v := .Values -}}
{{- if not $v.inferenceRouterServiceType -}}
{{- fail "inferenceRouterServiceType is required: how the router is exposed, one of LoadBalancer, NodePort or ClusterIP (e.g. --set inferenceRouterServiceType=LoadBalancer)" -}}
{{- end -}}
{{- if and $v.sslSecret (include "inference-router.pemGiven" .) -}}
{{- fail "sslSecret and sslCertPemFile/sslKeyPemFile are two sources of the certificate: set one of them. Neither wins: the router refuses both at once, so the chart does too" -}}
{{- end -}}
{{- if and (include "inference-router.pemGiven" .) (not (and $v.sslCertPemFile $v.sslKeyPemFile)) -}}
{{- fail "sslCertPemFile and sslKeyPemFile go together: set both (--set-file sslCertPemFile=./cert.pem --set-file sslKeyPemFile=./key.pem)" -}}
{{- end -}}
{{- if and $v.sslCertPemFile (not (contains "-----BEGIN" $v.sslCertPemFile)) -}}
{{- fail "sslCertPemFile must hold the certificate's PEM text, not a path: use --set-file sslCertPemFile=./cert.pem" -}}
{{- end -}}
{{- if and $v.sslKeyPemFile (not (contains "-----BEGIN" $v.sslKeyPemFile)) -}}
{{- fail "sslKeyPemFile must hold the key's PEM text, not a path: use --set-file sslKeyPemFile=./key.pem" -}}
{{- end -}}
{{- if and (not (include "inference-router.tls" .)) (not $v.allowInsecureConnections) -}}
{{- fail "TLS is not configured and plain HTTP is not allowed: set sslSecret (a Secret with cert.pem and key.pem) or sslCertPemFile and sslKeyPemFile, or allow plain HTTP with --set allowInsecureConnections=true" -}}
{{- end -}}
{{- if and (include "inference-router.tls" .) (not $v.sslCname) -}}
{{- fail "sslCname is required with TLS: the name clients use, which the certificate must cover (e.g. --set sslCname=scoring.example.com)" -}}
{{- end -}}
{{- if and $v.internalLoadBalancerProvider (ne $v.inferenceRouterServiceType "LoadBalancer") -}}
{{- fail (printf "internalLoadBalancerProvider=%s needs inferenceRouterServiceType=LoadBalancer (an internal load balancer is a LoadBalancer Service), not %s" $v.internalLoadBalancerProvider $v.inferenceRouterServiceType) -}}
{{- end -}}
{{- if and $v.watchNamespace $v.secretNamespaces -}}
{{- fail "secretNamespaces narrows the Secrets of a router watching every namespace; with watchNamespace it reads Secrets in that namespace only: unset one of them" -}}
{{- end -}}
{{- if and (eq $v.inferenceRouterServiceType "ClusterIP") (or $v.nodePorts.http $v.nodePorts.https) -}}
{{- fail "nodePorts are for NodePort and LoadBalancer Services, not inferenceRouterServiceType=ClusterIP" -}}
{{- end -}}
{{- end -}}
