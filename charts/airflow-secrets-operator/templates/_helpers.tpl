{{/* Name of the chart, overridable with nameOverride. */}}
{{- define "airflow-secrets-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects, at most 63 characters. */}}
{{- define "airflow-secrets-operator.fullname" -}}
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

{{- define "airflow-secrets-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "airflow-secrets-operator.labels" -}}
helm.sh/chart: {{ include "airflow-secrets-operator.chart" . }}
{{ include "airflow-secrets-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the operator's pods. */}}
{{- define "airflow-secrets-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "airflow-secrets-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "airflow-secrets-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "airflow-secrets-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The watched namespaces (watchNamespaces plus watchNamespace), sorted and comma-separated;
empty: every namespace. */}}
{{- define "airflow-secrets-operator.watchNamespaces" -}}
{{- $names := .Values.watchNamespaces | default list }}
{{- with .Values.watchNamespace }}{{ $names = append $names . }}{{ end }}
{{- $names | uniq | sortAlpha | join "," }}
{{- end }}
