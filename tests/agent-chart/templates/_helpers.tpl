{{- define "agent.prefix" -}}
{{- required "resourceNamePrefix must not be empty" .Values.resourceNamePrefix -}}
{{- end -}}

{{/* Labels on every object: the release's, the user's, and the component's. */}}
{{- define "agent.labels" -}}
app.kubernetes.io/name: astro-remote-execution-agent
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/component: {{ .component }}
component: {{ .component }}
{{- with .root.Values.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "agent.selector" -}}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
agent.example.invalid/deployment: {{ .name }}
{{- end -}}

{{/*
One agent Deployment. Arguments: root, name (object name), component, replicas, image,
env (list), common (bool: add commonEnv), serviceAccountName, sidecar (bool).
*/}}
{{- define "agent.deployment" -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .name }}
  labels:
    {{- include "agent.labels" . | nindent 4 }}
  {{- with .root.Values.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  replicas: {{ .replicas }}
  selector:
    matchLabels:
      {{- include "agent.selector" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "agent.labels" . | nindent 8 }}
        agent.example.invalid/deployment: {{ .name }}
      {{- with .root.Values.annotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ .serviceAccountName }}
      securityContext:
        runAsUser: 50000
        fsGroup: 50000
      containers:
        - name: {{ .component }}
          image: {{ .image }}
          ports:
            - name: health
              containerPort: 39091
          env:
            {{- if .common }}
            - name: AIRFLOW__SECRETS__BACKEND
              value: {{ .root.Values.secretBackend | quote }}
            {{- with .root.Values.commonEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- end }}
            {{- with .env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            - name: ASTRO_AGENT_COMPONENT
              value: {{ .component }}
        {{- if and .sidecar .root.Values.loggingSidecar.enabled }}
        - name: {{ .root.Values.loggingSidecar.name }}
          image: images.example.invalid/vector:0.40.0
          {{- with .root.Values.loggingSidecar.env }}
          env:
            {{- toYaml . | nindent 12 }}
          {{- end }}
        {{- end }}
{{- end -}}

{{- define "agent.serviceAccount" -}}
{{- if .sa.create }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ .name }}
  labels:
    {{- include "agent.labels" . | nindent 4 }}
  {{- with (merge (dict) (.sa.annotations | default dict) (.root.Values.annotations | default dict)) }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end -}}
