{{- define "inference-router.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "inference-router.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "inference-router.labels" -}}
{{ include "inference-router.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* TLS from PEM contents given to the chart (rendered into a Secret of the release) */}}
{{- define "inference-router.pemGiven" -}}
{{- if or .Values.sslCertPemFile .Values.sslKeyPemFile }}true{{ end -}}
{{- end -}}

{{- define "inference-router.tls" -}}
{{- if or .Values.sslSecret (include "inference-router.pemGiven" .) }}true{{ end -}}
{{- end -}}

{{/* The Secret the router's certificate is mounted from */}}
{{- define "inference-router.tlsSecretName" -}}
{{- .Values.sslSecret | default (printf "%s-tls" (include "inference-router.fullname" .)) -}}
{{- end -}}

{{/* The Lease whose holder writes status: one per release */}}
{{- define "inference-router.autoscalerLease" -}}
{{- printf "%s-autoscaler" (include "inference-router.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "inference-router.statusLease" -}}
{{- printf "%s-status" (include "inference-router.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
