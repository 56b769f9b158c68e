{{/* Labels Helm adds to every object (the kustomize base has none of these). */}}
{{- define "meshmedic.helmLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* Labels of objects that belong to the whole product (Namespace, PrometheusRule). */}}
{{- define "meshmedic.partOfLabels" -}}
app.kubernetes.io/name: meshmedic
app.kubernetes.io/part-of: meshmedic
{{ include "meshmedic.helmLabels" . }}
{{- end }}

{{/* Labels of the agent's objects. */}}
{{- define "meshmedic.labels" -}}
app.kubernetes.io/name: meshmedic
app.kubernetes.io/component: agent
app.kubernetes.io/part-of: meshmedic
{{ include "meshmedic.helmLabels" . }}
{{- end }}

{{/* The DaemonSet's selector (never changes across upgrades). */}}
{{- define "meshmedic.selectorLabels" -}}
app.kubernetes.io/name: meshmedic
app.kubernetes.io/component: agent
{{- end }}

{{- define "meshmedic.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The subject every binding names. */}}
{{- define "meshmedic.subject" -}}
- kind: ServiceAccount
  name: meshmedic-agent
  namespace: {{ .Release.Namespace }}
{{- end }}
