{{- define "conduit.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "conduit.fullname" -}}
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

{{- define "conduit.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "conduit.labels" -}}
helm.sh/chart: {{ include "conduit.chart" . }}
{{ include "conduit.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "conduit.selectorLabels" -}}
app.kubernetes.io/name: {{ include "conduit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "conduit.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "conduit.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "conduit.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "conduit.secretName" -}}
{{- default (include "conduit.fullname" .) .Values.secret.existingSecret }}
{{- end }}

{{/* Settings every conduit container gets: the prod profile, credentials as files. */}}
{{- define "conduit.env" -}}
- name: APP_ENV
  value: prod
- name: CONDUIT__AUTH__JWT_SECRET_FILE
  value: /run/secrets/conduit/jwt-secret
- name: CONDUIT__DATABASE__URL_FILE
  value: /run/secrets/conduit/database-url
{{- end }}

{{- define "conduit.secretVolume" -}}
- name: credentials
  secret:
    secretName: {{ include "conduit.secretName" . }}
    defaultMode: 0440
{{- end }}

{{- define "conduit.podSecurity" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}
