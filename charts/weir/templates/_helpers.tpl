{{/* Chart name, truncated to 63 characters. */}}
{{- define "weir.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name; the release name alone when it already contains the chart name. */}}
{{- define "weir.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of the admin Service. */}}
{{- define "weir.adminName" -}}
{{- printf "%s-admin" (include "weir.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Chart label value. */}}
{{- define "weir.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels. */}}
{{- define "weir.selectorLabels" -}}
app.kubernetes.io/name: {{ include "weir.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Common labels. */}}
{{- define "weir.labels" -}}
helm.sh/chart: {{ include "weir.chart" . }}
{{ include "weir.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: weir
{{- end }}

{{/* Service account name. */}}
{{- define "weir.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "weir.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Container image reference. */}}
{{- define "weir.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Arguments of `weir run` (a YAML list). */}}
{{- define "weir.args" -}}
- run
- --http-addr
- 0.0.0.0:8080
- --https-addr
- 0.0.0.0:8443
- --admin-addr
- 0.0.0.0:9901
- --namespace
- {{ .Release.Namespace | quote }}
{{- with .Values.redisUrl }}
- --redis-url
- {{ . | quote }}
{{- end }}
{{- with .Values.watchNamespaces }}
- --watch-namespaces
- {{ join "," . | quote }}
{{- end }}
{{- with .Values.logFormat }}
- --log-format
- {{ . | quote }}
{{- end }}
{{- with .Values.shutdownDelay }}
- --shutdown-delay
- {{ . | quote }}
{{- end }}
{{- if gt (int .Values.maxConnections) 0 }}
- --max-connections
- {{ int .Values.maxConnections | quote }}
{{- end }}
{{- with .Values.headerReadTimeout }}
- --header-read-timeout
- {{ . | quote }}
{{- end }}
{{- with .Values.idleTimeout }}
- --idle-timeout
- {{ . | quote }}
{{- end }}
{{- with .Values.accessLog }}
- --access-log
- {{ . | quote }}
{{- end }}
{{- with .Values.accessLogFormat }}
- --access-log-format
- {{ . | quote }}
{{- end }}
{{- with .Values.otlpEndpoint }}
- --otlp-endpoint
- {{ . | quote }}
{{- end }}
{{- with .Values.traceSampling }}
- --trace-sampling
- {{ . | quote }}
{{- end }}
{{- if eq (toString .Values.requestMetrics) "false" }}
- --request-metrics
- "false"
{{- end }}
{{- if .Values.metricsPerConsumer }}
- --metrics-per-consumer
- "true"
{{- end }}
{{- with .Values.cacheMemory }}
- --cache-memory
- {{ . | quote }}
{{- end }}
{{- with .Values.defaultCertificate }}
- --default-certificate
- {{ . | quote }}
{{- end }}
- --publish-service
- {{ default (printf "%s/%s" .Release.Namespace (include "weir.fullname" .)) .Values.publishService | quote }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/* Whole seconds (rounded up) of a weir duration string such as 5s, 1m30s or 500ms; "" is 0. */}}
{{- define "weir.durationSeconds" -}}
{{- $ms := 0 }}
{{- range regexFindAll "[0-9]+(ms|s|m|h)" (toString .) -1 }}
{{- if hasSuffix "ms" . }}
{{- $ms = add $ms (trimSuffix "ms" . | atoi) }}
{{- else if hasSuffix "s" . }}
{{- $ms = add $ms (mul 1000 (trimSuffix "s" . | atoi)) }}
{{- else if hasSuffix "m" . }}
{{- $ms = add $ms (mul 60000 (trimSuffix "m" . | atoi)) }}
{{- else }}
{{- $ms = add $ms (mul 3600000 (trimSuffix "h" . | atoi)) }}
{{- end }}
{{- end }}
{{- div (add $ms 999) 1000 }}
{{- end }}

{{/*
terminationGracePeriodSeconds, checked: it must cover the shutdown delay plus the data
plane's drain (30 s, dataplane/src/server.rs DRAIN_TIMEOUT), or the kubelet kills the pod
while it still drains.
*/}}
{{- define "weir.terminationGracePeriodSeconds" -}}
{{- $grace := int .Values.terminationGracePeriodSeconds }}
{{- $need := add (include "weir.durationSeconds" .Values.shutdownDelay | atoi) 30 }}
{{- if le $grace $need }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed shutdownDelay (%s) + the 30s connection drain" $grace (toString .Values.shutdownDelay)) }}
{{- end }}
{{- $grace }}
{{- end }}
