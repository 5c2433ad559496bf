{{/* Names. The full name is also the node cluster's name (config `name`). */}}
{{- define "raftcron.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "raftcron.fullname" -}}
{{- $name := "" -}}
{{- if .Values.fullnameOverride -}}
{{- $name = .Values.fullnameOverride -}}
{{- else if contains (include "raftcron.name" .) .Release.Name -}}
{{- $name = .Release.Name -}}
{{- else -}}
{{- $name = printf "%s-%s" .Release.Name (include "raftcron.name" .) -}}
{{- end -}}
{{- if gt (len $name) 40 -}}
{{- fail (printf "the full name %q is longer than 40 characters (node pods are named <fullname>-node-N); set fullnameOverride" $name) -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{- define "raftcron.operatorName" -}}{{ include "raftcron.fullname" . }}-operator{{- end -}}
{{- define "raftcron.configName" -}}{{ include "raftcron.fullname" . }}-operator-config{{- end -}}

{{- define "raftcron.operatorServiceAccount" -}}
{{- default (include "raftcron.operatorName" .) .Values.operator.serviceAccount.name -}}
{{- end -}}

{{- define "raftcron.nodeServiceAccount" -}}
{{- default (printf "%s-node" (include "raftcron.fullname" .)) .Values.nodes.serviceAccount.name -}}
{{- end -}}

{{- define "raftcron.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "raftcron.name" . }}
app.kubernetes.io/instance: {{ include "raftcron.fullname" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Must match what the operator puts on node pods (operator/src/build.rs). */}}
{{- define "raftcron.nodeSelectorLabels" -}}
app.kubernetes.io/name: raftcron
app.kubernetes.io/instance: {{ include "raftcron.fullname" . }}
app.kubernetes.io/component: node
{{- end -}}

{{- define "raftcron.operatorSelectorLabels" -}}
app.kubernetes.io/name: raftcron
app.kubernetes.io/instance: {{ include "raftcron.fullname" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* repository@digest when a digest is set (the tag is then not used), else repository:tag. */}}
{{- define "raftcron.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{/* TLS on needs a Secret; checked wherever TLS settings are rendered. */}}
{{- define "raftcron.tlsSecret" -}}
{{- if .Values.nodes.tls.enabled -}}
{{- required "nodes.tls.enabled is true but nodes.tls.secretName is empty: name a Secret with tls.crt, tls.key and ca.crt (see docs/kubernetes.md, TLS)" .Values.nodes.tls.secretName -}}
{{- end -}}
{{- end -}}

{{- define "raftcron.operatorTlsSecret" -}}
{{- default (include "raftcron.tlsSecret" .) .Values.nodes.tls.operatorSecretName -}}
{{- end -}}

{{/* Selector for the node metrics in alert expressions. */}}
{{- define "raftcron.nodeMetricSelector" -}}
namespace="{{ .Release.Namespace }}",pod=~"{{ include "raftcron.fullname" . }}-node-[0-9]+"
{{- end -}}

{{/* The sidecar injection webhook: Service, Secret, configuration, cert-manager Certificate. */}}
{{- define "raftcron.webhookService" -}}{{ include "raftcron.fullname" . }}-operator-webhook{{- end -}}
{{- define "raftcron.webhookSecret" -}}{{ include "raftcron.fullname" . }}-operator-webhook-tls{{- end -}}
{{- define "raftcron.webhookConfiguration" -}}{{ include "raftcron.fullname" . }}-sidecar-injector{{- end -}}
